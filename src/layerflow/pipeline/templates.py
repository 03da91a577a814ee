"""Templates: ``{{input}}``, ``{{inputs.NAME}}``, ``{{steps.NAME.output}}``, and in a foreach
step ``{{item}}`` and ``{{index}}``.

At load time :func:`scan` finds what each step's templates read (the steps and inputs it
depends on) and reports a template that names nothing; at run time :func:`render_all` fills
them in from the task's keyword arguments (:func:`template_values`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import Skip
from .model import Context, Step
from .problems import short
from .reading import Path_

__all__ = [
    "INDEX",
    "ITEM",
    "REF",
    "TEMPLATE",
    "check_when",
    "read_foreach",
    "render",
    "render_all",
    "scan",
    "step_values",
    "template_values",
]

TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
#: what a template may name: groups 2 (an input), 3 (a step) and 4 (item or index)
REF = re.compile(r"^(input|inputs\.([A-Za-z_]\w*)|steps\.([^.\s]+)\.output|(item|index))$")

#: the keyword arguments of a ``foreach`` step's element: its element and its index
ITEM, INDEX = "__item__", "__index__"

_FALSE = frozenset(("", "false", "0", "no", "off", "none", "null"))

# a step's keys whose text is never a template
_NOT_TEMPLATES = ("name", "description", "needs", "input_from", "__group__", "uses", "type")


# --- load time: what a step's templates read -----------------------------------------------


def scan(ctx: Context, step: Step, at: Path_) -> None:
    """Record which steps and inputs ``step``'s templates read (a foreach's own template
    is its source, read by :func:`read_foreach`); report those that name nothing, or the
    list a foreach step iterates over where one element is meant."""
    d = step.data
    name = step.name
    source = step.foreach or ("", "")
    skip = (*_NOT_TEMPLATES, "foreach") if isinstance(d.get("foreach"), str) else _NOT_TEMPLATES
    for where, text in _strings_at({k: v for k, v in d.items() if k not in skip}, at):
        for m in TEMPLATE.finditer(text):
            ref = m.group(1)
            parsed = REF.match(ref)
            if parsed is None:
                ctx.problems.add(
                    where,
                    f"unknown template {{{{{ref}}}}}: use {{{{input}}}}, {{{{inputs.NAME}}}} "
                    f"or {{{{steps.NAME.output}}}} (and in a foreach step {{{{item}}}} and "
                    f"{{{{index}}}})",
                    name,
                )
                continue
            if parsed.group(4):
                _element_template(ctx, step, ref, where, at)
                continue
            # the list the step iterates over: each call gets one element of it
            read = parsed.group(2) or ("input" if ref == "input" else None)
            if source == ("step", parsed.group(3)) or (
                source == ("input", read) and (parsed.group(2) or "input_from" not in d)
            ):
                ctx.problems.add(
                    where,
                    f"{{{{{ref}}}}} is one element of the list this step iterates over, "
                    f"not the list: use {{{{item}}}}",
                    name,
                )
            if parsed.group(2):
                step.input_refs.add(parsed.group(2))
                ctx.input_lines.setdefault(parsed.group(2), (name, ctx.problems.line_at(where)))
            elif parsed.group(3):
                step.refs.add(parsed.group(3))
            elif "input_from" not in d:
                step.uses_input = True
                ctx.input_lines.setdefault("input", (name, ctx.problems.line_at(where)))


def read_foreach(ctx: Context, step: Step, at: Path_) -> None:
    """``foreach:``: a step's list, a list input, or a literal list."""
    d = step.data
    if "foreach" not in d:
        return
    value = d["foreach"]
    where = (*at, "foreach")
    step.foreach_line = ctx.problems.line_at(where)
    if isinstance(value, list):
        step.foreach = ("list", "")
        return
    whole = TEMPLATE.fullmatch(value.strip()) if isinstance(value, str) else None
    parsed = REF.match(whole.group(1)) if whole is not None else None
    if parsed is not None and parsed.group(3):
        step.foreach = ("step", parsed.group(3))
    elif parsed is not None and parsed.group(2):
        step.foreach = ("input", parsed.group(2))
    else:
        ctx.problems.add(
            where,
            "foreach must be '{{steps.NAME.output}}' (a step's list), '{{inputs.NAME}}' "
            f"(a list input) or a list, got {short(value)}",
            step.name,
        )
        step.foreach = ("bad", "")  # still a foreach step: its {{item}} is no problem
        del d["foreach"]


def _element_template(ctx: Context, step: Step, ref: str, where: Path_, at: Path_) -> None:
    """``{{item}}`` or ``{{index}}``: only in a foreach step, and not in its list."""
    if step.foreach is None:
        ctx.problems.add(
            where,
            f"{{{{{ref}}}}} is only defined in a foreach step: add foreach: (a step's "
            f"list, a list input or a list) to this step",
            step.name,
        )
    elif where[len(at)] == "foreach":
        ctx.problems.add(
            where,
            f"{{{{{ref}}}}} inside foreach: the list cannot name its own elements",
            step.name,
        )


def _strings_at(value: Any, at: Path_) -> list[tuple[Path_, str]]:
    """Every text inside ``value`` with its path (below ``at``)."""
    out: list[tuple[Path_, str]] = []
    stack = [(value, at)]
    while stack:  # the document's size is bounded by the reader
        v, where = stack.pop()
        if isinstance(v, str):
            out.append((where, v))
        elif isinstance(v, dict):
            stack.extend((x, (*where, k)) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((x, (*where, k)) for k, x in enumerate(v))
    return out[::-1]


# --- run time: filling them in ----------------------------------------------------------------


def render(text: str, values: Mapping[str, Any], quote: Callable[[str], str] = str) -> str:
    """``text`` with each ``{{ref}}`` replaced by ``quote(str(values[ref]))``."""

    def sub(m: re.Match[str]) -> str:
        return quote(str(values[m.group(1).strip()]))

    return TEMPLATE.sub(sub, text)


#: the keyword arguments of a ``foreach`` step's element: its element and its index
ITEM, INDEX = "__item__", "__index__"

_FALSE = frozenset(("", "false", "0", "no", "off", "none", "null"))


def template_values(kwargs: Mapping[str, Any], item: str = ITEM) -> dict[str, Any]:
    """The values templates may name, from a step function's keyword arguments; ``item``:
    the argument that holds a ``foreach`` element (a flow input's name, when it iterates
    over that input)."""
    values: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key == "__input__":
            values["input"] = value
        elif key.startswith("__step__"):
            values[f"steps.{key[8:]}.output"] = value
        elif key == INDEX:
            values["index"] = value
        elif key != ITEM:
            values[f"inputs.{key}"] = value
            if key == "input" and "input" not in values:
                values["input"] = value
    if item in kwargs:
        values["item"] = kwargs[item]
    return values


def render_all(value: Any, values: Mapping[str, Any]) -> Any:
    """``value`` with every text in it rendered; a text that is only ``{{item}}`` or
    ``{{index}}`` is that value itself, not its text (a foreach element may be a number, a
    mapping, a list)."""
    if isinstance(value, str):
        whole = TEMPLATE.fullmatch(value)
        if whole is not None and whole.group(1) in ("item", "index"):
            return values[whole.group(1)]
        return render(value, values)
    if isinstance(value, dict):
        return {k: render_all(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [render_all(v, values) for v in value]
    return value


def step_values(kwargs: Mapping[str, Any], item: str, literal: bool) -> dict[str, Any]:
    """``template_values`` for a step; an element of a literal ``foreach`` list has its own
    templates (``{{inputs.NAME}}``, ...) rendered first."""
    values = template_values(kwargs, item)
    if literal and "item" in values:
        values["item"] = render_all(values["item"], values)
    return values


def check_when(step: str, when: Any, values: Mapping[str, Any]) -> None:
    """Raise ``Skip`` unless ``when``, rendered, is true: anything but empty, ``false``,
    ``0``, ``no``, ``off``, ``none`` or ``null`` (any case, blanks around ignored)."""
    text = render(when, values) if isinstance(when, str) else str(when)
    if text.strip().lower() in _FALSE:
        shown = f"{when!r} is {text!r}" if text != when else repr(when)
        raise Skip(f"step {step!r}: when {shown}")
