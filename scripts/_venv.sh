# Shared by scripts/demo and scripts/test: create .venv when missing and install ompipe into it.
# Offline / air-gapped: set PIP_INDEX_URL or PIP_FIND_LINKS to your local mirror; pip reads them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OMPIPE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.ompipe-installed${1:+-$1}"
# Reinstall only when the dependency list changed: a second run starts at once.
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "installing ompipe and its dependencies into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT${1:+[$1]}"
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
