"""Steps that call a function: ``type: NAME`` (a registered step type) and
``uses: "module:function"``.

Step types are registered with :func:`step_type` (in a plugin module) or in the
``layerflow.step_types`` entry-point group. The function's signature is the step's schema:
it gets ``input`` (the ``input_from`` value), every key of ``params``, and every other key of
the step that it names; :func:`check_call` holds a step to that before anything runs, and
:func:`call_step` makes the callable its task runs.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .. import acp
from ..errors import closest, did_you_mean
from .imports import import_module
from .model import Context
from .problems import short
from .reading import Path_
from .schema import ACP_WORDS, COMMON_KEYS, expect, foreign
from .templates import ITEM, check_when, render_all, step_values

__all__ = [
    "call_step",
    "check_call",
    "describe",
    "resolve",
    "signature_keys",
    "step_type",
    "step_types",
    "wants",
]

_STEP_TYPES: dict[str, Callable[..., Any]] = {}
_ENTRY_POINTS_LOADED = False

#: (the task's keyword arguments) -> (the step's, keywords to add): ai-content-pipeline's
#: data flow (``formats.chain_inputs``)
Prepare = Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]


def step_type(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a function as the step type ``name`` (``type: name`` in a pipeline)."""
    if not isinstance(name, str) or not name or name == "parallel_group":
        raise ValueError(f"a step type needs a name other than 'parallel_group', got {name!r}")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _STEP_TYPES[name] = fn
        return fn

    return register


def step_types() -> dict[str, Callable[..., Any]]:
    """Every registered step type, the ``layerflow.step_types`` entry points included."""
    global _ENTRY_POINTS_LOADED
    if not _ENTRY_POINTS_LOADED:
        _ENTRY_POINTS_LOADED = True
        from importlib.metadata import entry_points

        for ep in entry_points(group="layerflow.step_types"):
            with contextlib.suppress(Exception):  # a broken plugin must not hide the others
                _STEP_TYPES.setdefault(ep.name, ep.load())
    return dict(_STEP_TYPES)


def resolve(
    ctx: Context, kind: str, target: Any, at: Path_, step: str | None
) -> Callable[..., Any] | None:
    """The function a ``type:`` or ``uses:`` (``kind``) names, or None (and a problem)."""
    if not isinstance(target, str) or not target:
        ctx.problems.add(at, f"{kind} must be text, got {short(target)}", step)
        return None
    if kind == "type":
        if target == "parallel_group":
            return None
        types = step_types()
        fn = types.get(target)
        if fn is None:
            known = ", ".join(sorted(types)) or "none"
            ctx.problems.add(
                at,
                f"unknown step type {target!r}.{did_you_mean(target, types)} Registered: "
                f"{known}. Register one with @layerflow.step_type({target!r}) in a module, and "
                f"give the module with --plugin MODULE or name it under plugins: (from "
                f"Python: load_pipeline(path, plugins=['MODULE']))",
                step,
            )
        return fn
    module_name, _, attr = target.partition(":")
    if not attr or not module_name:
        ctx.problems.add(at, f"uses must look like 'module:function', got {target!r}", step)
        return None
    try:
        module = import_module(ctx, module_name)
    except Exception as e:
        ctx.problems.add(
            at, f"cannot import {module_name!r} for uses: {type(e).__name__}: {e}", step
        )
        return None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        names = [n for n in dir(module) if not n.startswith("_")]
        hint = closest(attr, names)
        tip = f" Did you mean {module_name}:{hint}?" if hint else ""
        ctx.problems.add(at, f"module {module_name!r} has no function {attr!r}.{tip}", step)
        return None
    return fn


def check_call(
    ctx: Context, fn: Callable[..., Any], raw: dict[str, Any], kind: str, at: Path_, name: str
) -> None:
    """A ``uses:``/``type:`` step's keys and params against its function's signature."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: whatever it takes is its own check
    accepted = signature_keys(fn)
    suggested: set[str] = set()  # a typo already reported is not also "missing"
    extra = [k for k in raw if k not in COMMON_KEYS and k != kind]
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    for key in extra:
        if key in accepted or var_kw:
            continue
        if key == "retry_count" and ctx.acp is None:
            ctx.problems.add((*at, key), foreign(ctx, key, f"step {name!r}"), name)
            continue
        if key in ACP_WORDS:  # that format's own key: what to change is the function
            tip = f" Give {describe(fn)[:-2]} a parameter {key!r} to receive it."
        else:
            hint = closest(str(key), [*accepted, *COMMON_KEYS])
            suggested.add(hint or "")
            tip = f" Did you mean {hint!r}?" if hint else ""
        ctx.problems.add(
            (*at, key), f"unknown key {key!r}: {describe(fn)} does not accept it.{tip}", name
        )
    params = raw.get("params")
    if params is None:
        params = {}
    elif not expect(ctx.problems, params, dict, (*at, "params"), "params", name):
        params = {}
        raw.pop("params", None)
    for key in params:
        if key not in accepted and not var_kw:
            hint = closest(str(key), accepted)
            suggested.add(hint or "")
            tip = f" Did you mean {hint!r}?" if hint else ""
            ctx.problems.add(
                (*at, "params", key),
                f"params has {key!r}, which {describe(fn)} does not accept.{tip}",
                name,
            )
    given = set(params) | set(extra) | {"input"}  # input: upstream or flow input
    if ctx.acp is not None:  # the file's run settings, a prompt_generation's prompt
        given |= {k for k in acp.CONFIG_KEYS if k in ctx.config} | {"generated_prompt"}
    missing = [
        p.name
        for p in sig.parameters.values()
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in given
        and p.name not in suggested
    ]
    if missing:
        ctx.problems.add(
            at,
            f"{describe(fn)} needs {', '.join(repr(m) for m in missing)}: give "
            f"{'it' if len(missing) == 1 else 'them'} under params: or as a key of the step",
            name,
        )


def signature_keys(fn: Callable[..., Any]) -> list[str]:
    """The names ``fn`` takes by keyword (none when it has no signature)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def describe(fn: Callable[..., Any]) -> str:
    """``module.function()``, as problems name a step's function."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}()"


def wants(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` has a parameter ``name`` without a default."""
    try:
        p = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):
        return False
    return p is not None and p.default is inspect.Parameter.empty


def call_step(
    name: str,
    fn: Callable[..., Any],
    d: dict[str, Any],
    item: str = ITEM,
    defaults: Mapping[str, Any] | None = None,
    prepare: Prepare | None = None,
) -> Callable[..., Any]:
    """A ``uses:``/``type:`` step: the function, with input, params and its own keys
    (``item``: the argument that holds a foreach element); ``defaults``: keywords the step's
    own keys and params override; ``prepare``: turns the task's arguments into the step's
    (ai-content-pipeline's data flow) and adds keywords."""
    extra = {k: v for k, v in d.items() if k not in COMMON_KEYS and k not in ("uses", "type")}
    extra.pop("__group__", None)
    params = d.get("params") or {}
    accepted = set(signature_keys(fn))
    when = d.get("when")
    literal = isinstance(d.get("foreach"), list)

    def step(**kwargs: Any) -> Any:
        added: dict[str, Any] = {}
        if prepare is not None:
            kwargs, added = prepare(kwargs)
        values = step_values(kwargs, item, literal)
        if when is not None:
            check_when(name, when, values)
        call = {**(defaults or {}), **added}
        call.update({k: render_all(v, values) for k, v in {**extra, **params}.items()})
        if "input" in values and "input" in accepted:
            call.setdefault("input", values["input"])
        return fn(**call)

    step.__name__ = name
    shown = ", ".join(f"{k}={v!r}" for k, v in {**extra, **params}.items())
    # what a report shows of the step (a function's attribute, which mypy does not model)
    step.detail = f"{describe(fn)[:-2]}({shown})"  # type: ignore[attr-defined]
    return step
