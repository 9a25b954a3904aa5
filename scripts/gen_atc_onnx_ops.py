#!/usr/bin/env python3
"""Regenerate src/om_pipeline/data/atc_onnx_ops.json: the ONNX (domain, op type, opset) keys
ATC's ONNX parser has a plugin for, per CANN generation, from the public plugin sources.

ATC looks every node up as `<domain>::<the model's opset for that domain>::<op_type>`
(hicann/ge parser/parser/onnx/onnx_parser.cc, ConstructOriType / AdapterOpType); a plugin
registers the keys it parses with `REGISTER_CUSTOM_OP("<AscendIR>")...OriginOpType({...})` or,
for the simple element-wise ops, `REGISTER_CUSTOM_ONNX_OP(<key>, <AscendIR>, <fn>)`. This script
reads those registrations from bare git mirrors (no work tree needed) and writes, per table,
`{domain: {op_type: {"opsets": "8-18", "ir": "<Ascend IR type>"}}}` with the repository,
commit and paths it read.

Tables:
  cann8  hicann/ops-nn + ops-cv + ops-math (2026, the open-source CANN 8.x operator packages),
         `*_onnx_plugin.cpp` outside experimental/
  cann5  Ascend canndev history as carried by github dengguojie/vue-element-admin (2022,
         CANN 5.x era), ops/built-in/framework/onnx_plugin/*.cc
  msit   msit's analyze op map, map_conf/onnx.yaml (keys `ai.onnx::<opset>::<Op>: <AscendIR>`):
         the independent second source; kept for the cross-check printed at the end

Usage (mirrors as the `fetch` tool or `git clone --mirror` leave them):
    python scripts/gen_atc_onnx_ops.py --ops-nn DIR --ops-cv DIR --ops-math DIR \\
        --canndev DIR --msit DIR [--out src/om_pipeline/data/atc_onnx_ops.json]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from om_pipeline.atc_ops import compact  # the table's own "8-10,12" form

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/om_pipeline/data/atc_onnx_ops.json"
CANNDEV_COMMIT = "a2f1d9ae6d7224eeeb59eaebbdd94e4240bb33bd"  # 2022-06-21, ascend-strictness.md's OPS-2022
CANNDEV_PLUGINS = "ops/built-in/framework/onnx_plugin/"
MSIT_MAP = "msit/components/analyze/model_evaluation/data/map_conf/onnx.yaml"

KEY = r"([A-Za-z][A-Za-z0-9_.]*)::(\d+)::([A-Za-z][A-Za-z0-9_]*)"
REGISTER_OP = re.compile(r"REGISTER_CUSTOM_OP\(\s*\"([A-Za-z0-9_]+)\"\s*\)(.*?);", re.S)
REGISTER_MACRO = re.compile(r"REGISTER_CUSTOM_ONNX_OP\(\s*" + KEY + r"\s*,\s*([A-Za-z0-9_]+)\s*,")
COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=True, capture_output=True,
                          text=True, errors="replace").stdout


def resolve_commit(repo: Path, commit: str = "HEAD") -> str:
    return git(repo, "rev-parse", commit).strip()


def plugin_files(repo: Path, commit: str, wanted) -> list[str]:
    return sorted(p for p in git(repo, "ls-tree", "-r", "--name-only", commit).splitlines() if wanted(p))


def registrations(source: str) -> list[tuple[str, str, int, str]]:
    """(domain, op_type, opset, Ascend IR type) of every key one plugin file registers."""
    source = COMMENTS.sub("", source)
    found = []
    for ir_type, body in REGISTER_OP.findall(source):
        for domain, opset, op_type in re.findall(KEY, body):
            found.append((domain, op_type, int(opset), ir_type))
    for domain, opset, op_type, ir_type in REGISTER_MACRO.findall(source):
        found.append((domain, op_type, int(opset), ir_type))
    return found


def table_from_plugins(sources: list[tuple[str, Path, str, list[str]]]) -> tuple[dict, list[dict]]:
    opsets: dict = defaultdict(lambda: defaultdict(set))
    ir: dict = {}
    provenance = []
    for name, repo, commit, paths in sources:
        for path in paths:
            for domain, op_type, opset, ir_type in registrations(git(repo, "show", f"{commit}:{path}")):
                opsets[domain][op_type].add(opset)
                ir.setdefault((domain, op_type), ir_type)
        provenance.append({"repo": name, "commit": commit, "date": git(repo, "log", "-1", "--format=%cs", commit).strip(),
                           "paths": paths})
    return finish(opsets, ir), provenance


def table_from_msit(repo: Path, commit: str) -> tuple[dict, list[dict]]:
    opsets: dict = defaultdict(lambda: defaultdict(set))
    ir: dict = {}
    for line in git(repo, "show", f"{commit}:{MSIT_MAP}").splitlines():
        match = re.match(r"^" + KEY + r"\s*:\s*(\S+)", line.strip())
        if match:
            domain, opset, op_type, ir_type = match.groups()
            opsets[domain][op_type].add(int(opset))
            ir.setdefault((domain, op_type), ir_type)
    date = git(repo, "log", "-1", "--format=%cs", commit, "--", MSIT_MAP).strip()
    return finish(opsets, ir), [{"repo": "xiaobingling93-pixel/Ascend-msit", "commit": commit, "date": date, "paths": [MSIT_MAP]}]


def finish(opsets: dict, ir: dict) -> dict:
    return {domain: {op: {"opsets": compact(versions), "ir": ir[(domain, op)]} for op, versions in sorted(ops.items())}
            for domain, ops in sorted(opsets.items())}


def differences(first: dict, second: dict, domain: str = "ai.onnx") -> list[str]:
    a, b = first.get(domain, {}), second.get(domain, {})
    lines = [f"{op}: cann8 {a[op]['opsets'] if op in a else '-'} / msit {b[op]['opsets'] if op in b else '-'}"
             for op in sorted(set(a) | set(b)) if (a.get(op) or {}).get("opsets") != (b.get(op) or {}).get("opsets")]
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("ops-nn", "ops-cv", "ops-math", "canndev", "msit"):
        parser.add_argument(f"--{name}", type=Path, required=True, help=f"bare git mirror of {name}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    cann8_sources = []
    for name, repo in (("hicann/ops-nn", args.ops_nn), ("hicann/ops-cv", args.ops_cv), ("hicann/ops-math", args.ops_math)):
        commit = resolve_commit(repo)
        paths = plugin_files(repo, commit, lambda p: p.endswith("_onnx_plugin.cpp") and "/framework/" in p
                             and not p.startswith("experimental/"))
        cann8_sources.append((name, repo, commit, paths))
    cann8, cann8_provenance = table_from_plugins(cann8_sources)
    canndev = resolve_commit(args.canndev, CANNDEV_COMMIT)
    canndev_paths = plugin_files(args.canndev, canndev, lambda p: p.startswith(CANNDEV_PLUGINS) and p.endswith(".cc"))
    cann5, cann5_provenance = table_from_plugins([("dengguojie/vue-element-admin (Ascend canndev history)", args.canndev,
                                                  canndev, canndev_paths)])
    msit, msit_provenance = table_from_msit(args.msit, resolve_commit(args.msit))

    data = {
        "about": "ONNX keys (domain::opset::op_type) ATC's ONNX parser has a plugin for, per CANN generation. "
                 "Generated by scripts/gen_atc_onnx_ops.py; do not edit by hand.",
        "bypass": ["Constant", "FileConstant", "Input"],  # GE onnx_parser.cc kOnnxOpMap: parsed without a plugin
        "tables": {
            "cann8": {"describes": "CANN 8.x: the 2026 open-source operator packages", "sources": cann8_provenance, "ops": cann8},
            "cann5": {"describes": "CANN 5.x/6.0 era (2022 canndev plugins)", "sources": cann5_provenance, "ops": cann5},
            "msit": {"describes": "msit analyze's ONNX op map (second source, for the cross-check)", "sources": msit_provenance,
                     "ops": msit},
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    for name, table in data["tables"].items():
        counts = ", ".join(f"{domain} {len(ops)}" for domain, ops in table["ops"].items())
        print(f"{name}: {counts}")
    print("cann8 vs msit (ai.onnx) differences:")
    for line in differences(cann8, msit):
        print(f"  {line}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
