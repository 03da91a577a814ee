"""HTML and SVG built by helpers that always escape: every name, value, error, log line and
traceback reaches a page as text, never as markup (a task named ``<script>`` shows it).

Used by the HTML report (``report/``), the notebook view (``notebook.py``) and the pages of
``layerflow ui`` (``ui/``). Only :class:`Markup` passes through unescaped: these helpers
make it, and the package wraps its own files in it (a page's template, its CSS)."""

from __future__ import annotations

import html
import inspect
import re
from collections.abc import Callable, Iterable
from string import Template
from typing import Any, cast

__all__ = ["Markup", "esc", "fill", "join", "num", "pattern", "tag", "void"]


class Markup(str):
    """Text that is HTML already (made by :func:`tag`, :func:`void`, :func:`pattern`,
    :func:`esc` or :func:`num`): :func:`esc` leaves it as it is."""

    __slots__ = ()


_escape = html.escape  # five str.replace in C: faster than a search for what to replace


def _text(value: Any) -> str:
    """``value`` as escaped text; :class:`Markup` as it is."""
    if isinstance(value, Markup):
        return value
    text = value if type(value) is str else str(value)
    return _escape(text, quote=True)


def esc(value: Any) -> Markup:
    """``value`` as HTML text: escaped, unless it is :class:`Markup` already."""
    if isinstance(value, Markup):
        return value
    return Markup(_text(value))


def num(value: float, spec: str = ".6g") -> Markup:
    """A number for an attribute, written compactly (``spec`` as in ``format``: ``".2f"``
    for a pixel, ``".9g"`` for a time): a report holds thousands of them."""
    if not isinstance(value, int | float):  # a number's digits need no escaping; text does
        raise TypeError(f"num() takes a number, not {type(value).__name__}: {value!r}")
    return Markup(format(value, spec))


def join(parts: Iterable[Any]) -> Markup:
    """The parts one after another, each escaped unless it is :class:`Markup`."""
    return Markup("".join(_escaped(parts if isinstance(parts, list | tuple) else list(parts))))


_ONLY_MARKUP = {Markup}


def _escaped(parts: list[Any] | tuple[Any, ...]) -> list[Any] | tuple[Any, ...]:
    """The parts escaped; many that are all markup (an SVG's 10,000 bars) are checked in C,
    not one by one, and given back as they are."""
    if len(parts) > 8 and set(map(type, parts)) <= _ONLY_MARKUP:
        return parts
    return [
        part
        if type(part) is Markup
        else _escape(part, quote=True)
        if type(part) is str
        else _text(part)
        for part in parts
    ]


_names: dict[str, str] = {}  # attribute names as written, by keyword (built once each)


def _attrs(attrs: dict[str, Any]) -> str:
    """`` name="value"`` for each attribute: ``class_`` is ``class``, ``data_x`` is
    ``data-x``; None or False leaves it out, True writes it bare; a float is written with
    six significant digits (:func:`num` for others), anything else as escaped text."""
    shown = ""  # concatenation, type checks inline: a report makes 100,000s of these
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        kind = type(value)
        if kind is str:
            text = _escape(value, quote=True)
        elif kind is int or kind is Markup:  # digits, or markup already
            text = str.__str__(value) if kind is Markup else str(value)
        elif value is True:
            shown += " " + (_names.get(key) or _name(key))
            continue
        elif kind is float:
            text = format(value, ".6g")
        else:
            text = _text(value)
        shown += " " + (_names.get(key) or _name(key)) + '="' + text + '"'
    return shown


def _name(key: str) -> str:
    name = _names[key] = key.rstrip("_").replace("_", "-")
    return name


def tag(name: str, *children: Any, **attrs: Any) -> Markup:
    """``<name attrs>children</name>``: attribute values and text children escaped (see
    :func:`_attrs` for how attributes are named and written)."""
    head = "<" + name + _attrs(attrs) + ">" if attrs else "<" + name + ">"
    # one join: a picture's 10,000 bars are copied once here, not once per concatenation
    return Markup("".join([head, *_escaped(children), "</" + name + ">"]))


def void(name: str, **attrs: Any) -> Markup:
    """``<name attrs/>``: an element without content, self-closed as SVG writes it
    (``<rect .../>``, ``<line .../>``, ``<path .../>``); attributes as in :func:`tag`."""
    return Markup("<" + name + _attrs(attrs) + "/>")


_HOLE = re.compile("\0([0-9]+)\0")
_NUMBER_FORMAT = re.compile(r"(\.[0-9]+)?[dfge]")  # printf's: "%.2f" is as fast as it gets
# a pattern's globals, builtins included: a parameter may be called ``type`` or ``str``
_SCOPE = {
    "_M": Markup,
    "_e": _escape,
    "_t": _text,
    "_template": "",
    "_type": type,
    "_str": str,
    "_int": int,
}


def pattern(build: Callable[..., Markup], **formats: str) -> Callable[..., Markup]:
    """Markup made by the thousand (a report's bars, its table's rows): ``build`` makes it
    once with :func:`tag` and :func:`void`, a hole for each of its parameters; the function
    returned fills the holes with escaped values, several times faster than building it
    again. Values are given in the order of ``build``'s parameters (its keyword-only ones
    keep their defaults); :class:`Markup` is put in as it is.

    ``formats`` give a parameter a number format (``x=".2f"``; ``d``, ``f``, ``g`` or
    ``e`` with a precision): its value must then be a number (text there is a TypeError,
    never text in the page)."""
    func = getattr(build, "func", build)  # a functools.partial's function
    name = getattr(func, "__name__", None) or repr(build)
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(build).parameters.values()
    names = [p.name for p in params if p.kind in positional]
    if not names:
        raise ValueError(f"{name} has no parameter to fill: use the markup it makes as it is")
    if set(formats) - set(names):
        raise ValueError(f"formats for no parameter of {name}: {sorted(set(formats) - set(names))}")
    for key, spec in formats.items():
        if not _NUMBER_FORMAT.fullmatch(spec):
            raise ValueError(f"{name}: {key}={spec!r} is not a number format such as '.2f'")
    # a hole is a NUL-fenced number: no constant of the package's markup has a NUL
    skeleton = str(build(*[Markup(f"\0{k}\0") for k in range(len(names))]))
    pieces = _HOLE.split(skeleton.replace("%", "%%"))
    order = [int(k) for k in pieces[1::2]]  # the holes as they come (one may come twice)
    unused = [names[k] for k in range(len(names)) if k not in order]
    if unused:
        raise ValueError(f"{name} does not put {', '.join(unused)} in its markup")
    pieces[1::2] = ["%" + formats.get(names[k], "s") for k in order]
    template = "".join(pieces)
    # The filling function is written out for these parameters (as namedtuple writes its
    # class): a few times faster than a generic one, and a report makes 10,000s of these.
    # Its source holds only the parameters' names (identifiers) and the holes' order; the
    # markup itself stays data.
    if any(n.startswith("_") for n in names):  # the function's own globals start with _
        raise ValueError(f"{name}: a parameter's name may not start with _: {names}")
    fname = name if name.isidentifier() and name not in _SCOPE else "fill"
    texts = sorted({names[k] for k in order if names[k] not in formats})
    lines = [f"def {fname}({', '.join(names)}):"]
    lines += [
        f"    if _type({n}) is not _M and _type({n}) is not _int:\n"
        f"        {n} = _e({n}, True) if _type({n}) is _str else _t({n})"
        for n in texts
    ]
    lines.append(f"    return _M(_template % ({''.join(names[k] + ', ' for k in order)}))")
    scope = {**_SCOPE, "_template": template}
    exec("\n".join(lines), scope)  # noqa: S102 (our own source: see above)
    filler = cast(Callable[..., Markup], scope[fname])
    filler.__doc__ = f"{name}'s markup, its holes filled with escaped values."
    return filler


def fill(template: str, **values: Any) -> Markup:
    """A page template (``$name`` placeholders) filled with escaped values."""
    return Markup(Template(template).substitute({k: esc(v) for k, v in values.items()}))
