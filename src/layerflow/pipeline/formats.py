"""A file in ai-content-pipeline's own format, read as that project reads it.

Which format a file is in: what it says (``format:``), else its shape (:func:`acp.reason`).
In that format the pipeline's input is ``prompt``, ``input_image`` or ``input_video``, and
each step is fed what the one before passes on (:func:`chain`); :func:`chain_inputs` wires
that into a step's task. The format's own rules are in ``layerflow/acp.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import acp
from .model import Context, Source, Step
from .problems import short
from .schema import fields
from .steptypes import Prepare, describe, signature_keys, wants

__all__ = ["acp_input", "chain", "chain_inputs", "read_format"]


def read_format(ctx: Context, data: dict[str, Any]) -> None:
    """Which format the file is in: what it says (``format:``), else its shape
    (:func:`acp.reason`)."""
    if "format" not in data:
        ctx.acp = acp.reason(data)
        ctx.why_layerflow = (
            "it has inputs:"
            if "inputs" in data
            else "nothing in it is only ai-content-pipeline's (such as input_image:, "
            "output_dir: or a parallel_group's params:)"
        )
        return
    declared = data["format"]
    if declared == acp.FORMAT:
        ctx.acp = f"it says format: {acp.FORMAT}"
    elif declared == "layerflow":
        ctx.why_layerflow = "it says format: layerflow"
    else:
        ctx.problems.add(
            ("format",),
            f"format must be 'layerflow' or {acp.FORMAT!r}, got {short(declared)}",
        )
        ctx.acp = acp.reason(data)
        ctx.why_layerflow = "it has inputs:" if "inputs" in data else "of its shape"


def acp_input(ctx: Context, data: dict[str, Any]) -> dict[str, Any]:
    """ai-content-pipeline's top-level settings (checked, kept in ``ctx.config``) and the
    pipeline's input, ``input``: the ``prompt``, ``input_image`` or ``input_video`` that the
    first step's input kind asks for (none: ``--set input=VALUE`` gives it, as
    ``--input-text`` does there)."""
    fields(ctx.problems, data, (*acp.CONFIG_KEYS, "input_type"), ())
    ctx.config = {k: data[k] for k in acp.TOP_KEYS[2:-1] if k in data}
    ctx.input_key = acp.input_key(data)
    value = data.get(ctx.input_key)
    return {"input": value} if value else {}


def chain(entries: list[list[Step]]) -> None:
    """ai-content-pipeline's data flow: each step's input is what the enabled step (or
    group) before it passes on, the first one's the pipeline's input; a step with
    ``input_from`` or ``needs`` keeps layerflow's rule. A source is ``("flow",)``,
    ``("step", NAME)`` (that step's output, as :func:`acp.passed_on` reads it) or
    ``("merge", STRATEGY, [sources])`` (a group's, as :func:`acp.merge` makes it)."""
    current: Source = ("flow",)
    prompt: str | None = None
    for entry in entries:
        if not entry:
            continue
        outs = []
        for s in entry:
            d = s.data
            if "input_from" in d:
                own: Source = ("step", d["input_from"])
            elif "needs" in d or s.kind == "run":
                own = ("flow",)
            else:
                own = s.source = current
            s.prompt_from = prompt
            # prompt_generation passes its input (the image) on: executor.py
            outs.append(own if d.get("type") == "prompt_generation" else ("step", s.name))
        if entry[0].group is not None:
            current = ("merge", entry[0].strategy, outs)
        else:
            current = outs[0]
            if entry[0].data.get("type") == "prompt_generation":
                prompt = entry[0].name


def chain_inputs(
    ctx: Context, s: Step, upstream: dict[str, str]
) -> tuple[Prepare | None, dict[str, Any], bool]:
    """A step's wiring in ai-content-pipeline's format: its input (``s.source``) and the
    ``generated_prompt`` it asks for, as upstream parameters (added to ``upstream``) and a
    ``prepare`` that turns them into ``input`` and that keyword; the file's run settings its
    function names (``output_dir``, ...: ``defaults``); and whether it reads the pipeline's
    own input."""
    assert s.fn is not None  # a "call" step's
    accepted = set(signature_keys(s.fn))
    d = s.data
    given = set(d.get("params") or {}) | set(d)
    defaults = {
        k: ctx.config[k]
        for k in acp.CONFIG_KEYS
        if k in ctx.config and k in accepted and k not in given
    }
    source = s.source
    if source is not None and "input" not in accepted and not s.uses_input:
        source = None  # nothing reads its input: the order alone joins it to the others
    args: dict[str, str] = {}  # step name -> parameter
    for name in _source_names(source):
        arg = args[name] = f"__acp{len(args)}"
        upstream[arg] = name
    prompt_arg = None
    if "generated_prompt" in accepted and "generated_prompt" not in given:
        if s.prompt_from is not None:
            prompt_arg = "__acp_prompt"
            upstream[prompt_arg] = s.prompt_from
        elif wants(s.fn, "generated_prompt"):
            ctx.problems.add_line(
                s.line,
                f"{describe(s.fn)} needs 'generated_prompt', which only a step after a "
                f"prompt_generation step receives",
                s.name,
            )
    if source is None and prompt_arg is None:
        return None, defaults, False

    def prepare(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        kwargs = dict(kwargs)
        extra = {}
        if prompt_arg is not None:
            extra["generated_prompt"] = acp.generated_prompt(kwargs.pop(prompt_arg))
        if source is not None:
            value = _resolve(source, kwargs, args)
            for arg in args.values():
                kwargs.pop(arg, None)
            kwargs["__input__"] = value
        return kwargs, extra

    return prepare, defaults, source is not None and _has_flow(source)


def _source_names(source: Source | None) -> list[str]:
    """The steps a source (:func:`chain`) reads, in order, each once."""
    if source is None or source[0] == "flow":
        return []
    if source[0] == "step":
        return [source[1]]
    return list(dict.fromkeys(n for inner in source[2] for n in _source_names(inner)))


def _has_flow(source: Source) -> bool:
    """Whether a source reads the pipeline's own input."""
    if source[0] == "merge":
        return any(_has_flow(inner) for inner in source[2])
    return source[0] == "flow"


def _resolve(source: Source, kwargs: Mapping[str, Any], args: Mapping[str, str]) -> Any:
    """A source's value, from a step function's keyword arguments."""
    if source[0] == "flow":
        return kwargs.get("input")
    if source[0] == "step":
        return acp.passed_on(kwargs[args[source[1]]])
    return acp.merge(source[1], [_resolve(inner, kwargs, args) for inner in source[2]])
