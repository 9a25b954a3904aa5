"""Upstream CenterNet's own ctdet code, imported from a patched checkout, for parity tests and
benchmarks (never for the pipeline itself).

Upstream's detector modules import packages that this project does not install and that ctdet
inference never uses: `progress` (a progress bar, detectors/*.py), `torchvision`
(models/model.py, for the other architectures) and `matplotlib.pyplot` (utils/debugger.py, for
--debug display). While the context is open, empty stand-ins take their place in sys.modules
if they are absent; they are removed afterwards.
"""
from __future__ import annotations

import importlib
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .centernet import DCN_MODULE, upstream_modules

STANDINS = ("progress", "progress.bar", "torchvision", "torchvision.models", "matplotlib", "matplotlib.pyplot")


@contextmanager
def upstream_ctdet(checkout: Path) -> Iterator[types.SimpleNamespace]:
    """Yields upstream's modules: decode (models.decode), post_process (utils.post_process),
    image (utils.image), ctdet (detectors.ctdet), base (detectors.base_detector), coco
    (datasets.dataset.coco), dcn (the patched DCNv2 module), opts and model (models.model)."""
    added = [name for name in STANDINS if name not in sys.modules]
    for name in added:
        sys.modules[name] = types.ModuleType(name)
    if "progress.bar" in added:
        sys.modules["progress.bar"].Bar = object
    for package, module in (("torchvision", "models"), ("matplotlib", "pyplot")):
        if f"{package}.{module}" in added:
            setattr(sys.modules[package], module, sys.modules[f"{package}.{module}"])
    try:
        with upstream_modules(checkout):
            yield types.SimpleNamespace(
                decode=importlib.import_module("models.decode"),
                post_process=importlib.import_module("utils.post_process"),
                image=importlib.import_module("utils.image"),
                ctdet=importlib.import_module("detectors.ctdet"),
                base=importlib.import_module("detectors.base_detector"),
                coco=importlib.import_module("datasets.dataset.coco"),
                dcn=importlib.import_module(DCN_MODULE),
                opts=importlib.import_module("opts"),
                model=importlib.import_module("models.model"),
            )
    finally:
        for name in added:
            sys.modules.pop(name, None)


def ctdet_detector_stub(num_classes: int = 80, max_per_image: int = 100) -> types.SimpleNamespace:
    """What `CtdetDetector.post_process` and `merge_outputs` read from `self`, at scale 1
    without --nms (they are called unbound: building a detector builds and loads a model)."""
    return types.SimpleNamespace(opt=types.SimpleNamespace(num_classes=num_classes, nms=False), num_classes=num_classes,
                                 scales=[1], max_per_image=max_per_image)


def upstream_postprocess(upstream: types.SimpleNamespace, hm, wh, reg, meta: dict, K: int = 100) -> dict:
    """One image's network outputs (numpy, with batch axis 1) through the Ascend guide's
    CenterNet_postprocess_s1 path: sigmoid, ctdet_decode, post_process, merge_outputs ->
    {class 1..80: float32 (n, 5) x1, y1, x2, y2, score}."""
    import torch

    detector = ctdet_detector_stub()
    dets = upstream.decode.ctdet_decode(torch.tensor(hm).sigmoid_(), torch.tensor(wh), torch.tensor(reg), K=K)
    per_class = upstream.ctdet.CtdetDetector.post_process(detector, dets, meta, 1)
    return upstream.ctdet.CtdetDetector.merge_outputs(detector, [per_class])
