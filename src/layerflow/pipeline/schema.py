"""The schema: the keys a pipeline, its settings, a step and a group may have, and what each
value must be (one table, :data:`FIELDS`), with the checks that report what breaks it.

A key the schema does not know gets the closest known key ("Did you mean"), unless it is a
key of ai-content-pipeline's format: then the problem says why the file is read as
layerflow's and how to read it in that format instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .. import acp
from ..errors import did_you_mean
from ..options import SECONDS, SECONDS_OR_0, number
from .model import Context
from .problems import Problems, short
from .reading import Path_

__all__ = [
    "ACP_WORDS",
    "COMMON_KEYS",
    "FIELDS",
    "GROUP_KEYS",
    "RUN_KEYS",
    "SETTINGS_KEYS",
    "TOP_KEYS",
    "expect",
    "fields",
    "foreign",
    "unknown_keys",
]

TOP_KEYS = ("name", "description", "version", "prompt", "inputs", "plugins", "settings", "steps")
SETTINGS_KEYS = (
    "parallel",
    "max_workers",
    "fail_fast",
    "timeout",
    "rate_limit_delay",
    "mode",
    "order",
    "resources",
    "rate_limits",
    "budget",
)
COMMON_KEYS = (
    "name",
    "description",
    "enabled",
    "input_from",
    "needs",
    "params",
    "retries",
    "retry_delay",
    "timeout",
    "priority",
    "resources",
    "rate_limit",
    "cache",
    "foreach",
    "when",
    "max_workers",  # of a foreach step's elements
)
#: every key of ai-content-pipeline's format: one is never "Did you mean" another key
ACP_WORDS = frozenset(
    (*acp.TOP_KEYS, *acp.GROUP_PARAMS, "type", "model", "params", "enabled", "retry_count")
)
RUN_KEYS = (*COMMON_KEYS, "run", "shell", "env", "cwd")
GROUP_KEYS = (
    "type",
    "name",
    "description",
    "enabled",
    "steps",
    "max_workers",
    "fail_fast",
    "timeout",
)


def _seconds(v: Any) -> bool:
    return number(v, at_least=0)


def _text_map(v: Any) -> bool:
    return isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(x, str | int | float) and not isinstance(x, bool)
        for k, x in v.items()
    )


def _unit_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and number(x) for k, x in v.items())


def _flag(v: Any) -> bool:
    return isinstance(v, bool)


def _text(v: Any) -> bool:
    return isinstance(v, str) and v != ""


#: key -> (is the value acceptable?, what it must be): the one type check for every key of
#: a step, a group and settings that the run's own options do not check (options.problem)
FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (_text, "non-empty text"),
    "description": (lambda v: isinstance(v, str), "text"),
    "enabled": (_flag, "true or false"),
    "input_from": (_text, "a step's name"),
    "params": (lambda v: isinstance(v, dict), "a mapping of names to values"),
    "retries": (lambda v: number(v, whole=True, at_least=0), "a whole number >= 0"),
    "priority": (lambda v: number(v, whole=True), "a whole number"),
    "timeout": (lambda v: _seconds(v) and v > 0, SECONDS),
    "retry_delay": (_seconds, SECONDS_OR_0),
    "rate_limit_delay": (_seconds, SECONDS_OR_0),
    "cache": (_flag, "true or false"),
    "shell": (_flag, "true or false"),
    "fail_fast": (_flag, "true or false"),
    "parallel": (_flag, "true or false"),
    "max_workers": (lambda v: number(v, whole=True, at_least=1), "a whole number >= 1"),
    "retry_count": (lambda v: number(v, whole=True, at_least=0), "a whole number >= 0"),
    "output_dir": (_text, "a folder"),
    "temp_dir": (_text, "a folder"),
    "cleanup_temp": (_flag, "true or false"),
    "save_intermediates": (_flag, "true or false"),
    "input_type": (lambda v: v in acp.INPUT_TYPES, "one of " + ", ".join(acp.INPUT_TYPES)),
    "merge_strategy": (
        lambda v: v in acp.MERGE_STRATEGIES,
        "one of " + ", ".join(acp.MERGE_STRATEGIES),
    ),
    "env": (_text_map, "a mapping of names to text"),
    "cwd": (_text, "a folder"),
    "resources": (_unit_map, "a mapping of pool names to numbers"),
    "rate_limit": (
        lambda v: _text(v) or _unit_map(v),
        "a rate limit's name or a mapping of names to costs",
    ),
    "order": (lambda v: v in ("sequence", "dataflow"), "sequence or dataflow"),
    "when": (
        lambda v: isinstance(v, str | bool),
        "a template such as '{{inputs.NAME}}', or true or false",
    ),
    "rate_limits": (
        lambda v: isinstance(v, dict),
        "a mapping of limit names to rates like '80/min' or {adaptive: {max: 64}}",
    ),
}


def unknown_keys(
    ctx: Context,
    data: Mapping[str, Any],
    known: Iterable[str],
    at: Path_,
    what: str,
    step: str | None = None,
) -> None:
    """A problem for each key of ``data`` (``what``, at ``at``) that is not in ``known``."""
    known = tuple(known)
    for key in data:
        if key in known:
            continue
        # a key that reading the file in that format would accept
        if ctx.acp is None and (
            key in acp.ONLY_KEYS
            or key == "retry_count"
            or (key in ("model", "params") and what.startswith("parallel_group"))
        ):
            ctx.problems.add((*at, key), foreign(ctx, key, what), step)
            continue
        tip = did_you_mean(str(key), known) if key not in ACP_WORDS else ""
        tip = tip or f" Expected one of: {', '.join(known)}."
        ctx.problems.add((*at, key), f"unknown key {key!r} in {what}.{tip}", step)


def foreign(ctx: Context, key: Any, what: str) -> str:
    """The problem with a key of ai-content-pipeline's format in a file read as
    layerflow's: why the file is read so, and what to do."""
    why = ctx.why_layerflow
    if why == "it has inputs:":
        fix = "remove inputs: to read it in that format (its input is then prompt:, "
        fix += "input_image: or input_video:)"
    elif "format:" in why:
        fix = "drop format: layerflow to read it in that format"
    else:
        fix = f"add format: {acp.FORMAT} to read it in that format"
    return (
        f"{key!r} in {what} is a key of ai-content-pipeline's format, and this file is read "
        f"as layerflow's because {why}: {fix}, or write it in layerflow's format (inputs:, "
        f"settings:, retries:, input_from, groups with steps:)"
    )


def expect(
    problems: Problems,
    value: Any,
    types: type | tuple[type, ...],
    at: Path_,
    what: str,
    step: str | None = None,
) -> bool:
    """Whether ``value`` is one of ``types`` (a bool only where ``bool`` is named); a
    problem if not."""
    wanted = types if isinstance(types, tuple) else (types,)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in wanted)
    if not ok:
        names = " or ".join(t.__name__ for t in wanted)
        names = names.replace("str", "text").replace("dict", "mapping")
        problems.add(at, f"{what} must be {names}, got {short(value)}", step)
    return ok


def fields(
    problems: Problems,
    data: dict[str, Any],
    keys: Iterable[str],
    at: Path_,
    step: str | None = None,
    prefix: str = "",
) -> None:
    """Check the values of ``keys`` (those that ``data`` has) against :data:`FIELDS`; a bad
    value is dropped from ``data``: reported once, and never used."""
    for key in keys:
        spec = FIELDS.get(key)
        if spec is None or key not in data:
            continue
        ok, need = spec
        value = data[key]
        if not ok(value):
            problems.add((*at, key), f"{prefix}{key} must be {need}, got {short(value)}", step)
            del data[key]
