#!/usr/bin/env python3
"""Regenerate tests/fixtures/upstream-pins/<model>.json and tests/fixtures/exported-graphs/<model>.json
from an upstream clone or mirror (see om_pipeline/testing/upstream_pins.py for what they hold).

    .venv/bin/python scripts/upstream_pins.py superpoint --source /path/to/pytorch-superpoint.git
    .venv/bin/python scripts/upstream_pins.py centernet --source ... --only pins

The source defaults to OMPIPE_UPSTREAM_<MODEL>. Exports run on CPU with random weights
(CenterNet DLA-34 or PointRend R101 at full size take a minute or two each).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from om_pipeline.testing.upstream import patched_upstream, upstream_source
from om_pipeline.testing.upstream_pins import MODELS, graphs_fixture, pins_fixture

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def write(path: Path, fixture: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fixture, indent=1, sort_keys=False) + "\n")
    print(f"wrote {path}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=MODELS)
    parser.add_argument("--source", help="upstream clone or mirror (default: OMPIPE_UPSTREAM_<MODEL>)")
    parser.add_argument("--only", choices=("pins", "graphs"))
    args = parser.parse_args(argv)
    source = args.source or upstream_source(args.model)
    if not source:
        parser.error(f"give --source or set OMPIPE_UPSTREAM_{args.model.upper()}")
    if args.only != "graphs":
        write(FIXTURES / "upstream-pins" / f"{args.model}.json", pins_fixture(args.model, source))
    if args.only != "pins":
        with tempfile.TemporaryDirectory(prefix=f"ompipe-{args.model}-") as tmp:
            checkout = patched_upstream(args.model, source, Path(tmp) / "upstream")
            write(FIXTURES / "exported-graphs" / f"{args.model}.json", graphs_fixture(args.model, checkout))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
