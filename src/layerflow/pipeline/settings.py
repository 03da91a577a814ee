"""A pipeline's ``settings:``: checked, and turned into the options its runs start from.

The options a run takes as they are (``max_workers``, ``fail_fast``, ``timeout``, ``mode``,
``budget``) are checked by the run's own rules (``options.problem``), with the run's words;
the rest by the schema. ``parallel: false`` is ``mode: sequential``; ``rate_limit_delay``
becomes a rate limit every step takes one unit of; a group's and a foreach step's
``max_workers`` become resource pools.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from ..adaptive import Adaptive
from ..errors import InvalidOptionError
from ..options import problem
from .model import Context, Step
from .problems import short
from .schema import SETTINGS_KEYS, expect, fields, unknown_keys

__all__ = ["RUN_OPTIONS", "check_settings", "foreach_pool", "run_settings"]

#: settings that are run options as they are, checked as ``flow.run`` checks them
RUN_OPTIONS = ("fail_fast", "max_workers", "timeout", "mode", "budget")


def check_settings(ctx: Context, data: Any) -> dict[str, Any]:
    """The file's ``settings:``, checked; a bad value is reported and left out."""
    if not expect(ctx.problems, data, dict, ("settings",), "settings"):
        return {}
    data = dict(data)
    unknown_keys(ctx, data, SETTINGS_KEYS, ("settings",), "settings")
    out: dict[str, Any] = {}
    for key in RUN_OPTIONS:
        if key not in data:
            continue
        value = data[key]
        text = problem(key, value) if value is not None else f"{key} must not be empty"
        if text is not None:
            ctx.problems.add(("settings", key), f"settings.{text}")
        else:
            out[key] = value
    rest = [k for k in SETTINGS_KEYS if k not in RUN_OPTIONS]
    fields(ctx.problems, data, rest, ("settings",), prefix="settings.")
    for key in rest:
        if key == "rate_limits" and key in data:
            out[key] = {name: _rate_limit(ctx, name, v) for name, v in data[key].items()}
        elif key in data:
            out[key] = data[key]
    return out


def _rate_limit(ctx: Context, name: Any, value: Any) -> Any:
    """A rate limit's value: a rate like '80/min', or ``{adaptive: {start: 4, max: 64}}``
    for an ``lf.Adaptive``."""
    at = ("settings", "rate_limits", name)
    if not isinstance(name, str) or not name:
        ctx.problems.add(at, f"a rate limit's name must be text, got {short(name)}")
        return value
    if not isinstance(value, dict):
        return value  # a rate: checked with the run's options
    options = value.get("adaptive")
    if set(value) != {"adaptive"} or not isinstance(options, dict | None):
        ctx.problems.add(
            at,
            f"settings.rate_limits.{name} must be a rate like '80/min' or "
            f"{{adaptive: {{start: 4, max: 64}}}}, got {short(value)}",
        )
        return value
    if options and not all(isinstance(k, str) for k in options):
        ctx.problems.add(at, f"settings.rate_limits.{name}.adaptive has a key that is not text")
        return value
    try:
        return Adaptive(**(options or {}))
    except InvalidOptionError as e:  # before TypeError: it is one too
        ctx.problems.add(at, f"settings.rate_limits.{name}: {e}")
    except TypeError:
        known = ", ".join(f.name for f in dataclasses.fields(Adaptive))
        ctx.problems.add(
            at, f"settings.rate_limits.{name}.adaptive takes {known}, got {short(options)}"
        )
    return value


def foreach_pool(step: str) -> str:
    """The resource pool that bounds a foreach step's elements (its ``max_workers``)."""
    return f"foreach:{step}"


def run_settings(settings: dict[str, Any], steps: Iterable[Step]) -> dict[str, Any]:
    """The run options a pipeline's runs start from: its settings, and the pools of its
    groups and foreach steps."""
    out = {key: settings[key] for key in RUN_OPTIONS if key in settings}
    if settings.get("parallel") is False:
        out["mode"] = "sequential"
    limits = dict(settings.get("rate_limits") or {})
    delay = settings.get("rate_limit_delay") or 0
    if delay:
        limits["rate_limit_delay"] = (1, float(delay))
    if limits:
        out["rate_limits"] = limits
    resources = dict(settings.get("resources") or {})
    for s in steps:
        group = s.data.get("__group__") or {}
        if "max_workers" in group:
            resources[f"group:{s.group}"] = group["max_workers"]
        if "max_workers" in s.data:  # a foreach step's: each element holds one unit
            resources[foreach_pool(s.name)] = s.data["max_workers"]
    if resources:
        out["resources"] = resources
    return out
