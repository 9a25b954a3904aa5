"""For tests: a shipped recipe's Ascend graph must pass ATC's gate (om_pipeline.atc_ops) with the
recipe's own atc flags at every batch size it lists, under every CANN generation's op table."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..atc_ops import CANN_GENERATIONS, atc_problems, parse_problems
from ..context import Options, Run
from ..recipe import find_recipe
from ..stages.atc import planned_flags

if TYPE_CHECKING:
    import onnx


def recipe_atc_flags(name: str, bs: int) -> dict[str, str]:
    """The recipe's atc flags at this batch size (paths under ./work: the gate checks names,
    shapes and ops, not paths)."""
    return planned_flags(Run(find_recipe(name), Options(bs=bs), "ais_bench", bs, Path("work")))


def gate_failures(model: "onnx.ModelProto", name: str, with_flags: bool = True) -> list[str]:
    """"bs N, CANN G: CODE message" for every refusal (empty: atc would take the graph)."""
    failures = []
    for cann in CANN_GENERATIONS:
        if not with_flags:  # a part of the network (its Ascend-only layer), not the recipe's whole graph
            failures += [f"CANN {cann}: {p.code} {p.message}" for p in parse_problems(model, cann)]
            continue
        for bs in find_recipe(name).recipe.batch_sizes:
            failures += [f"bs {bs}, CANN {cann}: {p.code} {p.message}"
                         for p in atc_problems(model, recipe_atc_flags(name, bs), cann)]
    return failures
