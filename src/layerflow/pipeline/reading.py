"""Reading a YAML file that may be hostile: PyYAML's safe loader, with bounds.

A pipeline file is small and shallow, so anything far beyond that is refused with the line
where it happens, before it can cost time or memory:

- bytes that are not UTF-8 text, or a NUL (with the line, which PyYAML does not give);
- nesting deeper than ``MAX_DEPTH`` (PyYAML would recurse until ``RecursionError``);
- aliases that expand to more than ``MAX_NODES`` values ("billion laughs": a few hundred
  bytes of anchors that refer to anchors, which any walk over the document multiplies out),
  and aliases that contain themselves;
- integers of more than ``MAX_DIGITS`` digits, and scalars a tag cannot read (``!!int ''``).

``read_yaml`` gives the document and the line of every key and item, by path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import PipelineError

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_DIGITS", "MAX_NODES", "read_yaml"]

MAX_BYTES = 10_000_000
MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_DIGITS = 100

Path_ = tuple[Any, ...]


class _Refused(yaml.MarkedYAMLError):
    """A bound was crossed: ``problem`` says which, ``problem_mark`` where."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses deep nesting while it composes, and reports a scalar it
    cannot read as a YAML error at its line instead of a bare ``ValueError``."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Refused(
                    f"this is nested more than {MAX_DEPTH} levels deep; a pipeline never "
                    "needs that",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception:  # ValueError, IndexError...: a scalar its tag cannot read
            value = repr(node.value)
            value = value if len(value) <= 60 else value[:57] + "..."
            raise _Refused(
                f"cannot read {value} as {node.tag.rsplit(':', 1)[-1]}", node.start_mark
            ) from None

    def construct_yaml_int(self, node: Any) -> Any:
        digits = sum(ch.isalnum() for ch in str(node.value))  # 0x and 0o forms too
        if digits > MAX_DIGITS:
            raise _Refused(
                f"this number has {digits} digits; numbers here have at most {MAX_DIGITS}",
                node.start_mark,
            )
        return super().construct_yaml_int(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _check_expansion(root: Any) -> None:
    """Refuse aliases that contain themselves or expand to more than ``MAX_NODES`` values.
    Each distinct node is sized once (an alias is the same node object as its anchor), so
    this costs the file's size, not the expansion's."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(c)] for c in children)
            if total > MAX_NODES:
                raise _Refused(
                    f"aliases here expand to more than {MAX_NODES:,} values (an 'alias bomb'); "
                    "write the values out, or use fewer levels of aliases",
                    node.start_mark,
                )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _Refused("this alias refers to a value that contains it", node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise _Refused("this alias refers to a value that contains it", child.start_mark)
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, max(position, 0)) + 1


def read_yaml(path: Path) -> tuple[Any, dict[Path_, int], list[tuple[str, int | None, str]]]:
    """The document in ``path``, the line of every key/item (by path), and its duplicate
    keys as problems (the loader reports them with its own); a :class:`PipelineError` with
    the file and line for anything unreadable or out of bounds."""
    file = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise PipelineError(
                [(file, None, f"this file is {size:,} bytes; a pipeline is at most {MAX_BYTES:,}")]
            )
        data = path.read_bytes()
    except OSError as e:
        raise PipelineError([(file, None, f"cannot read it: {e.strerror or e}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise PipelineError(
            [(file, line, f"this is not UTF-8 text: byte {data[e.start]:#04x} cannot be read")]
        ) from None
    if "\x00" in text:
        raise PipelineError(
            [(file, _line_of(text, text.index("\x00")), "this line holds a NUL byte (\\0)")]
        )
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node)
        lines, dupes = _lines(file, node)  # before constructing: a merge (<<) rewrites it
        document = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        raise _as_problem(file, e) from None
    except yaml.YAMLError as e:  # a reader error: a position, not a mark
        position = getattr(e, "position", None)
        at = _line_of(text, position) if isinstance(position, int) else None
        raise PipelineError([(file, at, f"this is not valid YAML: {e}")]) from None
    except RecursionError:  # a bound above should have caught it; never a traceback
        raise PipelineError([(file, None, "this is nested too deeply to read")]) from None
    finally:
        loader.dispose()
    return document, lines, dupes


def _as_problem(file: str, e: yaml.MarkedYAMLError) -> PipelineError:
    problem = e.problem or str(e)
    mark, context_mark = e.problem_mark, e.context_mark
    line = mark.line + 1 if mark is not None else None
    if isinstance(e, _Refused):
        return PipelineError([(file, line, problem)])
    if context_mark is not None and (line is None or context_mark.line + 1 < line):
        # an unclosed bracket or quote: where it was opened, not where the parser gave up
        context = e.context or "this"
        problem = f"{problem} ({context} line {context_mark.line + 1} is never closed)"
        line = context_mark.line + 1
    return PipelineError([(file, line, f"this is not valid YAML: {problem}")])


def _lines(file: str, root: Any) -> tuple[dict[Path_, int], list[tuple[str, int | None, str]]]:
    """The line of every key and item by path, and a problem for each duplicate key."""
    lines: dict[Path_, int] = {}
    dupes: list[tuple[str, int | None, str]] = []
    if root is None:
        return lines, dupes
    stack: list[tuple[Any, Path_]] = [(root, ())]
    while stack:  # bounded by MAX_NODES, checked above
        n, at = stack.pop()
        lines.setdefault(at, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            seen: set[Any] = set()
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else repr(k.value)
                if key in seen and key != "<<":
                    dupes.append((file, k.start_mark.line + 1, f"duplicate key {key!r}"))
                seen.add(key)
                lines[(*at, key)] = k.start_mark.line + 1
                stack.append((v, (*at, key)))
        elif isinstance(n, yaml.SequenceNode):
            for k, v in enumerate(n.value):
                stack.append((v, (*at, k)))
    return lines, dupes
