"""The `ompipe` command line: Typer, thin. Each command maps its arguments to one call in
`commands`. Exit codes: 0 success, 1 user error or failed stage, 2 usage, 3 internal error,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP)."""
from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import commands, interrupts, lock
from .context import Options
from .errors import UserError, disk_full_error

app = typer.Typer(
    name="ompipe",
    help="Take PyTorch vision models to Ascend .om models with per-model YAML recipes, and prove they still work.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets for offline runs and demos.", no_args_is_help=True)
app.add_typer(data_app, name="data")

Model = Annotated[str, typer.Argument(help="recipe name (see `ompipe list`) or path to a recipe .yaml")]
RecipeDirs = Annotated[Optional[list[Path]], typer.Option("--recipes", help="extra recipe directory (repeatable; also OMPIPE_RECIPES)")]
Bs = Annotated[Optional[int], typer.Option("--bs", help="batch size (default: the recipe's first)")]
RuntimeOption = Annotated[Optional[str], typer.Option("--runtime", help="what runs the model: onnxruntime | ais_bench | msame (default: the recipe's .om tool when CANN or --toolchain fake is present, else onnxruntime)")]
# The old spellings of --runtime, kept working, out of --help.
Backend = Annotated[Optional[str], typer.Option(hidden=True, help="old spelling: --backend onnxruntime = --runtime onnxruntime; ais_bench = the recipe's .om tool")]
InferTool = Annotated[Optional[str], typer.Option("--infer-tool", hidden=True, help="old spelling of --runtime ais_bench | msame")]
ExportPathOption = Annotated[Optional[str], typer.Option("--export-path", help="which of the recipe's export paths runs (default: the recipe's)")]
Toolchain = Annotated[str, typer.Option(envvar="OMPIPE_TOOLCHAIN", help="real | fake (fake atc/ais_bench/npu-smi for CI)")]
Soc = Annotated[str, typer.Option("--soc-version", help="e.g. Ascend310P3; auto reads npu-smi info")]
Source = Annotated[Optional[Path], typer.Option(help="local clone / mirror of the upstream repository (air-gapped)")]
Weights = Annotated[Optional[str], typer.Option(help="checkpoint path, or 'random' for a smoke run")]
Data = Annotated[Optional[Path], typer.Option(help="dataset root")]
Limit = Annotated[Optional[int], typer.Option(help="use only the first N samples (a stable, named subset)")]
Workdir = Annotated[Path, typer.Option(help="work directory")]
From = Annotated[Optional[str], typer.Option("--from", help="start at this stage (earlier ones must have run)")]
To = Annotated[Optional[str], typer.Option("--to", help="stop after this stage")]
Force = Annotated[bool, typer.Option("--force", help="rerun the selected stages even when unchanged")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="execute nothing; print each stage RUN/CACHED, why, and its argv")]
Check = Annotated[bool, typer.Option("--check", help="as --dry-run, and exit 1 when anything would run")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="only errors and the final results")]
Seed = Annotated[int, typer.Option(help="seed for --weights random")]
Stream = Annotated[bool, typer.Option("--stream", help="preprocess -> model -> metric in memory: no .bin files")]
ShardOption = Annotated[Optional[str], typer.Option("--shard", help="run one shard of the samples: I/N (0-based), auto or auto/N (reads JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID/_COUNT); then ompipe merge")]
DevicesOption = Annotated[Optional[str], typer.Option("--devices", help="one shard per NPU of this host, concurrently, then merged: e.g. 0,1,2,3")]
ExecutorOption = Annotated[Optional[str], typer.Option("--executor", help="ray: the shards as Ray tasks ({'NPU': 1} each, or CPUs for onnxruntime), then merged (pip install 'om-pipeline[ray]')")]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", help="the Ray cluster to join (default: RAY_ADDRESS, else a local one)")]
ShardsOption = Annotated[Optional[int], typer.Option("--shards", help="--executor ray: number of shards (default: the cluster's NPUs, or CPUs for onnxruntime)")]
Cann = Annotated[Optional[str], typer.Option("--cann", help="5 | 8: whose ATC op table the atc preflight and the fake atc use (default: the installed CANN's, else 8)")]
Precision = Annotated[str, typer.Option("--precision", help="fp32 | fp16: with --runtime onnxruntime, fp16 computes as the .om would under atc's precision_mode (default force_fp16), emulated")]
Workers = Annotated[Optional[int], typer.Option(help="preprocessing processes: 0 = in this process (default: a pool of up to 8 when the first sample takes over 2 ms)")]
Wait = Annotated[bool, typer.Option("--wait", help="when another ompipe is writing to this model's work directory, wait for it instead of stopping")]


def _version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"ompipe {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                       help="print the version and exit")] = False) -> None:
    """Take PyTorch vision models to Ascend .om models with per-model YAML recipes, and prove they still work."""


def _options(**values) -> Options:
    return Options(**{k: v for k, v in values.items() if v is not None})


@app.command()
def run(model: Model, bs: Bs = None, runtime: RuntimeOption = None, backend: Backend = None, infer_tool: InferTool = None, export_path: ExportPathOption = None, toolchain: Toolchain = "real", soc_version: Soc = "auto",
        source: Source = None, weights: Weights = None, data: Data = None, limit: Limit = None,
        workdir: Workdir = Path("work"), from_stage: From = None, to_stage: To = None, force: Force = False,
        dry_run: DryRun = False, check: Check = False, quiet: Quiet = False, seed: Seed = 0,
        stream: Stream = False, workers: Workers = None, cann: Cann = None, wait: Wait = False, precision: Precision = "fp32",
        shard: ShardOption = None, devices: DevicesOption = None, executor: ExecutorOption = None,
        ray_address: RayAddress = None, shards: ShardsOption = None, recipes: RecipeDirs = None) -> None:
    """Run every stage of MODEL's recipe, skipping what is up to date."""
    options = _options(bs=bs, runtime=runtime, backend=backend, infer_tool=infer_tool, export_path=export_path, toolchain=toolchain, soc_version=soc_version, source=source,
                       weights=weights, data=data, limit=limit, workdir=workdir, from_stage=from_stage,
                       to_stage=to_stage, force=force, dry_run=dry_run, check=check, quiet=quiet, seed=seed,
                       stream=stream, workers=workers, cann=cann, wait=wait, precision=precision, shard=_shard(shard),
                       devices=_devices(devices), executor=executor, ray_address=ray_address, shards=shards)
    raise typer.Exit(commands.run(model, options, recipes or []))


def _shard(spec: str | None):
    from .shard import parse_shard

    return parse_shard(spec) if spec else None


def _devices(spec: str | None):
    from .devices import parse_devices

    return parse_devices(spec) if spec else None


@app.command()
def merge(model: Model, shards: Annotated[Optional[int], typer.Option("--shards", help="the N of the --shard I/N runs (default: the one N found)")] = None,
          bs: Bs = None, runtime: RuntimeOption = None, backend: Backend = None, infer_tool: InferTool = None, export_path: ExportPathOption = None, toolchain: Toolchain = "real",
          soc_version: Soc = "auto", source: Source = None, weights: Weights = None, data: Data = None, limit: Limit = None,
          workdir: Workdir = Path("work"), quiet: Quiet = False, seed: Seed = 0, stream: Stream = False, wait: Wait = False, recipes: RecipeDirs = None) -> None:
    """Check that every shard of MODEL is present, finished and up to date, then compute the metric and results JSON once."""
    options = _options(bs=bs, runtime=runtime, backend=backend, infer_tool=infer_tool, export_path=export_path, toolchain=toolchain, soc_version=soc_version, source=source,
                       weights=weights, data=data, limit=limit, workdir=workdir, quiet=quiet, seed=seed, stream=stream, wait=wait)
    raise typer.Exit(commands.merge(model, shards, options, recipes or []))


@app.command()
def stage(model: Model, stage_name: Annotated[str, typer.Argument(metavar="STAGE", help="clone, patch, weights, dataset, preprocess, export, simplify, atc, compare, infer, eval or perf")],
          bs: Bs = None, runtime: RuntimeOption = None, backend: Backend = None, infer_tool: InferTool = None, export_path: ExportPathOption = None, toolchain: Toolchain = "real", soc_version: Soc = "auto",
          source: Source = None, weights: Weights = None, data: Data = None, limit: Limit = None,
          workdir: Workdir = Path("work"), force: Force = False, dry_run: DryRun = False, check: Check = False,
          quiet: Quiet = False, seed: Seed = 0, stream: Stream = False, workers: Workers = None, cann: Cann = None,
          wait: Wait = False, precision: Precision = "fp32", recipes: RecipeDirs = None) -> None:
    """Run one stage of MODEL (and only the stages it needs that are not up to date)."""
    options = _options(bs=bs, runtime=runtime, backend=backend, infer_tool=infer_tool, export_path=export_path, toolchain=toolchain, soc_version=soc_version, source=source,
                       weights=weights, data=data, limit=limit, workdir=workdir, only=stage_name, force=force,
                       dry_run=dry_run, check=check, quiet=quiet, seed=seed, stream=stream, workers=workers, cann=cann, wait=wait,
                       precision=precision)
    raise typer.Exit(commands.run(model, options, recipes or []))


@app.command()
def bench(model: Model, bs: Annotated[Optional[str], typer.Option("--bs", help="batch sizes, e.g. 1,4,8,16,32,64 (default: the guide's)")] = None,
          runtime: RuntimeOption = None, backend: Backend = None, infer_tool: InferTool = None, export_path: ExportPathOption = None, toolchain: Toolchain = "real", soc_version: Soc = "auto",
          source: Source = None, weights: Weights = None, data: Data = None, limit: Limit = None,
          workdir: Workdir = Path("work"), force: Force = False, quiet: Quiet = False, seed: Seed = 0,
          wait: Wait = False, devices: Annotated[Optional[str], typer.Option("--devices", help="measure on these NPUs at once, as ais_bench --device 0,1,... does (fps summed; ratio per device)")] = None,
          recipes: RecipeDirs = None) -> None:
    """The guide's throughput table: builds what is missing per batch size, measures, compares (Markdown, JSON, PNG and SVG chart)."""
    options = _options(runtime=runtime, backend=backend, infer_tool=infer_tool, export_path=export_path, toolchain=toolchain, soc_version=soc_version, source=source,
                       weights=weights, data=data, limit=limit, workdir=workdir, force=force, quiet=quiet, seed=seed, wait=wait,
                       devices=_devices(devices))
    raise typer.Exit(commands.bench(model, bs, options, recipes or []))


@app.command("list")
def list_(recipes: RecipeDirs = None) -> None:
    """List the recipes ompipe finds (built in, --recipes, OMPIPE_RECIPES)."""
    raise typer.Exit(commands.list_recipes(recipes or []))


@app.command()
def show(model: Model, recipes: RecipeDirs = None) -> None:
    """Print MODEL's recipe as ompipe resolved it (defaults filled in)."""
    raise typer.Exit(commands.show(model, recipes or []))


@app.command()
def validate(files: Annotated[Optional[list[Path]], typer.Argument(help="recipe files (default: all found)")] = None,
             recipes: RecipeDirs = None) -> None:
    """Check recipes against the schema and their plugins' settings; every problem with file:line and field."""
    raise typer.Exit(commands.validate(files or [], recipes or []))


@app.command()
def new(name: Annotated[str, typer.Argument(help="the new model's recipe name (lower case, digits, _ and -)")],
        dir_: Annotated[Path, typer.Option("--dir", help="directory to write NAME.yaml and NAME.py into")] = Path(".")) -> None:
    """Write a recipe and plugin skeleton for a new model, ready to validate and dry-run."""
    raise typer.Exit(commands.new(name, dir_))


@app.command()
def status(model: Model, bs: Bs = None, runtime: RuntimeOption = None, backend: Backend = None, infer_tool: InferTool = None, export_path: ExportPathOption = None, toolchain: Toolchain = "real",
           soc_version: Soc = "auto", source: Source = None, weights: Weights = None, data: Data = None,
           limit: Limit = None, workdir: Workdir = Path("work"), recipes: RecipeDirs = None) -> None:
    """Show each stage's last run and whether it is up to date."""
    options = _options(bs=bs, runtime=runtime, backend=backend, infer_tool=infer_tool, export_path=export_path, toolchain=toolchain, soc_version=soc_version, source=source,
                       weights=weights, data=data, limit=limit, workdir=workdir)
    raise typer.Exit(commands.status(model, options, recipes or []))


@app.command()
def doctor(model: Annotated[Optional[str], typer.Argument(help="also check disk space for this recipe")] = None,
           toolchain: Toolchain = "real", soc_version: Soc = "auto", data: Data = None, limit: Limit = None,
           workdir: Workdir = Path("work"), bs: Bs = None, cann: Cann = None, recipes: RecipeDirs = None) -> None:
    """Check the Ascend environment: CANN variables, atc / ais_bench / npu-smi, soc_version, packages, disk;
    with MODEL, also lint its exported Ascend graph for patterns ATC handles badly."""
    options = _options(toolchain=toolchain, soc_version=soc_version, data=data, limit=limit, workdir=workdir, bs=bs,
                       cann=cann)
    raise typer.Exit(commands.doctor(model, options, recipes or []))


@app.command()
def report(workdir: Workdir = Path("work"), json_: Annotated[bool, typer.Option("--json", help="print JSON instead of the table")] = False,
           md: Annotated[bool, typer.Option("--md", help="print Markdown instead of the table")] = False,
           html: Annotated[Optional[Path], typer.Option("--html", help="also write one self-contained HTML report (plots inline) to this file")] = None) -> None:
    """One table for all models: metrics vs the guides' references and our ONNX Runtime baseline, fps, provenance."""
    raise typer.Exit(commands.report(workdir, json_, md, html))


@data_app.command("synth-hpatches")
def synth_hpatches(out: Annotated[Path, typer.Argument(help="directory to write the sequences into")],
                   sequences: Annotated[int, typer.Option(help="number of sequences")] = 8,
                   seed: Annotated[int, typer.Option(help="random seed")] = 0) -> None:
    """Write an HPatches-format dataset from images bundled with scikit-image (no download)."""
    raise typer.Exit(commands.synth_hpatches(out, sequences, seed))


INTERRUPTED = "interrupted: the stage in progress was discarded; rerun to continue"


def no_group_or_other_write() -> None:
    """ais_bench refuses a model, input or output path that its group or others may write to
    (docs/ais_bench-args.md, path rules), so under a common `umask 002` every `.om` and `.bin`
    ompipe or atc wrote would be refused at infer, after minutes of export and atc. Mask those
    bits for everything ompipe and its tools create; a stricter umask is kept as it is."""
    os.umask(os.umask(0) | 0o022)


def main(argv: list[str] | None = None) -> int:
    lock.set_command_line(list(sys.argv[1:] if argv is None else argv))
    no_group_or_other_write()
    with interrupts.handled():  # SIGTERM and SIGHUP stop ompipe as Ctrl-C does
        try:
            code = app(args=argv, standalone_mode=False, prog_name="ompipe")
            if code == 130:  # Typer turns KeyboardInterrupt into exit code 130; no command of ours returns it
                return _interrupted()
            return code if isinstance(code, int) else 0
        except typer.Exit as exc:
            return exc.exit_code
        except typer.Abort:
            print("interrupted", file=sys.stderr)
            return 130
        except typer.TyperException as exc:  # usage errors: bad option, missing argument
            exc.show() if hasattr(exc, "show") else print(f"error: {exc.format_message()}", file=sys.stderr)
            return exc.exit_code
        except UserError as exc:
            print(exc.render(), file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            return _interrupted()
        except Exception as exc:
            full = disk_full_error(exc)
            if full:  # the disk, not our bug (a stage's own writes are reported by the runner)
                print(full.render(), file=sys.stderr)
                return full.exit_code
            # our bug: everything needed for a bug report
            traceback.print_exc()
            print(f"\nompipe crashed (this is a bug, please report it with the above)\n{commands.crash_report()}", file=sys.stderr)
            return 3


def _interrupted() -> int:
    """The shell's status for the signal: 130 (Ctrl-C), 143 (SIGTERM), 129 (SIGHUP)."""
    signum = interrupts.received() or signal.SIGINT
    print(INTERRUPTED + ("" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"), file=sys.stderr)
    return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
