"""The loader: reads a pipeline file, checks it, and builds its :class:`Pipeline`.

Each phase is a module of this package, run in order over one :class:`Context`: reading
(``reading.py``: YAML with the line of every key), the format (``formats.py``), the top
level and ``settings:`` (``schema.py``, ``settings.py``), plugins (``imports.py``), the
steps (``steps.py``, with ``steptypes.py``, ``templates.py`` and ``commands.py``), names and
references (``references.py``), and building the flow (``build.py``). Every problem is
collected (``problems.py``) and raised at once, in file order, before anything runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import acp
from ..errors import PipelineError
from .build import build
from .formats import acp_input, chain, read_format
from .imports import import_plugin
from .model import Context
from .pipeline import Pipeline
from .problems import Problems
from .reading import read_yaml
from .references import check_graph, check_names
from .schema import TOP_KEYS, expect, fields, unknown_keys
from .settings import check_settings
from .steps import entries as read_entries

__all__ = ["load_pipeline"]


def load_pipeline(path: str | os.PathLike[str], *, plugins: Iterable[str] = ()) -> Pipeline:
    """Read a YAML pipeline into a :class:`Flow` (a :class:`Pipeline`); raise
    :class:`PipelineError` listing every problem, with file and line, before anything runs."""
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise PipelineError([(file, None, "no such file")])
    data, lines, duplicates = read_yaml(path)
    if not isinstance(data, dict):
        message = f"a pipeline is a mapping with at least 'steps:', got {type(data).__name__}"
        raise PipelineError([(file, 1, message)])
    ctx = Context(path, Problems(file, lines, duplicates))
    data = dict(data)
    read_format(ctx, data)
    inputs = _top_level(ctx, data)
    name = data.get("name")  # after the check, which drops a bad one
    settings = check_settings(ctx, data.get("settings") or {})
    listed = data.get("plugins") or []
    if expect(ctx.problems, listed, list, ("plugins",), "plugins"):
        for k, module in enumerate([*listed, *plugins]):
            import_plugin(ctx, module, ("plugins", k))
    steps_data = data.get("steps")
    if steps_data is None:
        ctx.problems.add((), "the pipeline has no 'steps:'")
        raise PipelineError(ctx.problems.found)
    if not expect(ctx.problems, steps_data, list, ("steps",), "steps") or not steps_data:
        if isinstance(steps_data, list):
            ctx.problems.add(("steps",), "steps is empty")
        raise PipelineError(ctx.problems.found)
    entries = read_entries(ctx, steps_data)
    if ctx.acp is not None:
        chain(entries)
    # names and references are checked even when steps had problems of their own, so
    # that one round reports every kind of problem
    check_names(ctx, entries, inputs)
    if ctx.problems:
        raise ctx.problems.error()
    flow = build(ctx, name, inputs, settings, entries)
    if not ctx.problems:
        check_graph(ctx, flow, entries)
    if ctx.problems:
        raise ctx.problems.error()
    return flow


def _top_level(ctx: Context, data: dict[str, Any]) -> dict[str, Any]:
    """The top level's keys checked, and the pipeline's inputs (with their defaults)."""
    if ctx.acp is not None:
        known: tuple[str, ...] = (*acp.TOP_KEYS, "format", "version", "plugins", "settings")
        if "inputs" in data:
            ctx.problems.add(
                ("inputs",),
                "inputs: is layerflow's format, and this file says format: "
                "ai-content-pipeline, whose input is prompt:, input_image: or input_video: "
                "(or --set input=VALUE)",
            )
            data.pop("inputs")
    else:
        known = (*TOP_KEYS, "format")
    unknown_keys(ctx, data, known, (), "the pipeline")
    fields(ctx.problems, data, ("name", "description"), ())
    inputs = data.get("inputs")
    if inputs is None:
        inputs = {}
    elif not isinstance(inputs, dict):
        expect(ctx.problems, inputs, dict, ("inputs",), "inputs")
        inputs = {}
    for k in inputs:
        if not isinstance(k, str) or not k.isidentifier():
            ctx.problems.add(("inputs", k), f"an input's name must be a word, got {k!r}")
    if ctx.acp is not None:
        return acp_input(ctx, data)
    if "prompt" in data and "input" not in inputs:
        return {**inputs, "input": data["prompt"]}
    return inputs
