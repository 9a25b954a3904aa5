"""What each CLI command does, as plain functions returning an exit code (the Python API is
the CLI minus argument parsing)."""
from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import yaml

from . import lock, toolchains, versions
from .context import Options, Run, choose_runtime
from .errors import UsageError, UserError, disk_full_error
from .plan import plan
from .plugin import check_settings, load_plugin
from .recipe import LoadedRecipe, Recipe, discover, find_recipe, load_recipe_file
from .report import natural_key, runtime_of
from .runner import run_pipeline
from .shard import SHARED_KINDS
from .stages import KINDS
from .tools import ais_bench
from .ui import Printer


def use_toolchain(name: str, workdir: Path) -> None:
    """`--toolchain`: the command layer is the one place that picks the toolchain."""
    toolchains.activate(toolchains.load(name, workdir))


def make_run(model: str, options: Options, recipe_dirs: list[Path], printer: Printer) -> Run:
    return build_run(find_recipe(model, recipe_dirs), options, printer)


def build_run(loaded: LoadedRecipe, options: Options, printer: Printer) -> Run:
    """The one way a Run is made (run, stage, status, bench, shards): the toolchain activated,
    the runtime chosen, and everything checked that can be before a stage runs."""
    use_toolchain(options.toolchain, options.workdir)
    runtime, note = choose_runtime(options, loaded.recipe)
    if note:
        printer.info(note)
    bs = loaded.recipe.bs if options.bs is None else options.bs
    check_batch_size(bs, loaded.recipe)
    check_stage_range(options.from_stage, options.to_stage)
    if bs not in loaded.recipe.batch_sizes:
        printer.info(f"note: bs {bs} is not among the guide's batch sizes {loaded.recipe.batch_sizes}")
    if options.limit is not None and options.limit < 1:
        raise UserError("--limit must be at least 1")
    if options.workers is not None and options.workers < 0:
        raise UserError(f"--workers {options.workers}: give 0 (preprocess in this process) or a number of processes")
    stages = loaded.recipe.stages
    for flag, value, stage in (("--weights", options.weights, stages.weights), ("--data", options.data, stages.dataset),
                               ("--source", options.source, stages.clone)):
        if value is not None and stage is None:
            raise UserError(f"{flag} given, but recipe {loaded.recipe.name} has no {flag[2:]} stage to use it")
    run = Run(loaded, options, runtime, bs, options.workdir)
    check_settings(loaded, run.plugin)
    run.runtime.check()
    return run


def check_batch_size(bs: int, recipe: Recipe) -> None:
    """Before anything runs: a batch size the export, atc and ais_bench can all take."""
    if bs < 1:
        raise UserError(f"--bs {bs}: a batch size is a number of samples, at least 1",
                        hint=f"the guide's batch sizes: {', '.join(map(str, recipe.batch_sizes))}")
    if bs > ais_bench.MAX_BATCHSIZE:
        raise UserError(f"--bs {bs}: above {ais_bench.MAX_BATCHSIZE}, the largest --batchsize ais_bench accepts",
                        hint=f"the guide's batch sizes: {', '.join(map(str, recipe.batch_sizes))}")
    one_batch = bs * sum(int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize for t in recipe.model.inputs)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if one_batch > memory:  # the export's example batch alone would not fit
        raise UserError(f"--bs {bs}: one batch of inputs is {one_batch / 2**30:.1f} GiB, more than this machine's "
                        f"memory ({memory / 2**30:.1f} GiB)", hint="use a smaller --bs")


def check_stage_range(from_stage: str | None, to_stage: str | None) -> None:
    order = list(KINDS)
    if from_stage in order and to_stage in order and order.index(from_stage) > order.index(to_stage):
        raise UsageError(f"--from {from_stage} --to {to_stage}: {from_stage} comes after {to_stage}, so nothing would run",
                         hint=f"stages run in this order: {', '.join(order)}")


def run(model: str, options: Options, recipe_dirs: list[Path]) -> int:
    if options.executor not in (None, "local", "ray"):
        raise UserError(f"--executor {options.executor}: choose local (this host; with --devices) or ray")
    if options.shards is not None and options.executor != "ray":
        raise UserError("--shards is for --executor ray", hint="on one host: --devices 0,1,...; one shard: --shard I/N")
    if options.devices or options.executor == "ray":
        return run_distributed(model, options, recipe_dirs)
    printer = Printer(options.quiet)
    pipeline = make_run(model, options, recipe_dirs, printer)
    if options.plans_only:  # reads only: no lock, never waits
        return _run_locked(pipeline, printer)
    with naming_a_full_disk(pipeline.model_dir), lock.holding(pipeline.model_dir, options.wait, on_wait=waiting_note(printer)):
        return _run_locked(pipeline, printer)


@contextlib.contextmanager
def naming_a_full_disk(model_dir: Path) -> Iterator[None]:
    """A full disk outside any stage (the digest cache while planning, the results JSON): the
    same one line as a stage's, naming the model's work directory when the error names no file."""
    try:
        yield
    except Exception as exc:
        full = disk_full_error(exc, writing_under=model_dir)
        if full is None:
            raise
        raise full from None


def build_shared_stages(pipeline: Run, printer: Printer) -> None:
    """A shard's shared stages, in the model's directory, once for all shards: under that
    directory's lock, waited for (the other shards of an array start at the same time and
    queue here; the first builds, the others find the stages CACHED). The shard's own
    directory has its own lock, which the caller holds."""
    if pipeline.options.plans_only:
        run_pipeline(pipeline.unsharded, printer, kinds=SHARED_KINDS)
        return
    with lock.holding(pipeline.shared_dir, wait=True, on_wait=waiting_note(printer)):
        run_pipeline(pipeline.unsharded, printer, kinds=SHARED_KINDS)


def waiting_note(printer: Printer):
    return lambda holder: printer.error(f"waiting for another ompipe on this work directory ({holder})")


def _run_locked(pipeline: Run, printer: Printer) -> int:
    options = pipeline.options
    mode = "plan" if options.plans_only else "run"
    printer.info(f"ompipe {mode} {pipeline.name}{f' shard {pipeline.shard}' if pipeline.shard else ''}: bs {pipeline.bs}, "
                 f"runtime {pipeline.runtime.name}, toolchain {options.toolchain}, work dir {pipeline.model_dir}")
    if pipeline.shard and not options.shared_built:
        build_shared_stages(pipeline, printer)
    report = run_pipeline(pipeline, printer)
    if not options.quiet:
        printer.table(report.rows)
    if options.check and report.would_run:
        printer.error("check: some stages would run")
        return 1
    if report.results:
        print_results(report.results, report.results_path, Printer())  # shown with --quiet too
    elif pipeline.shard and mode == "run":
        printer.info(f"shard {pipeline.shard} done; when every shard is: ompipe merge {pipeline.name}")
    return 0


def run_distributed(model: str, options: Options, recipe_dirs: list[Path]) -> int:
    """`--devices 0,1,...` (one shard per device of this host, concurrently) or `--executor ray`
    (one shard per Ray task): the shared stages once, here, then the shards, then the merge."""
    from dataclasses import replace

    if options.shard:
        raise UserError("--shard with --devices or --executor: those make the shards themselves")
    ray = options.executor == "ray"
    if ray and options.devices:
        raise UserError("--devices with --executor ray: Ray assigns the NPUs", hint="leave out --devices (--shards N sets the count)")
    printer = Printer(options.quiet)
    pipeline = make_run(model, replace(options, devices=None, executor=None), recipe_dirs, printer)
    where = "Ray" if ray else f"devices {','.join(map(str, options.devices))}"
    printer.info(f"ompipe run {pipeline.name} on {where}: bs {pipeline.bs}, "
                 f"runtime {pipeline.runtime.name}, toolchain {options.toolchain}, work dir {pipeline.model_dir}")
    if options.plans_only:  # reads only: no lock
        report = run_pipeline(pipeline, printer, kinds=SHARED_KINDS)
        printer.table(report.rows)
        return 1 if options.check and report.would_run else 0
    # This process is the model directory's one writer for the whole command. The shard
    # processes or tasks it starts are told the shared stages are built (shared_built): they
    # only check them, take only their own shard directory's lock, and so never wait for it.
    with naming_a_full_disk(pipeline.model_dir), lock.holding(pipeline.shared_dir, options.wait, on_wait=waiting_note(printer)):
        return _distribute(model, options, recipe_dirs, pipeline, printer)


def _distribute(model: str, options: Options, recipe_dirs: list[Path], pipeline: Run, printer: Printer) -> int:
    from .devices import device_table, run_devices
    from .merge import merge_shards

    run_pipeline(pipeline, printer, kinds=SHARED_KINDS)
    if options.executor == "ray":
        from .ray_executor import run_on_ray

        records = run_on_ray(model, options, recipe_dirs, pipeline, options.shards, options.ray_address)
    else:
        records = run_devices(model, options, recipe_dirs, pipeline)
    device_table(records, printer)
    merged = merge_shards(pipeline, len(records), printer, devices=records)
    print_results(merged.results, merged.results_path, Printer())
    return 0


def merge(model: str, count: int | None, options: Options, recipe_dirs: list[Path]) -> int:
    """`ompipe merge`: every shard checked, the metric and results JSON written once."""
    from .merge import default_data, merge_shards

    printer = Printer(options.quiet)
    pipeline = make_run(model, options, recipe_dirs, printer)
    with_data = default_data(pipeline, options)
    if with_data is not options:
        pipeline = make_run(model, with_data, recipe_dirs, printer)
    with lock.holding(pipeline.shared_dir, options.wait, on_wait=waiting_note(printer)):  # it writes the results there
        report = merge_shards(pipeline, count, printer)
    if not options.quiet:
        printer.table(report.rows)
    print_results(report.results, report.results_path, Printer())
    return 0


def print_results(results: dict, path: Path, printer: Printer) -> None:
    """Each metric beside the references that compare to it (the recipe names them), so nobody
    compares repeatability with the guide's NN mAP."""
    if results.get("random_weights"):
        printer.info("WARNING: random weights: these numbers say nothing about the guide's accuracy")
    elif results["weights"].get("verified_by") == "none":
        printer.info(f"WARNING: the weights could not be verified ({results['weights']['unpinned_reason']}); "
                     f"their sha256 {results['weights']['sha256']} is recorded in the results")
    references = results["reference"]
    for name, value in sorted((results.get("metrics") or {}).items(), key=lambda item: natural_key(item[0])):
        refs = [f"{r['value']:g} ({r['chip'] + ', ' if r.get('chip') else ''}{r['source']})"
                for r in references["accuracy"] if r["metric"] == name]
        printer.info(f"{name}: {value:.6g}" + (f"   reference: {'; '.join(refs)}" if refs else ""))
    perf = results.get("perf")
    if perf:
        refs = [f"{fps[str(results['bs'])]:g} on {chip} ({references['fps_source'] or 'guide'})"
                for chip, fps in references["fps"].items() if str(results["bs"]) in fps]
        printer.info(f"throughput ({runtime_of(results)}, bs {results['bs']}): {perf['fps']:.2f} fps"
                     + (f"   reference: {'; '.join(refs)}" if refs else ""))
    shards = results.get("shards")
    if shards:
        devices = [d for d in shards.get("devices") or [] if d.get("throughput")]
        summed = (f"; {sum(d['throughput'] for d in devices):.2f} samples/s summed over {len(devices)} devices "
                  "(infer stage, wall clock: not comparable with a guide's one-device fps)") if devices else ""
        printer.info(f"merged from {shards['count']} shards ({', '.join(map(str, shards['samples']))} samples){summed}")
    printer.info(f"results: {path}")


def list_recipes(recipe_dirs: list[Path]) -> int:
    printer = Printer()
    for name, path in discover(recipe_dirs).items():
        try:
            recipe = load_recipe_file(path).recipe
            printer.info(f"{name:<12} {recipe.title}  (bs {', '.join(map(str, recipe.batch_sizes))})  {path}")
        except UserError as exc:
            printer.info(f"{name:<12} INVALID: {exc.message}  {path}")
    return 0


def show(model: str, recipe_dirs: list[Path]) -> int:
    loaded = find_recipe(model, recipe_dirs)
    print(f"# {loaded.path}")
    print(yaml.safe_dump(loaded.recipe.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True), end="")
    return 0


def validate(files: list[Path], recipe_dirs: list[Path]) -> int:
    paths = files or list(discover(recipe_dirs).values())
    printer = Printer()
    failed = 0
    for path in paths:
        try:
            loaded = load_recipe_file(path)
            check_settings(loaded, load_plugin(loaded.recipe.plugin, loaded.directory))
            printer.info(f"ok      {path}")
        except UserError as exc:
            failed += 1
            printer.error(exc.render())
    return 1 if failed else 0


def new(name: str, directory: Path) -> int:
    """NAME.yaml and NAME.py from the skeleton templates (a working toy classifier to replace
    part by part); never over an existing file."""
    from string import Template

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise UserError(f"{name!r} is not a recipe name", hint="lower case letters, digits, _ and -, starting with a letter or digit")
    skeleton = Path(__file__).parent / "skeleton"
    files = {directory / f"{name}.yaml": skeleton / "recipe.yaml.template", directory / f"{name}.py": skeleton / "plugin.py.template"}
    existing = [str(path) for path in files if path.exists()]
    if existing:
        raise UserError(f"{', '.join(existing)} already exist(s); ompipe new writes only new files", hint="choose another NAME or --dir")
    directory.mkdir(parents=True, exist_ok=True)
    for path, template in files.items():
        path.write_text(Template(template.read_text()).substitute(name=name))
    printer = Printer()
    printer.info(f"wrote {' and '.join(str(path) for path in files)}; next:")
    printer.info(f"  ompipe validate {directory / f'{name}.yaml'}")
    printer.info(f"  ompipe run {name} --recipes {directory} --dry-run --toolchain fake")
    printer.info("then replace each 'fill in' (recipes/README.md, \"Writing a plugin\")")
    return 0


def status(model: str, options: Options, recipe_dirs: list[Path]) -> int:
    """Each stage's last run and whether it is up to date, without running anything: the plan
    of a run that executes nothing, so a stage downstream of a stale one is stale too."""
    printer = Printer(options.quiet)
    pipeline = make_run(model, options, recipe_dirs, printer)
    for decision in plan(pipeline, executing=False, keep_going=True):
        stage = decision.stage
        if decision.action == "SKIPPED" or decision.unplannable:
            printer.stage_line(stage.key, decision.action, decision.reason)
            continue
        record = stage.run.state.record(stage.key)
        when = record["finished"] if record else "never"
        state = "up to date" if decision.action == "CACHED" else f"stale: {decision.reason}"
        printer.stage_line(stage.key, decision.action, f"{state} (last run: {when})")
    return 0


def doctor(model: str | None, options: Options, recipe_dirs: list[Path]) -> int:
    from .doctor import run_checks

    use_toolchain(options.toolchain, options.workdir)
    loaded: LoadedRecipe | None = find_recipe(model, recipe_dirs) if model else None
    return run_checks(loaded, options, Printer())


def synth_hpatches(out: Path, sequences: int, seed: int) -> int:
    from .data.synth_hpatches import synthesize

    path = synthesize(out, sequences=sequences, seed=seed)
    Printer().info(f"wrote {sequences} HPatches-format sequences to {path}")
    return 0


def bench(model: str, batch_sizes: str | None, options: Options, recipe_dirs: list[Path]) -> int:
    from dataclasses import replace

    from .bench import bench as measure, parse_batch_sizes

    printer = Printer(options.quiet)
    loaded = find_recipe(model, recipe_dirs)
    sizes = parse_batch_sizes(batch_sizes) if batch_sizes else loaded.recipe.batch_sizes
    # Every batch size's run built (and so checked) before the first is measured; notes once.
    runs = [build_run(loaded, replace(options, bs=bs, only="perf"), printer if index == 0 else Printer(quiet=True))
            for index, bs in enumerate(sizes)]
    if options.devices and not runs[0].runtime.multi_device:
        raise UserError(f"--devices: {runs[0].runtime.name} measures one device at a time",
                        hint="use --runtime ais_bench (its --device 0,1,... mode), or `ompipe run --devices` to shard an evaluation")
    with naming_a_full_disk(runs[0].model_dir), lock.holding(runs[0].model_dir, options.wait, on_wait=waiting_note(printer)):
        text, out = measure(runs, printer)
    print(text)
    print(f"written: {', '.join(str(out.with_suffix(suffix)) for suffix in ('.md', '.json', '.png', '.svg'))}")
    return 0


def report(workdir: Path, as_json: bool, as_markdown: bool = False, html: Path | None = None) -> int:
    """The table on the terminal (rich), or as Markdown / JSON on stdout; `html` also writes the
    self-contained HTML report (its path goes to stderr, so stdout stays one format)."""
    from . import report as results

    if as_json and as_markdown:
        raise UserError("--json and --md both given", hint="choose one output format for stdout")
    table = results.rows(results.collect(workdir))
    if html is not None:
        from .html_report import write

        write(workdir, html)
        print(f"written: {html}", file=sys.stderr)
    if as_json:
        print(results.as_json(table))
    elif as_markdown:
        print(results.markdown(table))
    else:
        Printer().console.print(results.rich_table(table))
    return 0


def crash_report() -> str:
    lines = [f"{name}: {version}" for name, version in versions.report().items()]
    return "versions:\n  " + "\n  ".join(lines)

