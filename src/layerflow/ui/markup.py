"""HTML built by a helper that always escapes: every name, value, log line and traceback
reaches the page as text, never as markup (a task that returns ``<script>`` shows it)."""

from __future__ import annotations

import html
from collections.abc import Iterable
from string import Template
from typing import Any

__all__ = ["Markup", "esc", "fill", "join", "tag"]


class Markup(str):
    """Text that is HTML already (made by :func:`tag`, :func:`esc` or the report's own
    escaping functions): :func:`esc` leaves it as it is."""

    __slots__ = ()


def esc(value: Any) -> Markup:
    """``value`` as HTML text: escaped, unless it is :class:`Markup` already."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[Any]) -> Markup:
    """The parts one after another, each escaped unless it is :class:`Markup`."""
    return Markup("".join(esc(p) for p in parts))


def tag(name: str, *children: Any, **attrs: Any) -> Markup:
    """``<name attrs>children</name>``: attribute values and text children escaped.
    ``class_`` is ``class``, ``data_x`` is ``data-x``; an attribute that is None or False
    is left out, True is written bare."""
    shown = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        key = key.rstrip("_").replace("_", "-")
        shown.append(f" {key}" if value is True else f' {key}="{esc(value)}"')
    return Markup(f"<{name}{''.join(shown)}>{join(children)}</{name}>")


def fill(template: str, **values: Any) -> Markup:
    """A page template (``$name`` placeholders) filled with escaped values."""
    return Markup(Template(template).substitute({k: esc(v) for k, v in values.items()}))
