#!/usr/bin/env python3
"""Record the real ais_bench parser's answers to the parity corpus (om_pipeline.testing.
ais_bench_parity.CORPUS) into tests/fixtures/ais_bench/answers.json, which
tests/testing/test_fake_ais_bench_parity.py checks the fake against when no checkout is set.

    .venv/bin/python scripts/record_ais_bench_answers.py CHECKOUT

CHECKOUT: a clone of github.com/Yanguan619/aclruntime (or gitee Ascend/tools) at 8da7f645, the
last argparse generation, or its ais-bench_workload/tool/ais_bench directory. The script refuses
another commit when CHECKOUT is a git work tree. It also prints how the fake compares.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from om_pipeline.testing import ais_bench_parity as parity
from om_pipeline.tools.git import head_commit

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "ais_bench" / "answers.json"


def one_case_a_line(record: dict) -> str:
    """JSON with each case's answer on its own line, so a re-recording diffs case by case."""
    cases = ",\n".join(f"  {json.dumps(name)}: {json.dumps(answer, ensure_ascii=False)}"
                        for name, answer in record["answers"].items())
    head = {key: value for key, value in record.items() if key != "answers"}
    return f'{json.dumps(head, indent=1)[:-2]},\n "answers": {{\n{cases}\n }}\n}}\n'


def main() -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("checkout", type=Path)
    options.add_argument("--output", type=Path, default=FIXTURE)
    args = options.parse_args()
    tool_dir = parity.find_tool_dir(args.checkout)
    commit = head_commit(tool_dir)
    if commit is not None and commit != parity.UPSTREAM_COMMIT:
        sys.exit(f"{args.checkout} is at {commit}, not {parity.UPSTREAM_COMMIT}")
    onnx_bytes = parity.tiny_onnx_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        real = parity.run_upstream(tool_dir, parity.build_cases(parity.CORPUS, Path(tmp) / "real", onnx_bytes))
        fake = parity.run_fake(parity.build_cases(parity.CORPUS, Path(tmp) / "fake", onnx_bytes))
    record = {
        "source": {"repo": parity.UPSTREAM_REPO, "commit": parity.UPSTREAM_COMMIT, "path": parity.TOOL_SUBDIR},
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",  # argparse's wording depends on it
        "answers": {case.name: {**vars(answer), "errors": list(answer.errors)}
                    for case, answer in zip(parity.CORPUS, real)},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(one_case_a_line(record), encoding="utf-8")
    accepted = sum(a.accepted for a in real)
    differing = [case.name for case, r, f in zip(parity.CORPUS, real, fake) if r != f]
    print(f"{len(real)} cases: {accepted} accepted, {len(real) - accepted} refused by the real parser; "
          f"the fake differs on {len(differing)}{': ' + ', '.join(differing) if differing else ''}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
