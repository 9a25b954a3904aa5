"""Runs a plugin's export inside an export environment: `python -m om_pipeline.export_worker
REQUEST.json`. Imports only what an export needs (no pydantic, typer or onnxruntime)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .plugin import ExportContext, load_plugin, settings_from_params, settings_type


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    context = request["context"]
    for key in ("source", "weights", "out"):
        context[key] = Path(context[key]) if context[key] is not None else None
    plugin = load_plugin(request["plugin"], Path(request["recipe_dir"]))
    context["settings"] = settings_from_params(settings_type(plugin), context["settings"])  # a dict in JSON
    plugin.export(ExportContext(**context))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
