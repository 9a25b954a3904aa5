"""msame: the binary some guides (GFocalV2) run the .om with, built from Ascend/tools.
It feeds one input file per execution, so it runs bs-1 models only; its timestamped result
directory is found from its output and its `<name>_output_<i>` files renamed to the common
layout. msame exits 0 after some argument errors: `[ERROR]` lines fail it too (ascend-tools.md §3)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from ..errors import StageFailed, UserError
from ..samples import output_path
from ..tools import msame
from ..tools.execute import which
from .base import Session, rendered
from .om import OmRuntime


class Msame(OmRuntime):
    name: ClassVar[str] = "msame"
    tools: ClassVar[tuple[str, ...]] = ("msame",)
    multi_device: ClassVar[bool] = False

    def check(self) -> None:
        if self.run.bs != 1:
            raise UserError(f"msame feeds one input file per execution, so it runs bs 1 models only (asked: bs {self.run.bs})",
                            hint="use --runtime ais_bench for other batch sizes")

    def argv(self, args: list[str], variables: dict) -> list[str]:
        return [program(), *rendered(args, variables)]

    def collect(self, outcome, raw: Path, out: Path, log: Path, argv: list[str]) -> dict:
        result = msame.parse_output(outcome.output, outcome.returncode)
        if not result.ok:
            raise StageFailed(f"msame failed (exit {outcome.returncode})", details=result.errors or outcome.output.splitlines()[-10:],
                              hint=f"full log: {log}")
        result_dir = msame.find_result_dir(raw, result)
        result_dir.rename(out)
        for path in out.iterdir():  # <name>_output_<i>.<fmt> -> <name>_<i>.<fmt>, the layout eval reads
            stem, _, index = path.stem.rpartition("_output_")
            if stem and index.isdigit():
                path.rename(output_path(out, stem, int(index), path.suffix[1:]))
        return {"average_ms": result.average_ms, "average_without_first_ms": result.average_without_first_ms}

    def stats(self, outcome, log: Path) -> dict:
        """fps = 1000 * bs / the average time without the first (warm-up) execution when msame
        prints it, else the plain average; per device, never multiplied by chips per card."""
        result = msame.parse_output(outcome.output, outcome.returncode)
        average = result.average_without_first_ms or result.average_ms
        if not result.ok or not average:
            raise StageFailed(f"msame perf run failed (exit {outcome.returncode})",
                              details=result.errors or outcome.output.splitlines()[-10:], hint=f"full log: {log}")
        bs = self.run.bs
        return {"fps": 1000 * bs / average, "batchsize": bs, "mean_ms": average,
                "average_ms": result.average_ms, "average_without_first_ms": result.average_without_first_ms}

    def session(self) -> Session:
        raise UserError("msame has no in-memory API: --stream runs the .om through ais_bench", hint="use --runtime ais_bench")

    @staticmethod
    def version() -> str:
        found = which(program())
        return str(Path(found).resolve()) if found else "absent"


def program() -> str:
    """msame is a binary the user builds; OMPIPE_MSAME names it when it is not on PATH."""
    return os.environ.get("OMPIPE_MSAME", "msame")


RUNTIME = Msame
