"""YAML pipelines: the schema, the loader, step types and shell steps.

``load_pipeline`` reads a file with PyYAML's safe loader, checks it against the schema
(collecting every problem, each with file, line, step and the closest valid key or name),
and builds an ordinary :class:`Flow`: one engine, not two. Step kinds:

- ``run:`` a command. The template is split into arguments first and each argument is
  rendered afterwards, so a value can never inject shell syntax (``shell: true`` opts into
  a shell, with every value quoted). The value is stdout, stripped.
- ``uses: "module:function"`` and ``type: NAME`` (registered with ``@step_type``, a
  plugin module, or the ``layerflow.step_types`` entry-point group). The function's
  signature is the step's schema: it gets ``input`` (the ``input_from`` value), every key
  of ``params``, and every other key of the step that it names.
- ``type: parallel_group`` with ``steps:``, and its own ``max_workers``, ``fail_fast``
  and ``timeout`` (for the whole group).

A file in ai-content-pipeline's own format (it says ``format: ai-content-pipeline``, or its
shape says so: :func:`acp.reason`) is read as that project reads it: its input from
``prompt``/``input_image``/``input_video``, each step fed what the one before passes on,
``step_N_TYPE`` names, groups with ``params: {parallel_steps, max_workers, merge_strategy}``
(the rules are in ``acp.py``; ``_Loader.chain`` and ``chain_inputs`` wire them into the flow).

Any step may carry ``foreach:`` (a step's list, a list input or a literal list): it becomes
one task with ``map=`` (over the step, the input, or the list in a private param), its
element in ``{{item}}`` and its index in ``{{index}}`` (``Task.element_index``); its
``max_workers`` is a resource pool of its own, one unit per element, as a group's is. ``when:``
is rendered by the step's function at run time, which raises ``lf.Skip`` when it is false.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import os
import re
import shlex
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import acp
from ..adaptive import Adaptive
from ..errors import (
    CommandFailed,  # noqa: F401 (re-exported)
    GroupTimeout,  # noqa: F401 (re-exported)
    InvalidOptionError,
    LayerflowError,
    MissingInputError,
    PipelineError,  # noqa: F401 (re-exported)
    PipelineInputError,
    closest,
    safe_str,
)
from ..flow import Flow
from ..graph import TaskGroup
from ..options import number, problem
from .commands import (
    INDEX,
    ITEM,
    TEMPLATE,
    _Command,
    check_when,
    render_all,
    script_templates,
    step_values,
    stop_commands,
)
from .reading import Path_, read_yaml

__all__ = [
    "CommandFailed",
    "Pipeline",
    "PipelineError",
    "load_pipeline",
    "step_type",
    "step_types",
]


# --- step types -----------------------------------------------------------------------------

_STEP_TYPES: dict[str, Callable[..., Any]] = {}
_ENTRY_POINTS_LOADED = False


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


# --- the schema ---------------------------------------------------------------------------------

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
_REF = re.compile(r"^(input|inputs\.([A-Za-z_]\w*)|steps\.([^.\s]+)\.output|(item|index))$")


def _seconds(v: Any) -> bool:
    return number(v, at_least=0)


def _text_map(v: Any) -> bool:
    return isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(x, str | int | float) and not isinstance(x, bool)
        for k, x in v.items()
    )


def _unit_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and number(x) for k, x in v.items())


# key -> (is the value acceptable?, what it must be): the one type check for every key of
# a step, a group and settings that the run's own options do not check (options.problem)
_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str) and v != "", "non-empty text"),
    "description": (lambda v: isinstance(v, str), "text"),
    "enabled": (lambda v: isinstance(v, bool), "true or false"),
    "input_from": (lambda v: isinstance(v, str) and v != "", "a step's name"),
    "params": (lambda v: isinstance(v, dict), "a mapping of names to values"),
    "retries": (lambda v: number(v, whole=True, at_least=0), "a whole number >= 0"),
    "priority": (lambda v: number(v, whole=True), "a whole number"),
    "timeout": (lambda v: _seconds(v) and v > 0, "seconds > 0"),
    "retry_delay": (_seconds, "seconds >= 0"),
    "rate_limit_delay": (_seconds, "seconds >= 0"),
    "cache": (lambda v: isinstance(v, bool), "true or false"),
    "shell": (lambda v: isinstance(v, bool), "true or false"),
    "fail_fast": (lambda v: isinstance(v, bool), "true or false"),
    "parallel": (lambda v: isinstance(v, bool), "true or false"),
    "max_workers": (lambda v: number(v, whole=True, at_least=1), "a whole number >= 1"),
    "retry_count": (lambda v: number(v, whole=True, at_least=0), "a whole number >= 0"),
    "output_dir": (lambda v: isinstance(v, str) and v != "", "a folder"),
    "temp_dir": (lambda v: isinstance(v, str) and v != "", "a folder"),
    "cleanup_temp": (lambda v: isinstance(v, bool), "true or false"),
    "save_intermediates": (lambda v: isinstance(v, bool), "true or false"),
    "input_type": (lambda v: v in acp.INPUT_TYPES, "one of " + ", ".join(acp.INPUT_TYPES)),
    "merge_strategy": (
        lambda v: v in acp.MERGE_STRATEGIES,
        "one of " + ", ".join(acp.MERGE_STRATEGIES),
    ),
    "env": (_text_map, "a mapping of names to text"),
    "cwd": (lambda v: isinstance(v, str) and v != "", "a folder"),
    "resources": (_unit_map, "a mapping of pool names to numbers"),
    "rate_limit": (
        lambda v: isinstance(v, str) and v != "" or _unit_map(v),
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


@dataclass
class _Step:
    """One step, validated, before it becomes a task."""

    name: str
    line: int | None
    data: dict[str, Any]
    kind: str  # "run", "call" or "group"
    group: str | None = None
    fn: Callable[..., Any] | None = None
    refs: set[str] = field(default_factory=set)  # step names its templates use
    input_refs: set[str] = field(default_factory=set)  # flow inputs its templates use
    uses_input: bool = False  # reads the flow input "input" (no input_from)
    # foreach: ("step", NAME), ("input", NAME) or ("list", ""); None: not a foreach step
    foreach: tuple[str, str] | None = None
    foreach_line: int | None = None
    # ai-content-pipeline's format: where the step's input comes from (see _source_names),
    # None for layerflow's rule (input_from, else the flow input)
    source: Any = None
    prompt_from: str | None = None  # the prompt_generation step whose prompt it may ask for
    strategy: str = "collect_all"  # a group member's: what its group passes on
    made: str | None = None  # how layerflow made up the name of an unnamed step, for people


class _Loader:
    def __init__(self, path: Path, plugins: Iterable[str]) -> None:
        self.path = path
        self.file = str(path)
        self.extra_plugins = list(plugins)
        self.problems: list[tuple[str, int | None, str]] = []
        self.lines: dict[Path_, int] = {}
        self.group_names: set[str] = set()
        self.task_groups: dict[str, TaskGroup] = {}
        self.import_paths: set[str] = set()  # folders its modules were imported from
        # flow input -> (the first step whose templates use it, the line)
        self.input_lines: dict[str, tuple[str, int | None]] = {}
        self.dropped: set[str] = set()  # steps refused for their own problems: no cascade
        # ai-content-pipeline's format: why the file is read in it (None: layerflow's), why
        # not (for a key of that format in a layerflow file), its top-level settings, and
        # the top-level key the pipeline's input comes from
        self.acp: str | None = None
        self.why_layerflow = ""
        self.config: dict[str, Any] = {}
        self.input_key: str | None = None

    def _task_group(self, name: str, config: Mapping[str, Any]) -> TaskGroup:
        """The one ``TaskGroup`` a parallel_group's steps share."""
        group = self.task_groups.get(name)
        if group is None:
            timeout = config.get("timeout")
            group = self.task_groups[name] = TaskGroup(
                name,
                fail_fast=config.get("fail_fast"),
                timeout=float(timeout) if timeout is not None else None,
            )
        return group

    # problems ---------------------------------------------------------------------------

    def problem(self, at: Path_, message: str, step: str | None = None) -> None:
        line = None
        probe = at
        while probe and line is None:  # the closest enclosing node with a line
            line = self.lines.get(probe)
            probe = probe[:-1]
        where = f"step {step!r}: " if step else ""
        self.problems.append((self.file, line or self.lines.get(()), where + message))

    def unknown_keys(
        self,
        data: Mapping[str, Any],
        known: Iterable[str],
        at: Path_,
        what: str,
        step: str | None = None,
    ) -> None:
        known = tuple(known)
        for key in data:
            if key not in known:
                # a key that reading the file in that format would accept
                if self.acp is None and (
                    key in acp.ONLY_KEYS
                    or key == "retry_count"
                    or (key in ("model", "params") and what.startswith("parallel_group"))
                ):
                    self.problem((*at, key), self.foreign(key, what), step)
                    continue
                hint = closest(str(key), known) if key not in ACP_WORDS else None
                tip = (
                    f" Did you mean {hint!r}?" if hint else f" Expected one of: {', '.join(known)}."
                )
                self.problem((*at, key), f"unknown key {key!r} in {what}.{tip}", step)

    def foreign(self, key: Any, what: str) -> str:
        """The problem with a key of ai-content-pipeline's format in a file read as
        layerflow's: why the file is read so, and what to do."""
        why = self.why_layerflow
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
        self,
        value: Any,
        types: type | tuple[type, ...],
        at: Path_,
        what: str,
        step: str | None = None,
    ) -> bool:
        if isinstance(value, bool) and bool not in (
            types if isinstance(types, tuple) else (types,)
        ):
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            names = " or ".join(
                t.__name__ for t in (types if isinstance(types, tuple) else (types,))
            )
            names = names.replace("str", "text").replace("dict", "mapping").replace("list", "list")
            self.problem(at, f"{what} must be {names}, got {_short(value)}", step)
        return ok

    def fields(
        self,
        data: dict[str, Any],
        keys: Iterable[str],
        at: Path_,
        step: str | None = None,
        prefix: str = "",
    ) -> None:
        """Check the values of ``keys`` (those that ``data`` has) against the field table; a
        bad value is dropped from ``data``: reported once, and never used."""
        for key in keys:
            spec = _FIELDS.get(key)
            if spec is None or key not in data:
                continue
            ok, need = spec
            value = data[key]
            if not ok(value):
                self.problem((*at, key), f"{prefix}{key} must be {need}, got {_short(value)}", step)
                del data[key]

    # loading ------------------------------------------------------------------------------

    def load(self) -> Pipeline:
        if not self.path.is_file():
            raise PipelineError([(self.file, None, "no such file")])
        data, self.lines, self.problems = read_yaml(self.path)
        if not isinstance(data, dict):
            raise PipelineError(
                [
                    (
                        self.file,
                        1,
                        "a pipeline is a mapping with at least 'steps:', got "
                        f"{type(data).__name__}",
                    )
                ]
            )
        data = dict(data)
        self.read_format(data)
        if self.acp is not None:
            known = (*acp.TOP_KEYS, "format", "version", "plugins", "settings")
            if "inputs" in data:
                self.problem(
                    ("inputs",),
                    "inputs: is layerflow's format, and this file says format: "
                    "ai-content-pipeline, whose input is prompt:, input_image: or input_video: "
                    "(or --set input=VALUE)",
                )
                data.pop("inputs")
        else:
            known = (*TOP_KEYS, "format")
        self.unknown_keys(data, known, (), "the pipeline")
        self.fields(data, ("name", "description"), ())
        name = data.get("name")
        inputs = data.get("inputs")
        if inputs is None:
            inputs = {}
        elif not isinstance(inputs, dict):
            self.expect(inputs, dict, ("inputs",), "inputs")
            inputs = {}
        bad = [k for k in inputs if not isinstance(k, str) or not k.isidentifier()]
        for k in bad:
            self.problem(("inputs", k), f"an input's name must be a word, got {k!r}")
        if self.acp is not None:
            inputs = self.acp_input(data)
        elif "prompt" in data and "input" not in inputs:
            inputs = {**inputs, "input": data["prompt"]}
        settings = self.settings(data.get("settings") or {})
        plugins = data.get("plugins") or []
        if self.expect(plugins, list, ("plugins",), "plugins"):
            for k, module in enumerate([*plugins, *self.extra_plugins]):
                self.import_plugin(module, ("plugins", k))
        steps_data = data.get("steps")
        if steps_data is None:
            self.problem((), "the pipeline has no 'steps:'")
            raise PipelineError(self.problems)
        if not self.expect(steps_data, list, ("steps",), "steps") or not steps_data:
            if isinstance(steps_data, list):
                self.problem(("steps",), "steps is empty")
            raise PipelineError(self.problems)
        entries = self.entries(steps_data)
        if self.acp is not None:
            self.chain(entries)
        # names and references are checked even when steps had problems of their own, so
        # that one round reports every kind of problem
        self.check_names(entries, inputs)
        if self.problems:
            raise PipelineError(self._sorted())
        flow = self.build(name, inputs, settings, entries)
        if not self.problems:
            self.check_graph(flow, entries)
        if self.problems:
            raise PipelineError(self._sorted())
        return flow

    def read_format(self, data: dict[str, Any]) -> None:
        """Which format the file is in: what it says (``format:``), else its shape
        (:func:`acp.reason`)."""
        if "format" not in data:
            self.acp = acp.reason(data)
            self.why_layerflow = (
                "it has inputs:"
                if "inputs" in data
                else "nothing in it is only ai-content-pipeline's (such as input_image:, "
                "output_dir: or a parallel_group's params:)"
            )
            return
        declared = data["format"]
        if declared == acp.FORMAT:
            self.acp = f"it says format: {acp.FORMAT}"
        elif declared == "layerflow":
            self.why_layerflow = "it says format: layerflow"
        else:
            self.problem(
                ("format",),
                f"format must be 'layerflow' or {acp.FORMAT!r}, got {_short(declared)}",
            )
            self.acp = acp.reason(data)
            self.why_layerflow = "it has inputs:" if "inputs" in data else "of its shape"

    def acp_input(self, data: dict[str, Any]) -> dict[str, Any]:
        """ai-content-pipeline's top-level settings (checked, kept in ``self.config``) and
        the pipeline's input, ``input``: the ``prompt``, ``input_image`` or ``input_video``
        that the first step's input kind asks for (none: ``--set input=VALUE`` gives it, as
        ``--input-text`` does there)."""
        self.fields(data, (*acp.CONFIG_KEYS, "input_type"), ())
        self.config = {k: data[k] for k in acp.TOP_KEYS[2:-1] if k in data}
        self.input_key = acp.input_key(data)
        value = data.get(self.input_key)
        return {"input": value} if value else {}

    def _sorted(self) -> list[tuple[str, int | None, str]]:
        """Problems in file order, each once."""
        unique = list(dict.fromkeys(self.problems))
        return sorted(unique, key=lambda p: (p[0] != self.file, p[1] or 0))

    def check_graph(self, flow: Pipeline, entries: list[list[_Step]]) -> None:
        """Cycles (through needs/input_from) and other graph problems, with their lines."""
        from ..errors import CycleError

        lines = {s.name: s.line for entry in entries for s in entry}
        try:
            Flow.plan(flow)  # the structure only: inputs may still come with --set
        except LayerflowError as e:
            for p in getattr(e, "problems", [e]):
                if isinstance(p, CycleError):
                    self.problems.append(
                        (
                            self.file,
                            lines.get(p.cycle[0]),
                            f"steps form a cycle: {' -> '.join(p.cycle)}",
                        )
                    )
                else:
                    task = getattr(p, "task", None)
                    self.problems.append((self.file, lines.get(task), safe_str(p)))

    def chain(self, entries: list[list[_Step]]) -> None:
        """ai-content-pipeline's data flow: each step's input is what the enabled step (or
        group) before it passes on, the first one's the pipeline's input; a step with
        ``input_from`` or ``needs`` keeps layerflow's rule. A source is ``("flow",)``,
        ``("step", NAME)`` (that step's output, as :func:`acp.passed_on` reads it) or
        ``("merge", STRATEGY, [sources])`` (a group's, as :func:`acp.merge` makes it)."""
        current: tuple[Any, ...] = ("flow",)
        prompt: str | None = None
        for entry in entries:
            if not entry:
                continue
            outs = []
            for s in entry:
                d = s.data
                if "input_from" in d:
                    own: tuple[Any, ...] = ("step", d["input_from"])
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

    def import_plugin(self, module: Any, at: Path_) -> None:
        if not isinstance(module, str) or not module:
            self.problem(at, f"a plugin is a module name, got {_short(module)}")
            return
        folder = str(self.path.parent.resolve())
        self.import_paths.add(folder)
        try:
            with on_import_path([folder]):
                try:
                    importlib.import_module(module)
                except ModuleNotFoundError as e:
                    if not _in_cwd(module, e):
                        raise
                    # the folder the command runs in, as `python -m` would look (last on
                    # the path: a file there named after a standard module shadows nothing)
                    sys.path.append(os.getcwd())
                    importlib.import_module(module)
        except Exception as e:
            self.problem(
                at, f"plugin module {module!r} could not be imported: {type(e).__name__}: {e}"
            )

    def settings(self, data: Any) -> dict[str, Any]:
        if not self.expect(data, dict, ("settings",), "settings"):
            return {}
        data = dict(data)
        self.unknown_keys(data, SETTINGS_KEYS, ("settings",), "settings")
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("fail_fast", "max_workers", "timeout", "mode", "budget"):  # as flow.run
                text = problem(key, value) if value is not None else f"{key} must not be empty"
                if text is not None:
                    self.problem(("settings", key), f"settings.{text}")
                else:
                    out[key] = value
        self.fields(data, SETTINGS_KEYS, ("settings",), prefix="settings.")
        for key in ("parallel", "rate_limit_delay", "order", "resources", "rate_limits"):
            if key not in data:
                continue
            if key == "rate_limits":
                out[key] = {
                    name: self.rate_limit(name, v) for name, v in data["rate_limits"].items()
                }
            else:
                out[key] = data[key]
        return out

    def rate_limit(self, name: Any, value: Any) -> Any:
        """A rate limit's value: a rate like '80/min', or ``{adaptive: {start: 4, max: 64}}``
        for an ``lf.Adaptive``."""
        at = ("settings", "rate_limits", name)
        if not isinstance(name, str) or not name:
            self.problem(at, f"a rate limit's name must be text, got {_short(name)}")
            return value
        if not isinstance(value, dict):
            return value  # a rate: checked with the run's options
        options = value.get("adaptive")
        if set(value) != {"adaptive"} or not isinstance(options, dict | None):
            self.problem(
                at,
                f"settings.rate_limits.{name} must be a rate like '80/min' or "
                f"{{adaptive: {{start: 4, max: 64}}}}, got {_short(value)}",
            )
            return value
        if options and not all(isinstance(k, str) for k in options):
            self.problem(at, f"settings.rate_limits.{name}.adaptive has a key that is not text")
            return value
        try:
            return Adaptive(**(options or {}))
        except InvalidOptionError as e:  # before TypeError: it is one too
            self.problem(at, f"settings.rate_limits.{name}: {e}")
        except TypeError:
            known = ", ".join(f.name for f in dataclasses.fields(Adaptive))
            self.problem(
                at, f"settings.rate_limits.{name}.adaptive takes {known}, got {_short(options)}"
            )
        return value

    def entries(self, steps_data: list[Any]) -> list[list[_Step]]:
        """Top-level entries, each a list of steps (a group's steps, or one step)."""
        out: list[list[_Step]] = []
        n = 0  # enabled top-level steps so far: an unnamed one is step_N_TYPE in that format
        for k, raw in enumerate(steps_data):
            at = ("steps", k)
            if not self.expect(raw, dict, at, f"step {k + 1}"):
                continue
            if raw.get("enabled") is False:
                continue
            n += 1
            if raw.get("type") == "parallel_group":
                out.append(self.group(dict(raw), at, n))
                kept = {s.name for s in out[-1]}
                children = self.members(raw)
                for child in children if isinstance(children, list) else []:
                    name = child.get("name") if isinstance(child, dict) else None
                    if isinstance(name, str) and name not in kept:
                        self.dropped.add(name)
            else:
                made = None
                if self.acp is not None and "name" not in raw:
                    made = (acp.step_name(n, raw.get("type")), "step_N_TYPE")
                step = self.step(dict(raw), at, None, made)
                if step is not None:
                    out.append([step])
                elif isinstance(raw.get("name"), str):
                    self.dropped.add(raw["name"])
        return out

    @staticmethod
    def members(raw: Mapping[str, Any]) -> Any:
        """A parallel_group's steps: ``steps:`` (the guide's form) or, in
        ai-content-pipeline's own form, ``params: {parallel_steps: [...]}``."""
        params = raw.get("params")
        if "steps" not in raw and isinstance(params, dict) and "parallel_steps" in params:
            return params["parallel_steps"]
        return raw.get("steps")

    def group(self, raw: dict[str, Any], at: Path_, n: int = 0) -> list[_Step]:
        shown = raw.get("name")
        label = f"parallel_group {shown!r}: " if isinstance(shown, str) else "a parallel_group's "
        keys = GROUP_KEYS if self.acp is None else (*GROUP_KEYS, "model", "params")
        self.fields(raw, keys, at, prefix=label)
        name = raw.get("name") or (
            f"group{at[-1] + 1}" if self.acp is None else acp.step_name(n, "parallel_group")
        )
        if name in self.group_names:
            self.problem((*at, "name"), f"two parallel_groups are named {name!r}")
        self.group_names.add(name)
        # in messages: a name layerflow gave the group says so
        group = f"parallel_group {name!r}" + (
            "" if "name" in raw else " (layerflow's name for this unnamed group)"
        )
        self.unknown_keys(raw, keys, at, group)
        config = {key: raw[key] for key in ("max_workers", "fail_fast", "timeout") if key in raw}
        strategy = "collect_all"
        where = "steps"
        if self.acp is not None and "params" in raw:
            params = raw["params"]
            if not self.expect(params, dict, (*at, "params"), f"{group}: params"):
                return []
            self.unknown_keys(params, acp.GROUP_PARAMS, (*at, "params"), f"the params of {group}")
            self.fields(
                params,
                acp.GROUP_PARAMS,
                (*at, "params"),
                prefix=f"{group}: params.",
            )
            if "steps" in raw and "parallel_steps" in params:
                self.problem(
                    (*at, "steps"),
                    f"{group} has both steps: and params.parallel_steps: keep one",
                )
            elif "steps" not in raw:
                where = "params.parallel_steps"
            if "max_workers" in params and "max_workers" in raw:
                self.problem(
                    (*at, "params", "max_workers"),
                    f"{group} has max_workers twice (and under params:): keep one",
                )
            # parallel_extension.py: max_workers 3 unless params say otherwise
            config.setdefault("max_workers", params.get("max_workers", acp.DEFAULT_GROUP_WORKERS))
            strategy = params.get("merge_strategy", strategy)
        children = self.members(raw)
        if not isinstance(children, list) or not children:
            at_list = (*at, "steps") if where == "steps" else (*at, "params", "parallel_steps")
            form = "" if self.acp is None else " (or params: {parallel_steps: [...]})"
            self.problem(at_list, f"{group} needs a list of steps{form}")
            return []
        if shown is not None and "name" not in raw:
            return []  # its name was bad: its steps would be reported under the wrong one
        steps = []
        for k, child in enumerate(children):
            cat = (*at, *where.split("."), k)
            if not self.expect(child, dict, cat, f"step {k + 1} of group {name!r}"):
                continue
            if child.get("enabled") is False:
                continue
            if child.get("type") == "parallel_group":
                self.problem(cat, "a parallel_group cannot contain another parallel_group")
                continue
            made = None
            if self.acp is not None and "name" not in child:
                made = (acp.member_name(n, k + 1, child.get("type")), "step_N_K_TYPE")
            step = self.step(dict(child), cat, name, made)
            if step is not None:
                step.data["__group__"] = config
                step.strategy = strategy
                steps.append(step)
        return steps

    def step(
        self,
        raw: dict[str, Any],
        at: Path_,
        group: str | None,
        made: tuple[str, str] | None = None,
    ) -> _Step | None:
        """One step; ``made``: the name layerflow gives it when it has none, and how that
        name is made (for a collision's message)."""
        kinds = [k for k in ("run", "uses", "type") if k in raw]
        shown = raw.get("name") if isinstance(raw.get("name"), str) else None
        if "name" in raw and not (isinstance(raw["name"], str) and raw["name"]):
            self.problem((*at, "name"), f"a step's name must be text, got {_short(raw['name'])}")
            return None
        if len(kinds) != 1:
            what = "none" if not kinds else " and ".join(kinds)
            self.problem(
                at, f"a step needs exactly one of run:, uses: or type: (got {what})", shown
            )
            return None
        kind = kinds[0]
        line = self.lines.get(at)
        if made is not None:
            shown = shown or made[0]
        if self.acp is not None and "retry_count" in raw:
            # read as there: chain.py keeps it, and nothing in that project retries with it
            self.fields(raw, ("retry_count",), at, shown)
            raw.pop("retry_count", None)
        if kind == "run":
            name = shown or f"step{at[-1] + 1}"
            self.unknown_keys(raw, RUN_KEYS, at, f"step {name!r}", None)
            if not self.expect(raw["run"], str, (*at, "run"), "run", name):
                return None
            try:
                words = shlex.split(raw["run"])
            except ValueError as e:
                self.problem((*at, "run"), f"the command cannot be split into arguments: {e}", name)
                return None
            if not words:
                self.problem((*at, "run"), "the command is empty", name)
                return None
            if not raw.get("shell"):
                for message in script_templates(words):
                    self.problem((*at, "run"), message, name)
            step = _Step(name, line, raw, "run", group)
        else:
            target = raw[kind]
            fn = self.resolve(kind, target, (*at, kind), shown)
            name = shown or (str(target).split(":")[-1] if kind == "uses" else str(target))
            if fn is None:
                return None
            self.check_call(fn, raw, kind, at, name)
            step = _Step(name, line, raw, "call", group, fn=fn)
        if made is not None:
            step.made = (
                f"layerflow names the unnamed step at line {line} {made[0]!r} ({made[1]}, as "
                f"ai-content-pipeline numbers its steps)"
            )
        elif "name" not in raw:
            how = "after its position" if kind == "run" else f"after its {kind}:"
            step.made = f"layerflow names the unnamed step at line {line} {name!r} ({how})"
        self.common(step, at)
        return step

    def check_call(
        self, fn: Callable[..., Any], raw: dict[str, Any], kind: str, at: Path_, name: str
    ) -> None:
        """A ``uses:``/``type:`` step's keys and params against its function's signature."""
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return  # a builtin without a signature: whatever it takes is its own check
        accepted = self.signature_keys(fn)
        suggested: set[str] = set()  # a typo already reported is not also "missing"
        extra = [k for k in raw if k not in COMMON_KEYS and k != kind]
        var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        for key in extra:
            if key not in accepted and not var_kw:
                hint = closest(str(key), [*accepted, *COMMON_KEYS])
                if key == "retry_count" and self.acp is None:
                    self.problem((*at, key), self.foreign(key, f"step {name!r}"), name)
                    continue
                if key in ACP_WORDS:  # that format's own key: what to change is the function
                    hint = None
                    tip = f" Give {_describe(fn)[:-2]} a parameter {key!r} to receive it."
                else:
                    tip = f" Did you mean {hint!r}?" if hint else ""
                suggested.add(hint or "")
                self.problem(
                    (*at, key),
                    f"unknown key {key!r}: {_describe(fn)} does not accept it.{tip}",
                    name,
                )
        params = raw.get("params")
        if params is None:
            params = {}
        elif self.expect(params, dict, (*at, "params"), "params", name):
            for key in params:
                if key not in accepted and not var_kw:
                    hint = closest(str(key), accepted)
                    suggested.add(hint or "")
                    tip = f" Did you mean {hint!r}?" if hint else ""
                    self.problem(
                        (*at, "params", key),
                        f"params has {key!r}, which {_describe(fn)} does not accept.{tip}",
                        name,
                    )
        else:
            params = {}
            raw.pop("params", None)
        given = set(params) | set(extra) | {"input"}  # input: upstream or flow input
        if self.acp is not None:  # the file's run settings, a prompt_generation's prompt
            given |= {k for k in acp.CONFIG_KEYS if k in self.config} | {"generated_prompt"}
        missing = [
            p.name
            for p in sig.parameters.values()
            if p.default is p.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            and p.name not in given
            and p.name not in suggested
        ]
        if missing:
            self.problem(
                at,
                f"{_describe(fn)} needs {', '.join(repr(m) for m in missing)}: give "
                f"{'it' if len(missing) == 1 else 'them'} under params: or as a key of the "
                f"step",
                name,
            )

    def resolve(
        self, kind: str, target: Any, at: Path_, step: str | None
    ) -> Callable[..., Any] | None:
        if not isinstance(target, str) or not target:
            self.problem(at, f"{kind} must be text, got {_short(target)}", step)
            return None
        if kind == "type":
            if target == "parallel_group":
                return None
            types = step_types()
            fn = types.get(target)
            if fn is None:
                hint = closest(target, types)
                tip = f" Did you mean {hint!r}?" if hint else ""
                known = ", ".join(sorted(types)) or "none"
                self.problem(
                    at,
                    f"unknown step type {target!r}.{tip} Registered: {known}. Register one with "
                    f"@layerflow.step_type({target!r}) in a module, and give the module with "
                    f"--plugin MODULE or name it under plugins: (from Python: "
                    f"load_pipeline(path, plugins=['MODULE']))",
                    step,
                )
            return fn
        module_name, _, attr = target.partition(":")
        if not attr or not module_name:
            self.problem(at, f"uses must look like 'module:function', got {target!r}", step)
            return None
        folder = str(self.path.parent.resolve())
        self.import_paths.add(folder)
        try:
            with on_import_path([folder]):
                module = importlib.import_module(module_name)
        except Exception as e:
            self.problem(
                at, f"cannot import {module_name!r} for uses: {type(e).__name__}: {e}", step
            )
            return None
        fn = getattr(module, attr, None)
        if fn is None or not callable(fn):
            names = [n for n in dir(module) if not n.startswith("_")]
            hint = closest(attr, names)
            tip = f" Did you mean {module_name}:{hint}?" if hint else ""
            self.problem(at, f"module {module_name!r} has no function {attr!r}.{tip}", step)
            return None
        return fn

    @staticmethod
    def signature_keys(fn: Callable[..., Any]) -> list[str]:
        try:
            parameters = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return []
        return [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def common(self, step: _Step, at: Path_) -> None:
        d = step.data
        name = step.name
        if "needs" in d:
            needs = d["needs"]
            if isinstance(needs, str):
                d["needs"] = [needs]
            elif not isinstance(needs, list) or not all(isinstance(x, str) for x in needs):
                self.problem(
                    (*at, "needs"),
                    f"needs must be a list of step names, got {_short(needs)}",
                    name,
                )
                d["needs"] = []
        self.fields(d, RUN_KEYS if step.kind == "run" else COMMON_KEYS, at, name)
        self.foreach(step, at)
        if "max_workers" in d and step.foreach is None:
            self.problem(
                (*at, "max_workers"),
                "max_workers bounds how many elements of a foreach step run at once, and this "
                "step has no foreach:",
                name,
            )
        source = step.foreach or ("", "")
        # templates: which steps and inputs they read (a foreach template: its source)
        skip = ("name", "description", "needs", "input_from", "__group__", "uses", "type")
        if isinstance(d.get("foreach"), str):
            skip = (*skip, "foreach")
        for where, text in _strings_at({k: v for k, v in d.items() if k not in skip}, at):
            for m in TEMPLATE.finditer(text):
                ref = m.group(1)
                parsed = _REF.match(ref)
                if parsed is None:
                    self.problem(
                        where,
                        f"unknown template {{{{{ref}}}}}: use {{{{input}}}}, {{{{inputs.NAME}}}} "
                        f"or {{{{steps.NAME.output}}}} (and in a foreach step {{{{item}}}} and "
                        f"{{{{index}}}})",
                        name,
                    )
                    continue
                if parsed.group(4):
                    self.element_template(step, ref, where, at)
                    continue
                # the list the step iterates over: each call gets one element of it
                read = parsed.group(2) or ("input" if ref == "input" else None)
                if source == ("step", parsed.group(3)) or (
                    source == ("input", read) and (parsed.group(2) or "input_from" not in d)
                ):
                    self.problem(
                        where,
                        f"{{{{{ref}}}}} is one element of the list this step iterates over, "
                        f"not the list: use {{{{item}}}}",
                        name,
                    )
                if parsed.group(2):
                    step.input_refs.add(parsed.group(2))
                    self.input_lines.setdefault(parsed.group(2), (name, self.line_at(where)))
                elif parsed.group(3):
                    step.refs.add(parsed.group(3))
                elif "input_from" not in d:
                    step.uses_input = True
                    self.input_lines.setdefault("input", (name, self.line_at(where)))

    def foreach(self, step: _Step, at: Path_) -> None:
        """``foreach:``: a step's list, a list input, or a literal list."""
        d = step.data
        if "foreach" not in d:
            return
        value = d["foreach"]
        where = (*at, "foreach")
        step.foreach_line = self.line_at(where)
        if isinstance(value, list):
            step.foreach = ("list", "")
            return
        whole = TEMPLATE.fullmatch(value.strip()) if isinstance(value, str) else None
        parsed = _REF.match(whole.group(1)) if whole is not None else None
        if parsed is not None and parsed.group(3):
            step.foreach = ("step", parsed.group(3))
        elif parsed is not None and parsed.group(2):
            step.foreach = ("input", parsed.group(2))
        else:
            self.problem(
                where,
                "foreach must be '{{steps.NAME.output}}' (a step's list), '{{inputs.NAME}}' "
                f"(a list input) or a list, got {_short(value)}",
                step.name,
            )
            step.foreach = ("bad", "")  # still a foreach step: its {{item}} is no problem
            del d["foreach"]

    def element_template(self, step: _Step, ref: str, where: Path_, at: Path_) -> None:
        """``{{item}}`` or ``{{index}}``: only in a foreach step, and not in its list."""
        if step.foreach is None:
            self.problem(
                where,
                f"{{{{{ref}}}}} is only defined in a foreach step: add foreach: (a step's "
                f"list, a list input or a list) to this step",
                step.name,
            )
        elif where[len(at)] == "foreach":
            self.problem(
                where,
                f"{{{{{ref}}}}} inside foreach: the list cannot name its own elements",
                step.name,
            )

    def line_at(self, at: Path_) -> int | None:
        """The line of ``at``, or of the closest enclosing node that has one."""
        while at:
            if at in self.lines:
                return self.lines[at]
            at = at[:-1]
        return self.lines.get(())

    def check_names(self, entries: list[list[_Step]], inputs: Mapping[str, Any]) -> None:
        """Duplicate names, references to steps that do not exist, names that clash."""
        steps = [s for entry in entries for s in entry]
        by_name: dict[str, _Step] = {}
        for s in steps:
            if s.name in by_name:
                made = [x.made for x in (by_name[s.name], s) if x.made]
                why = f" ({'; '.join(made)}): give it a name: of its own" if made else ""
                self.problems.append(
                    (self.file, s.line, f"step {s.name!r}: duplicate step name{why}")
                )
            by_name[s.name] = s
        names = list(by_name)
        for s in steps:
            for ref in [s.data.get("input_from"), *s.data.get("needs", []), *sorted(s.refs)]:
                if isinstance(ref, str) and ref not in by_name and ref not in self.dropped:
                    hint = closest(ref, names)
                    tip = f" Did you mean {hint!r}?" if hint else ""
                    self.problems.append(
                        (self.file, s.line, f"step {s.name!r}: no step named {ref!r}.{tip}")
                    )
            if s.name in inputs:
                self.problems.append(
                    (self.file, s.line, f"step {s.name!r} has the same name as an input")
                )
            self.check_foreach(s, by_name, inputs)
            for ref in sorted(s.input_refs & by_name.keys()):
                self.problems.append(
                    (
                        self.file,
                        s.line,
                        f"step {s.name!r}: {{{{inputs.{ref}}}}} names a step, not an input; "
                        f"use {{{{steps.{ref}.output}}}} for its output",
                    )
                )

    def check_foreach(
        self, s: _Step, by_name: Mapping[str, _Step], inputs: Mapping[str, Any]
    ) -> None:
        """What a foreach iterates over exists and can be a list."""
        kind, ref = s.foreach or ("", "")
        line = s.foreach_line or s.line
        if kind == "step":
            source = by_name.get(ref)
            if source is None and ref not in self.dropped:
                hint = closest(ref, list(by_name))
                tip = f" Did you mean {hint!r}?" if hint else ""
                self.problems.append(
                    (self.file, line, f"step {s.name!r}: foreach over no step named {ref!r}.{tip}")
                )
            elif source is not None and source.kind == "run" and source.foreach is None:
                self.problems.append(
                    (
                        self.file,
                        line,
                        f"step {s.name!r}: foreach over {ref!r}, a run: step, whose output is "
                        f"one text, not a list: iterate over a uses: or type: step that "
                        f"returns a list, a foreach step, a list input or a literal list",
                    )
                )
        elif kind == "input":
            if ref in by_name:
                self.problems.append(
                    (
                        self.file,
                        line,
                        f"step {s.name!r}: foreach over {{{{inputs.{ref}}}}}, which names a "
                        f"step, not an input; use {{{{steps.{ref}.output}}}} for its output",
                    )
                )
            elif ref not in inputs:
                hint = closest(ref, list(inputs))
                tip = f" Did you mean {hint!r}?" if hint else ""
                self.problems.append(
                    (
                        self.file,
                        line,
                        f"step {s.name!r}: foreach over the input {ref!r}, which is not under "
                        f"inputs:.{tip} Declare it there with a list (its default, or [])",
                    )
                )
            elif inputs[ref] is not None and not isinstance(inputs[ref], list):
                self.problems.append(
                    (
                        self.file,
                        self.lines.get(("inputs", ref), line),
                        f"step {s.name!r} iterates over the input {ref!r}, whose default is "
                        f"{_short(inputs[ref])}, not a list",
                    )
                )

    # building -----------------------------------------------------------------------------

    def build(
        self,
        name: Any,
        inputs: dict[str, Any],
        settings: dict[str, Any],
        entries: list[list[_Step]],
    ) -> Pipeline:
        flow = Pipeline(name if isinstance(name, str) else self.path.stem)
        flow.inputs = dict(inputs)
        if self.acp is not None:
            flow.format = acp.FORMAT
            flow.format_reason = self.acp
            flow.config = dict(self.config)
            flow.input_key = self.input_key
        flow.path = self.path
        flow.import_paths = tuple(sorted(self.import_paths))
        flow.input_lines = dict(self.input_lines)
        steps = [s for entry in entries for s in entry]
        order = settings.get("order", "sequence")
        previous: list[str] = []
        rate_limit_delay = settings.get("rate_limit_delay") or 0
        for entry in entries:
            for s in entry:
                after = list(previous) if order == "sequence" else []
                self.add_step(flow, s, after, inputs, rate_limit_delay)
            if entry:
                previous = [s.name for s in entry]
        run_settings: dict[str, Any] = {}
        if "max_workers" in settings:
            run_settings["max_workers"] = settings["max_workers"]
        if "fail_fast" in settings:
            run_settings["fail_fast"] = settings["fail_fast"]
        if "timeout" in settings:
            run_settings["timeout"] = settings["timeout"]
        if "mode" in settings:
            run_settings["mode"] = settings["mode"]
        if "budget" in settings:
            run_settings["budget"] = settings["budget"]
        if settings.get("parallel") is False:
            run_settings["mode"] = "sequential"
        limits = dict(settings.get("rate_limits") or {})
        if rate_limit_delay:
            limits["rate_limit_delay"] = (1, float(rate_limit_delay))
        if limits:
            run_settings["rate_limits"] = limits
        resources = dict(settings.get("resources") or {})
        for s in steps:
            g = s.data.get("__group__") or {}
            if "max_workers" in g:
                resources[f"group:{s.group}"] = g["max_workers"]
            if "max_workers" in s.data:  # a foreach step's: each element holds one unit
                resources[_pool(s.name)] = s.data["max_workers"]
        if resources:
            run_settings["resources"] = resources
        flow.settings = run_settings
        flow.descriptions = {s.name: s.data.get("description") for s in steps}
        flow.step_lines = {s.name: s.line for s in steps}
        flow.foreach_inputs = {
            s.foreach[1]: (s.name, s.foreach_line)
            for s in reversed(steps)  # the first step that iterates over an input names it
            if s.foreach and s.foreach[0] == "input"
        }
        return flow

    def add_step(
        self,
        flow: Pipeline,
        s: _Step,
        after: list[str],
        inputs: dict[str, Any],
        rate_limit_delay: float,
    ) -> None:
        d = s.data
        upstream: dict[str, str] = {}  # parameter -> step name
        if d.get("input_from"):
            upstream["__input__"] = d["input_from"]
        prepare = None
        defaults: dict[str, Any] = {}
        flow_input = False
        if s.kind == "call" and self.acp is not None:
            prepare, defaults, flow_input = self.chain_inputs(s, upstream)
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
        base = Path(self.path).parent
        if s.kind == "run":
            fn = _Command(s.name, d, base, flow)
            fn.item = item
        else:
            fn = _call(s.name, s.fn, d, item, defaults, prepare)  # type: ignore[arg-type]
            if s.source is not None:
                wanted_inputs.discard("input")  # {{input}} is the step's own input
                if flow_input:
                    wanted_inputs.add("input")
            elif not d.get("input_from") and _wants_input(s.fn):  # type: ignore[arg-type]
                wanted_inputs.add("input")
        fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in sorted(wanted_inputs)]
            + [inspect.Parameter("upstream", inspect.Parameter.VAR_KEYWORD)]
        )
        options: dict[str, Any] = {
            "inputs": upstream,
            "after": [*after, *d.get("needs", [])],
            "description": d.get("description"),
            **each,
        }
        for key in ("retries", "retry_delay", "timeout", "priority", "resources", "cache"):
            if key in d:
                options[key] = d[key]
        rate = d.get("rate_limit")
        if isinstance(rate, str):
            rate = {rate: 1}
        if rate_limit_delay:
            rate = {**(rate or {}), "rate_limit_delay": 1}
        if rate:
            options["rate_limit"] = rate
        group = d.get("__group__")
        if group is not None:
            options["group"] = self._task_group(s.group, group)
        if group is not None and "max_workers" in group:
            options["resources"] = {**options.get("resources", {}), f"group:{s.group}": 1}
        if "max_workers" in d:  # a pool of its own, like a parallel_group's
            options["resources"] = {**options.get("resources", {}), _pool(s.name): 1}
        try:
            task = flow.add(fn, name=s.name, **options)
        except LayerflowError as e:
            self.problems.append((self.file, s.line, f"step {s.name!r}: {e}"))
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

    def chain_inputs(
        self, s: _Step, upstream: dict[str, str]
    ) -> tuple[Callable[..., Any] | None, dict[str, Any], bool]:
        """A step's wiring in ai-content-pipeline's format: its input (``s.source``) and
        the ``generated_prompt`` it asks for, as upstream parameters (added to ``upstream``)
        and a ``prepare`` that turns them into ``input`` and that keyword; the file's run
        settings its function names (``output_dir``, ...: ``defaults``); and whether it
        reads the pipeline's own input."""
        accepted = set(self.signature_keys(s.fn))  # type: ignore[arg-type]
        d = s.data
        given = set(d.get("params") or {}) | set(d)
        defaults = {
            k: self.config[k]
            for k in acp.CONFIG_KEYS
            if k in self.config and k in accepted and k not in given
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
            elif _wants(s.fn, "generated_prompt"):  # type: ignore[arg-type]
                self.problems.append(
                    (
                        self.file,
                        s.line,
                        f"step {s.name!r}: {_describe(s.fn)} needs 'generated_prompt', which only "  # type: ignore[arg-type]
                        f"a step after a prompt_generation step receives",
                    )
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


def _source_names(source: Any) -> list[str]:
    """The steps a source (``Loader.chain``) reads, in order, each once."""
    if source is None or source[0] == "flow":
        return []
    if source[0] == "step":
        return [source[1]]
    return list(dict.fromkeys(n for inner in source[2] for n in _source_names(inner)))


def _has_flow(source: Any) -> bool:
    """Whether a source reads the pipeline's own input."""
    if source[0] == "merge":
        return any(_has_flow(inner) for inner in source[2])
    return source[0] == "flow"


def _resolve(source: Any, kwargs: Mapping[str, Any], args: Mapping[str, str]) -> Any:
    """A source's value, from a step function's keyword arguments."""
    if source[0] == "flow":
        return kwargs.get("input")
    if source[0] == "step":
        return acp.passed_on(kwargs[args[source[1]]])
    return acp.merge(source[1], [_resolve(inner, kwargs, args) for inner in source[2]])


def _pool(step: str) -> str:
    """The resource pool that bounds a foreach step's elements (its ``max_workers``)."""
    return f"foreach:{step}"


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


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a problem quotes, never floods."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}()"


def _wants_input(fn: Callable[..., Any]) -> bool:
    return _wants(fn, "input")


def _wants(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` has a parameter ``name`` without a default."""
    try:
        p = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):
        return False
    return p is not None and p.default is inspect.Parameter.empty


def _call(
    name: str,
    fn: Callable[..., Any],
    d: dict[str, Any],
    item: str = ITEM,
    defaults: Mapping[str, Any] | None = None,
    prepare: Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]] | None = None,
) -> Callable[..., Any]:
    """A ``uses:``/``type:`` step: the function, with input, params and its own keys
    (``item``: the argument that holds a foreach element); ``defaults``: keywords the step's
    own keys and params override; ``prepare``: turns the task's arguments into the step's
    (ai-content-pipeline's data flow) and adds keywords."""
    extra = {k: v for k, v in d.items() if k not in COMMON_KEYS and k not in ("uses", "type")}
    extra.pop("__group__", None)
    params = d.get("params") or {}
    accepted = set(_Loader.signature_keys(fn))
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
    step.detail = f"{_describe(fn)[:-2]}({shown})"  # type: ignore[attr-defined]  (reports)
    return step


# running commands, so that Ctrl-C and the end of a run can stop them
def _in_cwd(module: str, error: ModuleNotFoundError) -> bool:
    """Is the plugin that was not found a module (or package) of the current folder?"""
    top = module.partition(".")[0]
    cwd = Path(os.getcwd())
    if error.name != top or str(cwd) in sys.path:
        return False
    return (cwd / f"{top}.py").is_file() or (cwd / top / "__init__.py").is_file()


_PATH_USERS: dict[str, int] = {}  # folder on sys.path for a pipeline -> how many hold it
_PATH_LOCK = threading.Lock()


@contextlib.contextmanager
def on_import_path(folders: Iterable[str]) -> Any:
    """The pipeline's own folders on ``sys.path`` while it is loaded or run (its plugins and
    ``uses:`` modules are imported from there, by this process and by worker processes
    started meanwhile), and off it again afterwards; one the caller had put there stays."""
    added = []
    with _PATH_LOCK:
        for folder in folders:
            if _PATH_USERS.get(folder):
                _PATH_USERS[folder] += 1
                added.append(folder)
            elif folder not in sys.path:
                sys.path.insert(0, folder)
                _PATH_USERS[folder] = 1
                added.append(folder)
    try:
        yield
    finally:
        with _PATH_LOCK:
            for folder in added:
                _PATH_USERS[folder] -= 1
                if not _PATH_USERS[folder]:
                    del _PATH_USERS[folder]
                    with contextlib.suppress(ValueError):
                        sys.path.remove(folder)


# --- the flow a pipeline becomes --------------------------------------------------------------


class Pipeline(Flow):
    """A :class:`Flow` loaded from YAML: it also carries the file's ``inputs`` (defaults)
    and ``settings`` (run options), which ``run`` applies unless told otherwise."""

    strict_inputs = False

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.inputs: dict[str, Any] = {}
        self.settings: dict[str, Any] = {}
        self.descriptions: dict[str, str | None] = {}
        self.path: Path | None = None
        #: folders its plugins and ``uses:`` modules come from: on ``sys.path`` while it runs
        self.import_paths: tuple[str, ...] = ()
        #: flow input -> (the first step whose templates use it, its line in ``path``)
        self.input_lines: dict[str, tuple[str, int | None]] = {}
        self.step_lines: dict[str, int | None] = {}
        #: flow input -> (the first foreach step that iterates over it, its line)
        self.foreach_inputs: dict[str, tuple[str, int | None]] = {}
        #: ``"layerflow"``, or ``"ai-content-pipeline"`` for a file in that project's format
        #: (``format_reason`` says why it is read so)
        self.format = "layerflow"
        self.format_reason = ""
        #: that format's top-level settings as the file gives them (``output_dir``,
        #: ``temp_dir``, ``cleanup_temp``, ``save_intermediates``, ``input_type``, and
        #: ``prompt``, ``input_image``, ``input_video``)
        self.config: dict[str, Any] = {}
        #: that format's top-level key the input ``input`` comes from (``prompt``, ...)
        self.input_key: str | None = None

    def run_options(self, **options: Any) -> dict[str, Any]:
        """The file's settings, the environment, then ``options``, in rising precedence."""
        merged = dict(self.settings)
        env_parallel = os.environ.get("LAYERFLOW_PARALLEL")
        if env_parallel is not None and env_parallel.strip().lower() in ("0", "false", "no", "off"):
            merged["mode"] = "sequential"
        # that project runs its groups in parallel only when this says true
        acp_parallel = os.environ.get("PIPELINE_PARALLEL_ENABLED")
        if (
            self.format == acp.FORMAT
            and acp_parallel is not None
            and acp_parallel.lower() != "true"
        ):
            merged["mode"] = "sequential"
        env_workers = os.environ.get("LAYERFLOW_MAX_WORKERS")
        if env_workers:
            try:
                merged["max_workers"] = int(env_workers)
            except ValueError:
                raise PipelineError(
                    [
                        (
                            "LAYERFLOW_MAX_WORKERS",
                            None,
                            f"must be a whole number, got {env_workers!r}",
                        )
                    ]
                ) from None
        for key, value in options.items():
            if key in ("resources", "rate_limits", "budget") and value and key in merged:
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return merged

    @contextlib.contextmanager
    def _located(self) -> Iterator[None]:
        """The flow's missing-input errors as the pipeline's: the file, the line that uses
        the input, and how to give it (``--set``); other errors pass as they are."""
        try:
            yield
        except MissingInputError as e:
            problems = getattr(e, "problems", [e])
            if not all(isinstance(p, MissingInputError) for p in problems):
                raise
            file = str(self.path or self.name)
            out = []
            for p in problems:
                name = p.missing
                step, line = self.input_lines.get(name, (p.task, self.step_lines.get(p.task)))
                if name == "input" and self.input_key is not None:
                    kind = self.input_key.removeprefix("input_")
                    first = "takes text or is a group" if kind == "prompt" else f"takes an {kind}"
                    out.append(
                        (
                            file,
                            self.step_lines.get(p.task, line),
                            f"step {p.task!r} takes the pipeline's input, which has no value: "
                            f"give it on the command line with --set input=VALUE, or as "
                            f"{self.input_key}: in the file (as ai-content-pipeline reads a "
                            f"pipeline whose first step {first}; input_type: can say otherwise)"
                            f" (from Python: run({{'input': ...}}))",
                        )
                    )
                    continue
                out.append(
                    (
                        file,
                        line,
                        f"step {step!r} uses the input {name!r}, which has no value: give it on "
                        f"the command line with --set {name}=VALUE, or a default under inputs: "
                        f"(from Python: run({{{name!r}: ...}}))",
                    )
                )
            first = problems[0]
            raise PipelineInputError(out, first.task, first.missing) from None

    def _lists(self, inputs: Mapping[str, Any]) -> None:
        """Every input a foreach iterates over is a list, or a ``PipelineError`` with the
        line of the step that iterates over it (before anything runs)."""
        out = []
        for name, (step, line) in self.foreach_inputs.items():
            value = inputs.get(name)
            if isinstance(value, list | tuple):
                continue
            out.append(
                (
                    str(self.path or self.name),
                    line,
                    f"step {step!r} iterates over the input {name!r}, which is "
                    f"{_short(value)}, not a list: give a list, e.g. --set {name}=[a,b] "
                    f"(from Python: run({{{name!r}: [...]}}))",
                )
            )
        if out:
            raise PipelineError(out)

    def _unused(self, given: Iterable[str], graph: Any) -> list[tuple[str, int | None, str]]:
        """A problem for each name in ``given`` (``--set``) that no step of ``graph`` uses,
        with the closest input name."""
        used = {n for pairs in graph.input_args for n, _ in pairs}
        known = sorted(used | set(self.inputs))
        out: list[tuple[str, int | None, str]] = []
        for name in given:
            if name not in used:
                hint = closest(name, known)
                tip = f" Did you mean {hint!r}?" if hint else ""
                out.append(
                    (
                        str(self.path or self.name),
                        None,
                        f"--set {name}=...: no step uses an input named {name!r}.{tip} "
                        f"The pipeline's inputs: {', '.join(known) if known else 'none'}",
                    )
                )
        return out

    def run(self, inputs: Mapping[str, Any] | None = None, **options: Any):  # type: ignore[override]
        """Run with the file's inputs and settings as defaults."""
        try:
            with on_import_path(self.import_paths), self._located():
                merged = {**self.inputs, **(inputs or {})}
                self._lists(merged)
                return super().run(merged, **self.run_options(**options))
        finally:
            stop_commands(self)  # only this pipeline's: others may be running too

    async def run_async(self, inputs: Mapping[str, Any] | None = None, **options: Any):  # type: ignore[override]
        """``run`` from a coroutine, with the file's inputs and settings as defaults."""
        try:
            with on_import_path(self.import_paths), self._located():
                merged = {**self.inputs, **(inputs or {})}
                self._lists(merged)
                return await super().run_async(merged, **self.run_options(**options))
        finally:
            stop_commands(self)

    def plan(  # type: ignore[override]
        self, inputs: Mapping[str, Any] | None = None, *, given: Iterable[str] = (), **options: Any
    ):
        """Plan with the file's inputs as defaults; its predictions model the file's pools
        (a parallel_group's ``max_workers`` among them) and rate limits. ``given``: the
        input names given on the command line (``--set``); one that no step uses is an
        error, reported with any missing input in one round."""
        given = list(given)
        problems: list[tuple[str, int | None, str]] = []
        plan = None
        try:
            with self._located():
                merged = {**self.inputs, **(inputs or {})}
                plan = super().plan(merged, **options)
                self._lists(merged)
        except PipelineError as e:
            if not given:
                raise
            problems = list(e.problems)
        if given:
            graph = plan.graph if plan is not None else self._graph.check(self.name, ())[0]
            problems += self._unused(given, graph)
        if problems:
            raise PipelineError(problems)
        plan.resources = self.settings.get("resources")  # type: ignore[union-attr]
        plan.rate_limits = self.settings.get("rate_limits")  # type: ignore[union-attr]
        return plan


def load_pipeline(path: str | os.PathLike[str], *, plugins: Iterable[str] = ()) -> Pipeline:
    """Read a YAML pipeline into a :class:`Flow` (a :class:`Pipeline`); raise
    :class:`PipelineError` listing every problem, with file and line, before anything runs."""
    return _Loader(Path(path), plugins).load()
