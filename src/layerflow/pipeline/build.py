"""Building the :class:`Pipeline` (an ordinary :class:`Flow`) from the checked steps: one
engine, not two.

Each step becomes one task. Its function gets the flow inputs its templates name as
keyword-only parameters and upstream values as ``**upstream`` (``__input__``: ``input_from``'s
output, ``__step__NAME``: a template's step); a foreach step is a task with ``map=`` over the
step, the input, or a literal list in a private param. ``order: sequence`` (the default)
runs each entry after the one before it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import acp
from ..errors import LayerflowError
from ..graph import TaskGroup
from .commands import Command
from .formats import chain_inputs
from .model import Context, Step
from .pipeline import Pipeline
from .settings import foreach_pool, run_settings
from .steptypes import Prepare, call_step, wants
from .templates import INDEX, ITEM

__all__ = ["build"]

# a step's keys that are the task's options as they are
_TASK_OPTIONS = ("retries", "retry_delay", "timeout", "priority", "resources", "cache")


def build(
    ctx: Context,
    name: Any,
    inputs: dict[str, Any],
    settings: dict[str, Any],
    entries: list[list[Step]],
) -> Pipeline:
    """The pipeline's flow: a task per step, and the run options its settings give."""
    flow = Pipeline(name if isinstance(name, str) else ctx.path.stem)
    flow.inputs = dict(inputs)
    if ctx.acp is not None:
        flow.format = acp.FORMAT
        flow.format_reason = ctx.acp
        flow.config = dict(ctx.config)
        flow.input_key = ctx.input_key
    flow.path = ctx.path
    flow.import_paths = tuple(sorted(ctx.import_paths))
    flow.input_lines = dict(ctx.input_lines)
    steps = [s for entry in entries for s in entry]
    order = settings.get("order", "sequence")
    previous: list[str] = []
    delay = bool(settings.get("rate_limit_delay"))
    groups: dict[str, TaskGroup] = {}
    for entry in entries:
        for s in entry:
            after = list(previous) if order == "sequence" else []
            _add_step(ctx, flow, s, after, delay, groups)
        if entry:
            previous = [s.name for s in entry]
    flow.settings = run_settings(settings, steps)
    flow.descriptions = {s.name: s.data.get("description") for s in steps}
    flow.step_lines = {s.name: s.line for s in steps}
    flow.foreach_inputs = {
        s.foreach[1]: (s.name, s.foreach_line)
        for s in reversed(steps)  # the first step that iterates over an input names it
        if s.foreach and s.foreach[0] == "input"
    }
    return flow


def _task_group(groups: dict[str, TaskGroup], name: str, config: Mapping[str, Any]) -> TaskGroup:
    """The one ``TaskGroup`` a parallel_group's steps share."""
    group = groups.get(name)
    if group is None:
        timeout = config.get("timeout")
        group = groups[name] = TaskGroup(
            name,
            fail_fast=config.get("fail_fast"),
            timeout=float(timeout) if timeout is not None else None,
        )
    return group


def _add_step(
    ctx: Context,
    flow: Pipeline,
    s: Step,
    after: list[str],
    rate_limit_delay: bool,
    groups: dict[str, TaskGroup],
) -> None:
    d = s.data
    upstream: dict[str, str] = {}  # parameter -> step name
    if d.get("input_from"):
        upstream["__input__"] = d["input_from"]
    prepare: Prepare | None = None
    defaults: dict[str, Any] = {}
    flow_input = False
    if s.kind == "call" and ctx.acp is not None:
        prepare, defaults, flow_input = chain_inputs(ctx, s, upstream)
    for ref in sorted(s.refs):
        upstream[f"__step__{ref}"] = ref
    wanted_inputs = set(s.input_refs)
    if s.uses_input:
        wanted_inputs.add("input")
    # foreach: a map over the step, the input, or the literal list (a private param);
    # ``item`` is the argument that receives the element
    each: dict[str, Any] = {}
    item = ITEM
    if s.foreach is not None:
        kind, ref = s.foreach
        if kind == "step":
            upstream[ITEM] = ref
            each["map"] = ref
        elif kind == "input":
            wanted_inputs.add(ref)
            each["map"] = item = ref
        else:
            each["params"] = {ITEM: list(d["foreach"])}
            each["map"] = ITEM
    fn: Callable[..., Any]
    if s.fn is None:  # a run: step
        command = Command(s.name, d, Path(ctx.path).parent, flow)
        command.item = item
        fn = command
    else:
        fn = call_step(s.name, s.fn, d, item, defaults, prepare)
        if s.source is not None:
            wanted_inputs.discard("input")  # {{input}} is the step's own input
            if flow_input:
                wanted_inputs.add("input")
        elif not d.get("input_from") and wants(s.fn, "input"):
            wanted_inputs.add("input")
    # the task's parameters (an attribute inspect reads, which mypy does not model)
    fn.__signature__ = inspect.Signature(  # type: ignore[union-attr]
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in sorted(wanted_inputs)]
        + [inspect.Parameter("upstream", inspect.Parameter.VAR_KEYWORD)]
    )
    options: dict[str, Any] = {
        "inputs": upstream,
        "after": [*after, *d.get("needs", [])],
        "description": d.get("description"),
        **each,
        **{key: d[key] for key in _TASK_OPTIONS if key in d},
    }
    rate = d.get("rate_limit")
    if isinstance(rate, str):
        rate = {rate: 1}
    if rate_limit_delay:
        rate = {**(rate or {}), "rate_limit_delay": 1}
    if rate:
        options["rate_limit"] = rate
    group = d.get("__group__")
    if group is not None:
        assert s.group is not None  # a group's member
        options["group"] = _task_group(groups, s.group, group)
        if "max_workers" in group:
            options["resources"] = {**options.get("resources", {}), f"group:{s.group}": 1}
    if "max_workers" in d:  # a pool of its own, like a parallel_group's
        options["resources"] = {**options.get("resources", {}), foreach_pool(s.name): 1}
    try:
        task = flow.add(fn, name=s.name, **options)
    except LayerflowError as e:
        ctx.problems.add_line(s.line, str(e), s.name)
        return
    # the store's notion of "this step changed": its whole config, and for a function
    # step the function's source (the step closures themselves all look alike)
    source = ""
    if s.fn is not None:
        with contextlib.suppress(OSError, TypeError):
            source = inspect.getsource(s.fn)
    task.fingerprint = repr(sorted((k, repr(v)) for k, v in d.items())) + source
    task.cancel = getattr(fn, "cancel", None)
    if s.foreach is not None:
        task.element_index = INDEX
