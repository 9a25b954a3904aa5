# Shared by scripts/demo and scripts/test (sourced): `ensure_venv [EXTRAS]` creates .venv when
# missing, installs ompipe into it (again only when pyproject.toml changed), and puts it on PATH.
# Offline / air-gapped: set PIP_INDEX_URL or PIP_FIND_LINKS to your local mirror; pip reads them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OMPIPE_VENV:-$ROOT/.venv}"

ensure_venv() {
  local extras="${1:-}"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    "${PYTHON:-python3}" -m venv "$VENV"
  fi
  local stamp="$VENV/.ompipe-installed${extras:+-$extras}"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "installing ompipe${extras:+[$extras]} and its dependencies into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT${extras:+[$extras]}"
    touch "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}
