"""Reading ``steps:``: each entry a step, or a ``parallel_group`` of steps, checked and
turned into a :class:`Step` (a step with problems of its own is left out, and noted in
``ctx.dropped`` so that references to it are not reported again).

Step kinds: ``run:`` (a command, ``commands.py``), ``uses:``/``type:`` (a function,
``steptypes.py``), and ``type: parallel_group`` with ``steps:`` (and, in
ai-content-pipeline's form, ``params: {parallel_steps: [...]}``).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from .. import acp
from .commands import script_templates
from .model import Context, Step
from .problems import short
from .reading import Path_
from .schema import COMMON_KEYS, GROUP_KEYS, RUN_KEYS, expect, fields, unknown_keys
from .steptypes import check_call, resolve
from .templates import read_foreach, scan

__all__ = ["entries"]


def entries(ctx: Context, steps_data: list[Any]) -> list[list[Step]]:
    """Top-level entries, each a list of steps (a group's steps, or one step)."""
    out: list[list[Step]] = []
    n = 0  # enabled top-level steps so far: an unnamed one is step_N_TYPE in that format
    for k, raw in enumerate(steps_data):
        at = ("steps", k)
        if not expect(ctx.problems, raw, dict, at, f"step {k + 1}"):
            continue
        if raw.get("enabled") is False:
            continue
        n += 1
        if raw.get("type") == "parallel_group":
            out.append(_group(ctx, dict(raw), at, n))
            kept = {s.name for s in out[-1]}
            children = _members(raw)
            for child in children if isinstance(children, list) else []:
                name = child.get("name") if isinstance(child, dict) else None
                if isinstance(name, str) and name not in kept:
                    ctx.dropped.add(name)
        else:
            made = None
            if ctx.acp is not None and "name" not in raw:
                made = (acp.step_name(n, raw.get("type")), "step_N_TYPE")
            step = _step(ctx, dict(raw), at, None, made)
            if step is not None:
                out.append([step])
            elif isinstance(raw.get("name"), str):
                ctx.dropped.add(raw["name"])
    return out


def _members(raw: Mapping[str, Any]) -> Any:
    """A parallel_group's steps: ``steps:`` (the guide's form) or, in
    ai-content-pipeline's own form, ``params: {parallel_steps: [...]}``."""
    params = raw.get("params")
    if "steps" not in raw and isinstance(params, dict) and "parallel_steps" in params:
        return params["parallel_steps"]
    return raw.get("steps")


def _group(ctx: Context, raw: dict[str, Any], at: Path_, n: int = 0) -> list[Step]:
    shown = raw.get("name")
    label = f"parallel_group {shown!r}: " if isinstance(shown, str) else "a parallel_group's "
    keys = GROUP_KEYS if ctx.acp is None else (*GROUP_KEYS, "model", "params")
    fields(ctx.problems, raw, keys, at, prefix=label)
    name = raw.get("name") or (
        f"group{at[-1] + 1}" if ctx.acp is None else acp.step_name(n, "parallel_group")
    )
    if name in ctx.group_names:
        ctx.problems.add((*at, "name"), f"two parallel_groups are named {name!r}")
    ctx.group_names.add(name)
    # in messages: a name layerflow gave the group says so
    group = f"parallel_group {name!r}" + (
        "" if "name" in raw else " (layerflow's name for this unnamed group)"
    )
    unknown_keys(ctx, raw, keys, at, group)
    config = {key: raw[key] for key in ("max_workers", "fail_fast", "timeout") if key in raw}
    strategy = "collect_all"
    where = "steps"
    if ctx.acp is not None and "params" in raw:
        params = raw["params"]
        if not expect(ctx.problems, params, dict, (*at, "params"), f"{group}: params"):
            return []
        unknown_keys(ctx, params, acp.GROUP_PARAMS, (*at, "params"), f"the params of {group}")
        fields(ctx.problems, params, acp.GROUP_PARAMS, (*at, "params"), prefix=f"{group}: params.")
        if "steps" in raw and "parallel_steps" in params:
            ctx.problems.add(
                (*at, "steps"), f"{group} has both steps: and params.parallel_steps: keep one"
            )
        elif "steps" not in raw:
            where = "params.parallel_steps"
        if "max_workers" in params and "max_workers" in raw:
            ctx.problems.add(
                (*at, "params", "max_workers"),
                f"{group} has max_workers twice (and under params:): keep one",
            )
        # parallel_extension.py: max_workers 3 unless params say otherwise
        config.setdefault("max_workers", params.get("max_workers", acp.DEFAULT_GROUP_WORKERS))
        strategy = params.get("merge_strategy", strategy)
    children = _members(raw)
    if not isinstance(children, list) or not children:
        at_list = (*at, "steps") if where == "steps" else (*at, "params", "parallel_steps")
        form = "" if ctx.acp is None else " (or params: {parallel_steps: [...]})"
        ctx.problems.add(at_list, f"{group} needs a list of steps{form}")
        return []
    if shown is not None and "name" not in raw:
        return []  # its name was bad: its steps would be reported under the wrong one
    steps = []
    for k, child in enumerate(children):
        cat = (*at, *where.split("."), k)
        if not expect(ctx.problems, child, dict, cat, f"step {k + 1} of group {name!r}"):
            continue
        if child.get("enabled") is False:
            continue
        if child.get("type") == "parallel_group":
            ctx.problems.add(cat, "a parallel_group cannot contain another parallel_group")
            continue
        made = None
        if ctx.acp is not None and "name" not in child:
            made = (acp.member_name(n, k + 1, child.get("type")), "step_N_K_TYPE")
        step = _step(ctx, dict(child), cat, name, made)
        if step is not None:
            step.data["__group__"] = config
            step.strategy = strategy
            steps.append(step)
    return steps


def _step(
    ctx: Context,
    raw: dict[str, Any],
    at: Path_,
    group: str | None,
    made: tuple[str, str] | None = None,
) -> Step | None:
    """One step; ``made``: the name layerflow gives it when it has none, and how that
    name is made (for a collision's message)."""
    kinds = [k for k in ("run", "uses", "type") if k in raw]
    shown = raw.get("name") if isinstance(raw.get("name"), str) else None
    if "name" in raw and not (isinstance(raw["name"], str) and raw["name"]):
        ctx.problems.add((*at, "name"), f"a step's name must be text, got {short(raw['name'])}")
        return None
    if len(kinds) != 1:
        what = "none" if not kinds else " and ".join(kinds)
        ctx.problems.add(
            at, f"a step needs exactly one of run:, uses: or type: (got {what})", shown
        )
        return None
    kind = kinds[0]
    line = ctx.problems.lines.get(at)
    if made is not None:
        shown = shown or made[0]
    if ctx.acp is not None and "retry_count" in raw:
        # read as there: chain.py keeps it, and nothing in that project retries with it
        fields(ctx.problems, raw, ("retry_count",), at, shown)
        raw.pop("retry_count", None)
    if kind == "run":
        name = shown or f"step{at[-1] + 1}"
        step = _run_step(ctx, raw, at, name, line, group)
        if step is None:
            return None
    else:
        target = raw[kind]
        fn = resolve(ctx, kind, target, (*at, kind), shown)
        name = shown or (str(target).split(":")[-1] if kind == "uses" else str(target))
        if fn is None:
            return None
        check_call(ctx, fn, raw, kind, at, name)
        step = Step(name, line, raw, "call", group, fn=fn)
    if made is not None:
        step.made = (
            f"layerflow names the unnamed step at line {line} {made[0]!r} ({made[1]}, as "
            f"ai-content-pipeline numbers its steps)"
        )
    elif "name" not in raw:
        how = "after its position" if kind == "run" else f"after its {kind}:"
        step.made = f"layerflow names the unnamed step at line {line} {name!r} ({how})"
    _common(ctx, step, at)
    return step


def _run_step(
    ctx: Context, raw: dict[str, Any], at: Path_, name: str, line: int | None, group: str | None
) -> Step | None:
    """A ``run:`` step: its command splits into arguments, and no template of it lands in
    a script that another interpreter runs."""
    unknown_keys(ctx, raw, RUN_KEYS, at, f"step {name!r}", None)
    if not expect(ctx.problems, raw["run"], str, (*at, "run"), "run", name):
        return None
    try:
        words = shlex.split(raw["run"])
    except ValueError as e:
        ctx.problems.add((*at, "run"), f"the command cannot be split into arguments: {e}", name)
        return None
    if not words:
        ctx.problems.add((*at, "run"), "the command is empty", name)
        return None
    if not raw.get("shell"):
        for message in script_templates(words):
            ctx.problems.add((*at, "run"), message, name)
    return Step(name, line, raw, "run", group)


def _common(ctx: Context, step: Step, at: Path_) -> None:
    """The keys every step may have: ``needs``, the field table, ``foreach`` (and its
    ``max_workers``), and what its templates read."""
    d = step.data
    name = step.name
    if "needs" in d:
        needs = d["needs"]
        if isinstance(needs, str):
            d["needs"] = [needs]
        elif not isinstance(needs, list) or not all(isinstance(x, str) for x in needs):
            ctx.problems.add(
                (*at, "needs"), f"needs must be a list of step names, got {short(needs)}", name
            )
            d["needs"] = []
    fields(ctx.problems, d, RUN_KEYS if step.kind == "run" else COMMON_KEYS, at, name)
    read_foreach(ctx, step, at)
    if "max_workers" in d and step.foreach is None:
        ctx.problems.add(
            (*at, "max_workers"),
            "max_workers bounds how many elements of a foreach step run at once, and this "
            "step has no foreach:",
            name,
        )
    scan(ctx, step, at)
