"""The :class:`Pipeline`: the :class:`Flow` a YAML file becomes.

It carries what the file says beyond its tasks (``inputs`` defaults, ``settings`` as run
options, the line of each step and of each template that reads an input), so that a run
starts from the file's settings, and an input missing at run time is reported with the
file, the line that uses it and how to give it (``--set``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import acp
from ..errors import MissingInputError, PipelineError, PipelineInputError, did_you_mean
from ..flow import Flow
from ..graph import Graph
from ..plan import Plan
from ..result import RunResult
from .commands import stop_commands
from .imports import on_import_path
from .problems import Problem, short

__all__ = ["Pipeline"]


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

    @property
    def _file(self) -> str:
        return str(self.path or self.name)

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
                message = f"must be a whole number, got {env_workers!r}"
                raise PipelineError([("LAYERFLOW_MAX_WORKERS", None, message)]) from None
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
            out = [self._missing_input(p) for p in problems]
            first = problems[0]
            raise PipelineInputError(out, first.task, first.missing) from None

    def _missing_input(self, p: MissingInputError) -> Problem:
        """The problem of one input with no value, with the line of its first user."""
        name, task = p.missing, p.task or ""
        step, line = self.input_lines.get(name, (task, self.step_lines.get(task)))
        if name == "input" and self.input_key is not None:
            kind = self.input_key.removeprefix("input_")
            first = "takes text or is a group" if kind == "prompt" else f"takes an {kind}"
            return (
                self._file,
                self.step_lines.get(task, line),
                f"step {p.task!r} takes the pipeline's input, which has no value: give it on "
                f"the command line with --set input=VALUE, or as {self.input_key}: in the file "
                f"(as ai-content-pipeline reads a pipeline whose first step {first}; "
                f"input_type: can say otherwise) (from Python: run({{'input': ...}}))",
            )
        return (
            self._file,
            line,
            f"step {step!r} uses the input {name!r}, which has no value: give it on the "
            f"command line with --set {name}=VALUE, or a default under inputs: (from Python: "
            f"run({{{name!r}: ...}}))",
        )

    def _lists(self, inputs: Mapping[str, Any]) -> None:
        """Every input a foreach iterates over is a list, or a ``PipelineError`` with the
        line of the step that iterates over it (before anything runs)."""
        out: list[Problem] = []
        for name, (step, line) in self.foreach_inputs.items():
            value = inputs.get(name)
            if isinstance(value, list | tuple):
                continue
            out.append(
                (
                    self._file,
                    line,
                    f"step {step!r} iterates over the input {name!r}, which is "
                    f"{short(value)}, not a list: give a list, e.g. --set {name}=[a,b] "
                    f"(from Python: run({{{name!r}: [...]}}))",
                )
            )
        if out:
            raise PipelineError(out)

    def _unused(self, given: Iterable[str], graph: Graph) -> list[Problem]:
        """A problem for each name in ``given`` (``--set``) that no step of ``graph`` uses,
        with the closest input name."""
        used = {n for pairs in graph.input_args for n, _ in pairs}
        known = sorted(used | set(self.inputs))
        return [
            (
                self._file,
                None,
                f"--set {name}=...: no step uses an input named {name!r}."
                f"{did_you_mean(name, known)} "
                f"The pipeline's inputs: {', '.join(known) if known else 'none'}",
            )
            for name in given
            if name not in used
        ]

    @contextlib.contextmanager
    def _running(
        self, inputs: Mapping[str, Any] | None, options: dict[str, Any]
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """A run's inputs and options, the file's as defaults, with its folders on the
        import path; the commands it started are stopped when it ends."""
        try:
            with on_import_path(self.import_paths), self._located():
                merged = {**self.inputs, **(inputs or {})}
                self._lists(merged)
                yield merged, self.run_options(**options)
        finally:
            stop_commands(self)  # only this pipeline's: others may be running too

    def run(self, inputs: Mapping[str, Any] | None = None, **options: Any) -> RunResult:
        """Run with the file's inputs and settings as defaults."""
        with self._running(inputs, options) as (merged, run_options):
            return super().run(merged, **run_options)

    async def run_async(self, inputs: Mapping[str, Any] | None = None, **options: Any) -> RunResult:
        """``run`` from a coroutine, with the file's inputs and settings as defaults."""
        with self._running(inputs, options) as (merged, run_options):
            return await super().run_async(merged, **run_options)

    def plan(
        self, inputs: Mapping[str, Any] | None = None, *, given: Iterable[str] = (), **options: Any
    ) -> Plan:
        """Plan with the file's inputs as defaults; its predictions model the file's pools
        (a parallel_group's ``max_workers`` among them) and rate limits. ``given``: the
        input names given on the command line (``--set``); one that no step uses is an
        error, reported with any missing input in one round."""
        given = list(given)
        problems: list[Problem] = []
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
        if problems or plan is None:
            raise PipelineError(problems)
        plan.resources = self.settings.get("resources")
        plan.rate_limits = self.settings.get("rate_limits")
        return plan
