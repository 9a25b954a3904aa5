"""Stage kinds, one module each, in the order the guides run them."""
from __future__ import annotations

from .atc import AtcStage
from .base import Stage, StageResult
from .clone import CloneStage
from .compare import CompareStage
from .dataset import DatasetStage
from .eval import EvalStage
from .export import ExportStage
from .infer import InferStage
from .patch import PatchStage
from .perf import PerfStage
from .preprocess import PreprocessStage
from .simplify import SimplifyStage
from .weights import WeightsStage

KINDS: dict[str, type[Stage]] = {
    stage.kind: stage
    for stage in (CloneStage, PatchStage, WeightsStage, DatasetStage, PreprocessStage, ExportStage,
                  SimplifyStage, AtcStage, CompareStage, InferStage, EvalStage, PerfStage)
}

__all__ = ["KINDS", "Stage", "StageResult"]
