"""YAML pipelines through the public API: ``lf.load_pipeline`` and ``lf.step_type``.

Every pipeline is written into ``tmp_path``. Step types are registered here under names
starting with ``lftest_`` so they cannot clash with other tests' or plugins' step types;
``uses:`` targets are small modules written next to the YAML file, each under a unique name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import layerflow as lf

# --- recording what step functions did ------------------------------------------------------


class Recorder:
    """Start/end times of step functions, and the peak number running at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.events: list[tuple[str, str, float]] = []  # (kind, label, perf_counter time)
        self.calls: list[dict[str, Any]] = []

    def start(self, label: str) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.events.append(("start", label, time.perf_counter()))

    def end(self, label: str) -> None:
        with self.lock:
            self.running -= 1
            self.events.append(("end", label, time.perf_counter()))

    def times(self, kind: str) -> dict[str, float]:
        return {label: t for k, label, t in self.events if k == kind}

    def labels(self, kind: str = "start") -> list[str]:
        return [label for k, label, _ in self.events if k == kind]


STATE: dict[str, Any] = {"rec": Recorder(), "release": threading.Event()}


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    """A new recorder per test; sys.path restored (the loader adds the YAML folder to it);
    anything still waiting on ``release`` is let go at the end of the test."""
    STATE["rec"] = Recorder()
    STATE["release"] = threading.Event()
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("LAYERFLOW_PARALLEL", raising=False)
    monkeypatch.delenv("LAYERFLOW_MAX_WORKERS", raising=False)
    yield STATE["rec"]
    STATE["release"].set()


@lf.step_type("lftest_work")
def lftest_work(label: str, seconds: float = 0.0, input: Any = None, fail: bool = False) -> str:
    """Record start and end, sleep, maybe fail; return the label (after the input, if any)."""
    rec: Recorder = STATE["rec"]
    rec.start(label)
    try:
        time.sleep(seconds)
        if fail:
            raise RuntimeError(f"{label} failed on purpose")
        return label if input is None else f"{input}>{label}"
    finally:
        rec.end(label)


@lf.step_type("lftest_wait")
def lftest_wait(label: str) -> str:
    """Block until the test releases it (at most 20 s)."""
    rec: Recorder = STATE["rec"]
    rec.start(label)
    try:
        STATE["release"].wait(20)
        return label
    finally:
        rec.end(label)


@lf.step_type("lftest_text_to_image")
def lftest_text_to_image(prompt: str, model: str = "default-model") -> str:
    STATE["rec"].calls.append({"fn": "text_to_image", "prompt": prompt, "model": model})
    return f"{model}:{prompt}.png"


@lf.step_type("lftest_upper")
def lftest_upper(input: str) -> str:
    return str(input).upper()


@lf.step_type("lftest_join")
def lftest_join(input: str, suffix: str = "", sep: str = "+") -> str:
    return f"{input}{sep}{suffix}"


@lf.step_type("lftest_image_to_video")
def lftest_image_to_video(input: str, model: str = "kling", duration: int = 5) -> str:
    return input.replace(".png", f"-{model}-{duration}s.mp4")


@lf.step_type("lftest_image_to_image")
def lftest_image_to_image(input: str, prompt: str, model: str = "flux-edit") -> str:
    return input.replace(".png", f"-{prompt.split()[-1]}.png")


@lf.step_type("lftest_upscale")
def lftest_upscale(input: str, factor: int = 2) -> str:
    return input.replace(".png", f"-x{factor}.png")


@lf.step_type("lftest_analyze_image")
def lftest_analyze_image(input: str, question: str = "what is it?") -> str:
    return f"{input}: {question}"


# --- helpers --------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    """The 1-based number of the ``nth`` line of ``path`` that contains ``needle``."""
    hits = [i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} not found {nth} times in {path}"
    return hits[nth - 1]


def module(tmp_path: Path, source: str, prefix: str = "lftest_mod") -> str:
    """Write a module with a unique name next to the pipelines; return its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return name


def load_error(path: Path, **kwargs: Any) -> lf.PipelineError:
    with pytest.raises(lf.PipelineError) as info:
        lf.load_pipeline(path, **kwargs)
    return info.value


def assert_reported(err: Exception, path: Path, line: int, *fragments: str) -> None:
    """The message names ``path:line:`` and contains every fragment."""
    text = str(err)
    assert f"{path}:{line}:" in text, text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"


def run_anyway(pipeline: lf.Pipeline, *args: Any, **kwargs: Any) -> lf.RunResult:
    """The run's result, whether the run returned it or raised TaskFailed carrying it."""
    try:
        return pipeline.run(*args, **kwargs)
    except lf.TaskFailed as e:
        return e.result


# === 1. happy paths ===========================================================================


def test_run_step_value_is_its_stripped_stdout(tmp_path):
    path = write(tmp_path, 'steps:\n  - {name: hello, run: "echo hello"}\n')
    pipeline = lf.load_pipeline(path)
    assert isinstance(pipeline, lf.Pipeline) and isinstance(pipeline, lf.Flow)
    result = pipeline.run()
    assert result.ok
    assert result["hello"] == "hello"


def test_input_from_passes_the_upstream_value_as_input(tmp_path):
    path = write(
        tmp_path,
        """
        steps:
          - {name: base, run: "echo hello"}
          - {name: shout, type: lftest_upper, input_from: base}
        """,
    )
    result = lf.load_pipeline(path).run()
    assert result["shout"] == "HELLO"


def test_params_and_extra_step_keys_reach_the_function_by_name(tmp_path, fresh_state):
    path = write(
        tmp_path,
        """
        steps:
          - {name: img, type: lftest_text_to_image, model: flux, params: {prompt: cat}}
        """,
    )
    result = lf.load_pipeline(path).run()
    assert result["img"] == "flux:cat.png"
    assert fresh_state.calls == [{"fn": "text_to_image", "prompt": "cat", "model": "flux"}]


def test_uses_module_function_with_input_and_params(tmp_path):
    mod = module(
        tmp_path,
        """
        def count_words(input, minimum=0):
            return max(len(str(input).split()), minimum)
        """,
    )
    path = write(
        tmp_path,
        f"""
        steps:
          - {{name: text, run: "echo one two three"}}
          - {{name: words, uses: "{mod}:count_words", input_from: text}}
          - {{name: at_least, uses: "{mod}:count_words", input_from: text, params: {{minimum: 7}}}}
        """,
    )
    result = lf.load_pipeline(path).run()
    assert result["words"] == 3
    assert result["at_least"] == 7


def test_plugins_register_step_types(tmp_path):
    type_name = f"lftest_plugin_{uuid.uuid4().hex[:8]}"
    mod = module(
        tmp_path,
        f"""
        import layerflow as lf

        @lf.step_type("{type_name}")
        def reverse(input):
            return str(input)[::-1]
        """,
        prefix="lftest_plugin",
    )
    steps = 'steps:\n  - {name: base, run: "echo abc"}\n'
    steps += f"  - {{name: rev, type: {type_name}, input_from: base}}\n"
    in_file = write(tmp_path, f"plugins: [{mod}]\n" + steps, name="in_file.yaml")
    assert lf.load_pipeline(in_file).run()["rev"] == "cba"
    by_argument = write(tmp_path, steps, name="by_argument.yaml")
    assert lf.load_pipeline(by_argument, plugins=[mod]).run()["rev"] == "cba"


def test_templates_in_run_commands(tmp_path):
    path = write(
        tmp_path,
        """
        inputs: {input: "big sky", style: noir}
        steps:
          - {name: plain, run: "echo {{input}}"}
          - {name: styled, run: "echo {{inputs.style}}-{{input}}"}
          - {name: piped, run: "echo <{{input}}>", input_from: styled}
          - {name: both, run: "echo {{steps.plain.output}} / {{steps.piped.output}}"}
        """,
    )
    result = lf.load_pipeline(path).run()
    assert result["plain"] == "big sky"
    assert result["styled"] == "noir-big sky"
    assert result["piped"] == "<noir-big sky>"  # {{input}} is the upstream value here
    assert result["both"] == "big sky / <noir-big sky>"


def test_templates_in_params(tmp_path):
    path = write(
        tmp_path,
        """
        inputs: {input: cat, style: noir}
        steps:
          - name: first
            type: lftest_text_to_image
            params: {prompt: "{{input}} in {{inputs.style}}"}
          - name: second
            type: lftest_join
            input_from: first
            params: {suffix: "{{input}}|{{steps.first.output}}|{{inputs.style}}", sep: " & "}
        """,
    )
    result = lf.load_pipeline(path).run()
    assert result["first"] == "default-model:cat in noir.png"
    first = result["first"]
    assert result["second"] == f"{first} & {first}|{first}|noir"


def test_inputs_defaults_overridden_and_undeclared_inputs_allowed(tmp_path):
    path = write(
        tmp_path,
        """
        inputs: {input: default, tone: calm}
        steps:
          - {name: say, run: "echo {{input}} {{inputs.tone}}"}
          - {name: extra_step, run: "echo [{{inputs.extra}}]"}
        """,
    )
    pipeline = lf.load_pipeline(path)
    assert pipeline.inputs == {"input": "default", "tone": "calm"}
    result = pipeline.run({"input": "given", "extra": "set on the command line"})
    assert result["say"] == "given calm"  # the default for 'tone' still applies
    assert result["extra_step"] == "[set on the command line]"
    # a --set input that no step reads is allowed too
    result = pipeline.run({"extra": "x", "nobody_reads_this": 1})
    assert result["say"] == "default calm"


def test_needs_orders_steps_without_passing_data(tmp_path, fresh_state):
    path = write(
        tmp_path,
        """
        settings: {order: dataflow}
        steps:
          - {name: second, type: lftest_work, needs: [first], params: {label: second}}
          - {name: first, type: lftest_work, params: {label: first, seconds: 0.2}}
        """,
    )
    result = lf.load_pipeline(path).run()
    assert result["second"] == "second"  # no input was passed
    assert fresh_state.times("start")["second"] >= fresh_state.times("end")["first"]


def test_order_sequence_is_the_default(tmp_path, fresh_state):
    path = write(
        tmp_path,
        """
        steps:
          - {name: a, type: lftest_work, params: {label: a, seconds: 0.1}}
          - {name: b, type: lftest_work, params: {label: b, seconds: 0.1}}
          - {name: c, type: lftest_work, params: {label: c, seconds: 0.1}}
        """,
    )
    assert lf.load_pipeline(path).run().ok
    starts, ends = fresh_state.times("start"), fresh_state.times("end")
    assert fresh_state.labels() == ["a", "b", "c"]
    assert starts["b"] >= ends["a"] and starts["c"] >= ends["b"]
    assert fresh_state.peak == 1


def test_order_dataflow_overlaps_independent_steps(tmp_path, fresh_state):
    path = write(
        tmp_path,
        """
        settings: {order: dataflow}
        steps:
          - {name: a, type: lftest_work, params: {label: a, seconds: 0.4}}
          - {name: b, type: lftest_work, params: {label: b, seconds: 0.4}}
          - {name: c, type: lftest_work, params: {label: c, seconds: 0.4}}
          - {name: d, type: lftest_work, input_from: a, params: {label: d}}
        """,
    )
    result = lf.load_pipeline(path).run()
    assert fresh_state.peak >= 2
    assert result["d"] == "a>d"
    assert fresh_state.times("start")["d"] >= fresh_state.times("end")["a"]


def test_parallel_group_runs_its_steps_concurrently(tmp_path, fresh_state):
    path = write(
        tmp_path,
        """
        steps:
          - {name: before, type: lftest_work, params: {label: before}}
          - type: parallel_group
            name: "group"
            steps:
              - {name: g1, type: lftest_work, params: {label: g1, seconds: 0.4}}
              - {name: g2, type: lftest_work, params: {label: g2, seconds: 0.4}}
              - {name: g3, type: lftest_work, params: {label: g3, seconds: 0.4}}
          - {name: after, type: lftest_work, params: {label: after}}
        """,
    )
    assert lf.load_pipeline(path).run().ok
    starts, ends = fresh_state.times("start"), fresh_state.times("end")
    assert fresh_state.peak >= 2
    assert all(starts[g] >= ends["before"] for g in ("g1", "g2", "g3"))
    assert all(starts["after"] >= ends[g] for g in ("g1", "g2", "g3"))


def test_parallel_group_max_workers_bounds_the_group(tmp_path, fresh_state):
    path = write(
        tmp_path,
        """
        settings: {max_workers: 4}
        steps:
          - type: parallel_group
            name: one_at_a_time
            max_workers: 1
            steps:
              - {name: g1, type: lftest_work, params: {label: g1, seconds: 0.1}}
              - {name: g2, type: lftest_work, params: {label: g2, seconds: 0.1}}
              - {name: g3, type: lftest_work, params: {label: g3, seconds: 0.1}}
        """,
    )
    assert lf.load_pipeline(path).run().ok
    assert sorted(fresh_state.labels()) == ["g1", "g2", "g3"]
    assert fresh_state.peak == 1


def test_parallel_group_fail_fast_false_lets_the_others_finish(tmp_path, fresh_state):
    path = write(
        tmp_path,
        """
        settings: {order: dataflow}
        steps:
          - type: parallel_group
            name: tolerant
            fail_fast: false
            steps:
              - {name: bad, type: lftest_work, params: {label: bad, fail: true}}
              - {name: slow, type: lftest_work, params: {label: slow, seconds: 0.4}}
              - {name: other, type: lftest_work, params: {label: other, seconds: 0.2}}
          - {name: uses_bad, type: lftest_work, input_from: bad, params: {label: uses_bad}}
          - {name: uses_slow, type: lftest_work, input_from: slow, params: {label: uses_slow}}
        """,
    )
    result = run_anyway(lf.load_pipeline(path))
    assert result.status == "failed"
    tasks = result.tasks
    assert tasks["bad"].status == "failed"
    assert isinstance(tasks["bad"].error, RuntimeError)
    assert tasks["slow"].status == "succeeded" and tasks["other"].status == "succeeded"
    assert tasks["uses_bad"].status == "skipped"
    assert "uses_bad" not in fresh_state.labels()
    assert tasks["uses_slow"].status == "succeeded"
    assert result["uses_slow"] == "slow>uses_slow"


def test_parallel_group_timeout_fails_unfinished_steps_quickly(tmp_path, fresh_state):
    path = write(
        tmp_path,
        """
        steps:
          - type: parallel_group
            name: bounded
            timeout: 0.5
            steps:
              - {name: quick, type: lftest_work, params: {label: quick}}
              - {name: stuck, type: lftest_wait, params: {label: stuck}}
        """,
    )
    pipeline = lf.load_pipeline(path)
    begin = time.perf_counter()
    try:
        result = run_anyway(pipeline)
    finally:
        STATE["release"].set()
    assert time.perf_counter() - begin < 5
    assert result.tasks["quick"].status == "succeeded"
    stuck = result.tasks["stuck"]
    assert stuck.status == "failed"
    assert isinstance(stuck.error, lf.TaskTimeout)
    assert result.status == "failed"


def _dataflow_of_three(tmp_path: Path, settings: str = "order: dataflow") -> Path:
    return write(
        tmp_path,
        f"""
        settings: {{{settings}}}
        steps:
          - {{name: a, type: lftest_work, params: {{label: a, seconds: 0.2}}}}
          - {{name: b, type: lftest_work, params: {{label: b, seconds: 0.2}}}}
          - {{name: c, type: lftest_work, params: {{label: c, seconds: 0.2}}}}
        """,
    )


@pytest.mark.parametrize(
    "settings, env",
    [
        ("order: dataflow, parallel: false", {}),
        ("order: dataflow, max_workers: 1", {}),
        ("order: dataflow", {"LAYERFLOW_PARALLEL": "false"}),
        ("order: dataflow", {"LAYERFLOW_MAX_WORKERS": "1"}),
        ("order: dataflow, parallel: true, max_workers: 4", {"LAYERFLOW_PARALLEL": "false"}),
    ],
    ids=["parallel-false", "max-workers-1", "env-parallel", "env-max-workers", "env-wins"],
)
def test_one_at_a_time(tmp_path, fresh_state, monkeypatch, settings, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = lf.load_pipeline(_dataflow_of_three(tmp_path, settings)).run()
    assert result.ok
    assert sorted(fresh_state.labels()) == ["a", "b", "c"]
    assert fresh_state.peak == 1


def test_settings_max_workers_bounds_concurrency(tmp_path, fresh_state):
    path = write(
        tmp_path,
        """
        settings: {order: dataflow, max_workers: 2}
        steps:
          - {name: a, type: lftest_work, params: {label: a, seconds: 0.2}}
          - {name: b, type: lftest_work, params: {label: b, seconds: 0.2}}
          - {name: c, type: lftest_work, params: {label: c, seconds: 0.2}}
          - {name: d, type: lftest_work, params: {label: d, seconds: 0.2}}
        """,
    )
    assert lf.load_pipeline(path).run().ok
    assert fresh_state.peak <= 2
    assert len(fresh_state.labels()) == 4


def test_rate_limit_delay_spaces_task_starts(tmp_path, fresh_state):
    path = write(
        tmp_path,
        """
        settings: {order: dataflow, rate_limit_delay: 0.2}
        steps:
          - {name: a, type: lftest_work, params: {label: a}}
          - {name: b, type: lftest_work, params: {label: b}}
          - {name: c, type: lftest_work, params: {label: c}}
          - {name: d, type: lftest_work, params: {label: d}}
        """,
    )
    assert lf.load_pipeline(path).run().ok
    starts = sorted(fresh_state.times("start").values())
    assert len(starts) == 4
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.15, gaps


def test_enabled_false_skips_a_step(tmp_path, fresh_state):
    path = write(
        tmp_path,
        """
        steps:
          - {name: a, type: lftest_work, params: {label: a}}
          - {name: off, type: lftest_work, enabled: false, params: {label: off}}
          - type: parallel_group
            steps:
              - {name: g_on, type: lftest_work, params: {label: g_on}}
              - {name: g_off, type: lftest_work, enabled: false, params: {label: g_off}}
          - {name: z, type: lftest_work, enabled: true, params: {label: z}}
        """,
    )
    result = lf.load_pipeline(path).run()
    assert result.ok
    assert sorted(fresh_state.labels()) == ["a", "g_on", "z"]
    for name in ("off", "g_off"):
        assert name not in result.tasks or result.tasks[name].status == "skipped"


def test_description_is_accepted_at_top_and_on_steps(tmp_path):
    path = write(
        tmp_path,
        """
        name: described
        description: "What this pipeline is for"
        steps:
          - name: a
            description: "The first step"
            run: "echo a"
          - type: parallel_group
            name: grp
            description: "A group"
            steps:
              - {name: b, description: "inside the group", run: "echo b"}
        """,
    )
    pipeline = lf.load_pipeline(path)
    assert pipeline.name == "described"
    result = pipeline.run()
    assert result["a"] == "a" and result["b"] == "b"


def test_ai_content_pipeline_style_file_runs_unchanged(tmp_path):
    path = write(
        tmp_path,
        """
        name: "ai_style"
        description: "Generate a base image, make three variations in parallel, analyze one"
        inputs: {input: "beautiful landscape"}
        settings:
          parallel: true
          max_workers: 4
          rate_limit_delay: 0.05
        steps:
          - name: "base_image"
            type: lftest_text_to_image
            model: "flux"
            params:
              prompt: "{{input}}"
          - type: "parallel_group"
            name: "variations"
            max_workers: 3
            steps:
              - name: "video"
                type: lftest_image_to_video
                input_from: "base_image"
                model: "kling"
                params: {duration: 10}
              - {name: "edited", type: lftest_image_to_image, input_from: "base_image",
                 params: {prompt: "add dramatic lighting"}}
              - {name: "upscaled", type: lftest_upscale, input_from: "base_image",
                 params: {factor: 4}}
          - name: "final"
            type: lftest_analyze_image
            input_from: "edited"
        """,
    )
    result = lf.load_pipeline(path).run()
    assert result.ok
    base = "flux:beautiful landscape.png"
    assert result["base_image"] == base
    assert result["video"] == "flux:beautiful landscape-kling-10s.mp4"
    assert result["edited"] == "flux:beautiful landscape-lighting.png"
    assert result["upscaled"] == "flux:beautiful landscape-x4.png"
    assert result["final"] == "flux:beautiful landscape-lighting.png: what is it?"


# === 2. shell steps ===========================================================================


def test_a_non_zero_exit_fails_with_command_failed(tmp_path):
    path = write(
        tmp_path,
        """
        steps:
          - {name: boom, run: "sh -c 'echo first line >&2; echo oops >&2; exit 3'"}
          - {name: never, run: "echo never"}
        """,
    )
    with pytest.raises(lf.TaskFailed) as info:
        lf.load_pipeline(path).run()
    error = info.value.__cause__
    assert isinstance(error, lf.CommandFailed)
    assert info.value.task == "boom"
    assert error.returncode == 3
    assert "oops" in error.stderr
    assert "3" in str(error) and "oops" in str(error)
    assert info.value.result.tasks["boom"].error is error
    assert info.value.result.tasks["never"].status != "succeeded"


def test_run_is_not_a_shell_unless_asked(tmp_path):
    path = write(
        tmp_path,
        """
        steps:
          - {name: argv, run: "echo a | tr a b"}
          - {name: shell, run: "echo a | tr a b", shell: true}
        """,
    )
    result = lf.load_pipeline(path).run()
    assert result["argv"] == "a | tr a b"  # '|' was just an argument of echo
    assert result["shell"] == "b"


def test_env_and_cwd_per_step(tmp_path):
    (tmp_path / "work").mkdir()
    path = write(
        tmp_path,
        """
        inputs: {input: world}
        steps:
          - name: greet
            run: "sh -c 'echo \\"$LFTEST_GREETING\\"'"
            env: {LFTEST_GREETING: "hello {{input}}"}
          - {name: where, run: "pwd -P", cwd: work}
          - {name: default_where, run: "pwd -P"}
        """,
    )
    result = lf.load_pipeline(path).run()
    assert result["greet"] == "hello world"
    assert Path(result["where"]) == (tmp_path / "work").resolve()
    assert Path(result["default_where"]) == tmp_path.resolve()  # the YAML file's folder
    assert "LFTEST_GREETING" not in os.environ


def test_step_timeout_kills_the_command_quickly(tmp_path):
    path = write(
        tmp_path,
        """
        steps:
          - {name: sleepy, timeout: 0.5, run: "sh -c 'echo $$ > sleeper.pid; exec sleep 30'"}
        """,
    )
    pipeline = lf.load_pipeline(path)
    begin = time.perf_counter()
    result = run_anyway(pipeline)
    assert time.perf_counter() - begin < 5
    task = result.tasks["sleepy"]
    assert task.status == "failed"
    assert isinstance(task.error, lf.TaskTimeout)
    pid = int((tmp_path / "sleeper.pid").read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # killed and reaped: the pid is gone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        pytest.fail(f"the timed-out command (pid {pid}) is still running")


INJECTION = "x; rm -rf x && $(touch pwned) `touch pwned2` | touch pwned3 > out 'q\" $HOME"


@pytest.mark.parametrize("shell", [False, True], ids=["argv", "shell"])
def test_values_cannot_inject_shell_syntax(tmp_path, shell):
    (tmp_path / "x").mkdir()
    flag = "\n    shell: true" if shell else ""
    path = write(
        tmp_path,
        "steps:\n"
        "  - name: from_input\n"
        f'    run: "echo {{{{input}}}}"{flag}\n'
        "  - name: from_upstream\n"
        "    input_from: from_input\n"
        f'    run: "echo {{{{input}}}}"{flag}\n'
        "  - name: from_named_input\n"
        f'    run: "echo {{{{inputs.other}}}}"{flag}\n',
    )
    result = lf.load_pipeline(path).run({"input": INJECTION, "other": INJECTION})
    assert result["from_input"] == INJECTION
    assert result["from_upstream"] == INJECTION
    assert result["from_named_input"] == INJECTION
    leftovers = {"pwned", "pwned2", "pwned3", "out"} & {p.name for p in tmp_path.iterdir()}
    assert not leftovers
    assert (tmp_path / "x").is_dir()


@pytest.mark.parametrize("quoted", ["'{{input}}'", '\\"{{input}}\\"'], ids=["single", "double"])
def test_shell_values_stay_literal_inside_quotes(tmp_path, quoted):
    path = write(tmp_path, f'steps:\n  - {{name: s, shell: true, run: "echo {quoted}"}}\n')
    value = "v $(touch pwned)"
    result = lf.load_pipeline(path).run({"input": value})
    assert not (tmp_path / "pwned").exists(), "the value's $(touch pwned) ran in the shell"
    assert result["s"] == value


# === 3. errors before anything runs ===========================================================


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(
        tmp_path,
        """
        name: broken
        steps:
          - {name: a, run: "echo a"}
          - {name: b, type: lftest_work, params: {label: [b, c}}
        """,
    )
    err = load_error(path)
    assert_reported(err, path, 4, "not valid YAML")
    assert err.problems[0][:2] == (str(path), 4)


@pytest.mark.parametrize("last", [False, True], ids=["next-line", "end-of-file"])
def test_unclosed_bracket_names_the_line_it_was_opened_on(tmp_path, last):
    text = 'name: broken\nsteps:\n  - {name: a, run: "echo a"\n'
    if not last:
        text += '  - {name: b, run: "echo b"}\n'
    path = write(tmp_path, text)
    err = load_error(path)
    assert "not valid YAML" in str(err)
    assert f"{path}:3:" in str(err) or "line 3" in str(err), str(err)


def test_unknown_top_level_key(tmp_path):
    path = write(
        tmp_path,
        """
        name: typo
        stepz:
          - {name: a, run: "echo a"}
        """,
    )
    err = load_error(path)
    assert_reported(err, path, 2, "'stepz'", "Did you mean 'steps'")


def test_unknown_step_key(tmp_path):
    path = write(
        tmp_path,
        """
        steps:
          - {name: a, run: "echo a"}
          - name: b
            run: "echo {{input}}"
            input_form: a
        """,
    )
    err = load_error(path)
    assert_reported(err, path, line_of(path, "input_form"), "'b'", "Did you mean 'input_from'")


def test_unknown_key_on_a_typed_step_suggests_an_accepted_parameter(tmp_path):
    path = write(
        tmp_path,
        """
        steps:
          - name: img
            type: lftest_text_to_image
            modle: flux
            params: {prompt: cat}
          - name: img2
            type: lftest_text_to_image
            params: {promt: cat}
        """,
    )
    err = load_error(path)
    assert len(err.problems) == 2
    assert_reported(err, path, line_of(path, "modle"), "'img'", "Did you mean 'model'")
    assert_reported(err, path, line_of(path, "promt"), "'img2'", "Did you mean 'prompt'")


@pytest.mark.parametrize(
    "text, needle, expected",
    [
        (
            'steps:\n  - name: s\n    run: "echo a"\n    retries: "three"\n',
            "retries",
            ["'s'", "retries", "whole number"],
        ),
        (
            'steps:\n  - name: s\n    run: "echo a"\n    timeout: -1\n',
            "timeout",
            ["'s'", "timeout", "> 0"],
        ),
        (
            'settings: {max_workers: 0}\nsteps:\n  - {name: s, run: "echo a"}\n',
            "max_workers",
            ["max_workers", ">= 1"],
        ),
        (
            "steps:\n  - name: s\n    type: lftest_work\n    params: {label: s}\n"
            "    retries: 1.5\n",
            "retries",
            ["'s'", "retries", "whole number"],
        ),
        (
            "steps:\n  - type: parallel_group\n    name: g\n    max_workers: 0\n    steps:\n"
            '      - {name: s, run: "echo a"}\n',
            "max_workers",
            ["'g'", "max_workers", ">= 1"],
        ),
    ],
    ids=["retries-text", "timeout-negative", "settings-max-workers", "retries-float", "group"],
)
def test_wrong_types(tmp_path, text, needle, expected):
    path = write(tmp_path, text)
    err = load_error(path)
    assert_reported(err, path, line_of(path, needle), *expected)


def test_unknown_step_type_suggests_a_registered_one(tmp_path):
    path = write(
        tmp_path,
        """
        steps:
          - name: img
            type: lftest_text_to_imag
            params: {prompt: cat}
        """,
    )
    err = load_error(path)
    assert_reported(
        err, path, line_of(path, "type:"), "'img'", "Did you mean 'lftest_text_to_image'"
    )


def test_uses_with_a_missing_module(tmp_path):
    missing = f"lftest_missing_{uuid.uuid4().hex[:10]}"
    path = write(tmp_path, f'steps:\n  - name: s\n    uses: "{missing}:fn"\n')
    err = load_error(path)
    assert_reported(err, path, 3, "'s'", missing)


def test_uses_with_a_missing_function_suggests_the_closest(tmp_path):
    mod = module(tmp_path, "def summarize(input):\n    return input\n")
    path = write(tmp_path, f'steps:\n  - name: s\n    uses: "{mod}:summarise"\n')
    err = load_error(path)
    assert_reported(err, path, 3, "'s'", "'summarise'", "summarize")


def test_input_from_a_missing_step_suggests_the_closest(tmp_path):
    path = write(
        tmp_path,
        """
        steps:
          - {name: base_image, run: "echo a"}
          - name: final
            run: "echo {{input}}"
            input_from: base_imag
        """,
    )
    err = load_error(path)
    text = str(err)
    step_line, key_line = line_of(path, "name: final"), line_of(path, "input_from")
    assert f"{path}:{step_line}:" in text or f"{path}:{key_line}:" in text, text
    assert "'final'" in text and "'base_imag'" in text and "Did you mean 'base_image'" in text


def test_a_cycle_via_needs_is_reported_before_anything_runs(tmp_path, fresh_state):
    path = write(
        tmp_path,
        """
        settings: {order: dataflow}
        steps:
          - {name: start, type: lftest_work, params: {label: start}}
          - {name: a, type: lftest_work, needs: [b], params: {label: a}}
          - {name: b, type: lftest_work, needs: [a], params: {label: b}}
        """,
    )
    with pytest.raises(lf.PipelineError) as info:
        lf.load_pipeline(path).run()
    assert "a -> b -> a" in str(info.value) or "b -> a -> b" in str(info.value)
    assert f"{path}:{line_of(path, 'name: a,')}:" in str(info.value)  # found at load time
    assert fresh_state.labels() == []  # nothing ran, not even the independent step


def test_duplicate_step_names(tmp_path):
    path = write(
        tmp_path,
        """
        steps:
          - {name: twice, run: "echo 1"}
          - type: parallel_group
            steps:
              - {name: twice, run: "echo 2"}
        """,
    )
    err = load_error(path)
    assert_reported(err, path, line_of(path, "twice", nth=2), "'twice'", "duplicate")


def test_unknown_step_in_a_template_suggests_the_closest(tmp_path):
    path = write(
        tmp_path,
        """
        steps:
          - {name: node, run: "echo a"}
          - {name: user, run: "echo {{steps.nope.output}}"}
          - {name: typed, type: lftest_join, input_from: node,
             params: {suffix: "{{steps.nod.output}}"}}
        """,
    )
    err = load_error(path)
    assert len(err.problems) == 2
    assert_reported(err, path, 3, "'user'", "'nope'", "Did you mean 'node'")
    assert_reported(err, path, 4, "'typed'", "'nod'", "Did you mean 'node'")


def test_malformed_template(tmp_path):
    path = write(
        tmp_path,
        """
        steps:
          - {name: a, run: "echo a"}
          - {name: b, run: "echo {{foo}}"}
          - {name: c, type: lftest_join, input_from: a, params: {suffix: "{{ steps.a }}"}}
        """,
    )
    err = load_error(path)
    assert len(err.problems) == 2
    assert_reported(err, path, 3, "'b'", "{{foo}}", "{{input}}", "{{steps.NAME.output}}")
    assert_reported(err, path, 4, "'c'", "{{steps.a}}")


def test_every_problem_is_reported_at_once(tmp_path, fresh_state):
    path = write(
        tmp_path,
        """
        nme: many
        settings: {max_workers: 0, paralel: true}
        steps:
          - {name: a, type: lftest_work, params: {label: a}}
          - name: b
            run: "echo b"
            input_form: a
            retries: "three"
          - {name: c, type: lftest_text_to_imag}
        """,
    )
    err = load_error(path)
    assert len(err.problems) >= 6, err.problems
    text = str(err)
    assert text.startswith(f"{len(err.problems)} problems")
    expected = {
        "nme": "Did you mean 'name'",
        "max_workers": ">= 1",
        "paralel": "Did you mean 'parallel'",
        "input_form": "Did you mean 'input_from'",
        "retries": "whole number",
        "lftest_text_to_imag": "Did you mean 'lftest_text_to_image'",
    }
    for needle, fragment in expected.items():
        line = line_of(path, needle)
        assert any(
            f == str(path) and ln == line and fragment in msg for f, ln, msg in err.problems
        ), (needle, err.problems)
    assert fresh_state.labels() == []


def test_a_missing_file(tmp_path):
    with pytest.raises(lf.PipelineError, match="no such file"):
        lf.load_pipeline("missing.yaml")
    missing = tmp_path / "nope.yaml"
    err = load_error(missing)
    assert str(missing) in str(err) and "no such file" in str(err)


def test_a_missing_required_parameter_is_a_load_time_error(tmp_path, fresh_state):
    path = write(
        tmp_path,
        """
        steps:
          - {name: first, type: lftest_work, params: {label: first}}
          - {name: img, type: lftest_text_to_image, model: flux}
        """,
    )
    try:
        pipeline = lf.load_pipeline(path)
    except lf.PipelineError as e:
        assert_reported(e, path, 3, "'img'", "prompt")
        return
    result = run_anyway(pipeline)
    pytest.fail(
        f"the file loaded; at run time 'img' failed with {result.tasks['img'].error!r} "
        f"after {fresh_state.labels()} had run"
    )


def test_an_input_name_with_a_dash(tmp_path):
    path = write(tmp_path, 'steps:\n  - {name: a, run: "echo {{inputs.my-name}}"}\n')
    try:
        pipeline = lf.load_pipeline(path)
    except lf.PipelineError as e:  # rejecting the name, with its line, is fine too
        assert_reported(e, path, 2, "my-name")
        return
    assert pipeline.run({"my-name": "hy"})["a"] == "hy"


def test_inputs_template_naming_a_step_is_not_the_steps_output(tmp_path):
    path = write(
        tmp_path,
        """
        settings: {order: dataflow}
        steps:
          - {name: a, run: "echo {{inputs.b}}"}
          - {name: b, run: "echo step-b"}
        """,
    )
    with pytest.raises(lf.LayerflowError):
        lf.load_pipeline(path).run()


def test_shell_steps_run_in_worker_processes(tmp_path):
    # a run: step is a picklable object, so it can be sent to a worker process (or a Dask
    # worker); what it keeps of this process (the commands it runs) is started afresh there
    path = write(
        tmp_path,
        """
        steps:
          - {name: base, run: "echo hello"}
          - {name: shout, run: "echo {{input}}!", input_from: base}
        """,
    )
    run = lf.load_pipeline(path).run(backend="process")
    assert run["shout"] == "hello!"
    assert run.ok


def test_a_fail_fast_group_stops_only_itself_when_the_run_continues(tmp_path, fresh_state):
    # regression: the group's fail_fast: true stopped the whole run, cancelling `outside`
    path = write(
        tmp_path,
        """
        settings: {order: dataflow, fail_fast: false, max_workers: 1}
        steps:
          - type: parallel_group
            name: strict
            fail_fast: true
            steps:
              - {name: bad, type: lftest_work, params: {label: bad, fail: true}, priority: 9}
              - {name: later, type: lftest_work, params: {label: later}}
          - {name: uses_later, type: lftest_work, input_from: later, params: {label: uses_later}}
          - {name: outside, type: lftest_work, params: {label: outside, seconds: 0.1}}
          - {name: after_outside, type: lftest_work, input_from: outside, params: {label: x}}
        """,
    )
    result = run_anyway(lf.load_pipeline(path))
    tasks = result.tasks
    assert result.status == "failed"
    assert tasks["bad"].status == "failed"
    assert tasks["later"].status == "cancelled"  # its group stopped before it started
    assert tasks["uses_later"].status == "skipped"
    assert tasks["outside"].status == "succeeded"  # not in the group: the run went on
    assert tasks["after_outside"].status == "succeeded"
    assert "later" not in fresh_state.labels()


def test_a_task_group_from_python(fresh_state):
    flow = lf.Flow("groups")
    group = lf.TaskGroup("g", fail_fast=True)

    def boom():
        raise RuntimeError("boom")

    flow.add(boom, group=group, priority=5)
    flow.add(lambda: 1, name="sibling", group=group)
    flow.add(lambda: 2, name="free")
    result = flow.run(fail_fast=False, max_workers=1)
    statuses = {n: t.status for n, t in result.tasks.items()}
    assert statuses == {"boom": "failed", "sibling": "cancelled", "free": "succeeded"}
    with pytest.raises(lf.InvalidOptionError, match="group must be an lf.TaskGroup"):
        flow.add(lambda: 3, name="bad", group="g")
    with pytest.raises(lf.InvalidOptionError, match="timeout must be a number"):
        lf.TaskGroup("g", timeout=-1)


def test_a_shell_step_stopped_as_its_command_starts_does_not_run_it(tmp_path, monkeypatch):
    # regression: a stop that came before the command started was erased when it started,
    # so the command ran to its end
    path = write(tmp_path, "steps:\n  - {name: nap, run: 'sleep 30'}\n")
    flow = lf.load_pipeline(path)
    (task,) = flow.tasks
    command = task.fn
    real = subprocess.Popen

    def popen(*args, **kwargs):
        command.cancel()  # fail-fast reaches the step just as its command starts
        return real(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    begin = time.perf_counter()
    with pytest.raises(lf.LayerflowError, match="was stopped"):
        command()
    assert time.perf_counter() - begin < 10
    monkeypatch.setattr(subprocess, "Popen", real)
    # the stop was for that attempt: the next one runs
    command.template, command.argv_t = "true", ["true"]
    assert command() == ""


def test_a_fail_fast_group_stops_a_running_shell_step_and_skips_what_needs_it(tmp_path):
    # the group's running sibling is killed; what needs it is skipped (not left waiting)
    path = write(
        tmp_path,
        """
        settings: {order: dataflow, fail_fast: false, max_workers: 2}
        steps:
          - type: parallel_group
            name: strict
            fail_fast: true
            steps:
              - {name: bad, run: "sh -c 'sleep 0.3; exit 3'", priority: 9}
              - {name: long, run: "sleep 30"}
          - {name: uses_long, run: "echo {{steps.long.output}}", needs: [long]}
          - {name: outside, run: "echo independent"}
        """,
    )
    begin = time.perf_counter()
    result = run_anyway(lf.load_pipeline(path), timeout=60)
    assert time.perf_counter() - begin < 20
    statuses = {n: t.status for n, t in result.tasks.items()}
    assert statuses == {
        "bad": "failed",
        "long": "cancelled",
        "uses_long": "skipped",
        "outside": "succeeded",
    }


def test_the_pipelines_folder_is_on_sys_path_only_while_it_loads_and_runs(tmp_path, fresh_state):
    # regression: folders added to sys.path for plugins were never removed
    (tmp_path / "lfpathsteps.py").write_text(
        "import sys\n"
        "def where(here):\n"
        "    import lfpathhelper  # a sibling imported when the step runs\n"
        "    return here in sys.path and lfpathhelper.VALUE\n"
    )
    (tmp_path / "lfpathhelper.py").write_text("VALUE = 'helped'\n")
    folder = str(tmp_path.resolve())
    path = write(
        tmp_path,
        f"steps:\n  - {{name: w, uses: 'lfpathsteps:where', params: {{here: {folder!r}}}}}\n",
    )
    pipeline = lf.load_pipeline(path)
    assert folder not in sys.path
    assert pipeline.run()["w"] == "helped"
    assert folder not in sys.path
    run = pipeline.run(backend="process")  # worker processes import it from there too
    assert run["w"] == "helped"
    assert folder not in sys.path


def test_a_step_that_timed_out_once_succeeds_on_its_retry(tmp_path):
    # the stop of the timed-out attempt once outlived it: the retry, started while the first
    # attempt's thread was still ending, was "stopped: another step failed" in about half
    # the runs; each attempt is now stopped on its own
    script = "if [ -e tried ]; then echo fine; else touch tried; exec sleep 30; fi"
    path = write(
        tmp_path,
        f"""
        steps:
          - name: flaky
            timeout: 0.5
            retries: 1
            run: "sh -c '{script}'"
        """,
    )
    pipeline = lf.load_pipeline(path)
    for _ in range(6):
        (tmp_path / "tried").unlink(missing_ok=True)
        result = pipeline.run(progress=False)
        assert result.ok, result.tasks["flaky"].error
        assert result["flaky"] == "fine"
        assert result.tasks["flaky"].attempts == 2


def test_a_missing_input_is_both_a_pipeline_error_and_a_missing_input_error(tmp_path):
    # Python users catch lf.MissingInputError, as Flow.run documents; the CLI a PipelineError
    path = write(tmp_path, 'steps:\n  - {name: hi, run: "echo {{inputs.who}}"}\n')
    with pytest.raises(lf.MissingInputError) as caught:
        lf.load_pipeline(path).run(progress=False)
    error = caught.value
    assert isinstance(error, lf.PipelineError)
    assert (error.task, error.missing) == ("hi", "who")
    assert error.problems[0][1] == 2 and "--set who=VALUE" in str(error)


def test_one_pipeline_does_not_stop_another_pipelines_commands(tmp_path):
    long = tmp_path / "long.yaml"
    long.write_text("steps:\n  - {name: wait, run: \"sh -c 'sleep 1; echo done'\"}\n")
    short = tmp_path / "short.yaml"
    short.write_text('steps:\n  - {name: quick, run: "echo quick"}\n')
    out = {}
    slow = threading.Thread(target=lambda: out.update(lf.load_pipeline(long).run().values))
    slow.start()
    time.sleep(0.3)
    assert lf.load_pipeline(short).run()["quick"] == "quick"
    slow.join()
    assert out == {"wait": "done"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('steps:\n  - {name: a, run: "echo \'hi"}\n', "cannot be split"),
        ('steps:\n  - {name: a, run: "  "}\n', "the command is empty"),
        (
            'steps:\n  - {name: a, uses: "textwrap:indent", text: "{{steps.nope.output}}", '
            'prefix: "> "}\n',
            "no step named 'nope'",
        ),
    ],
)
def test_bad_steps_are_load_time_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(lf.PipelineError, match=message) as info:
        lf.load_pipeline(path)
    assert f"{path}:" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "steps:\n  - {type: parallel_group, name: g, steps: [{name: a, run: 'echo a'}]}\n"
            "  - {type: parallel_group, name: g, steps: [{name: b, run: 'echo b'}]}\n",
            "two parallel_groups are named 'g'",
        ),
        ("steps:\n  - {name: 123, run: 'echo a'}\n", "a step's name must be text"),
    ],
)
def test_more_load_time_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(lf.PipelineError, match=message):
        lf.load_pipeline(path)


def test_a_missing_cwd_is_named(tmp_path):
    path = tmp_path / "cwd.yaml"
    path.write_text("steps:\n  - {name: a, run: 'echo a', cwd: nowhere}\n")
    run = lf.load_pipeline(path).run(fail_fast=False)
    assert "cwd" in str(run.tasks["a"].error) and "not a folder" in str(run.tasks["a"].error)


def test_fail_fast_stops_running_shell_steps(tmp_path):
    path = tmp_path / "ff.yaml"
    path.write_text(
        "steps:\n"
        "  - type: parallel_group\n"
        "    name: g\n"
        "    steps:\n"
        "      - {name: bad, run: \"sh -c 'sleep 0.3; exit 1'\"}\n"
        '      - {name: slow, run: "sleep 20"}\n'
    )
    pipeline = lf.load_pipeline(path)
    t0 = time.monotonic()
    with pytest.raises(lf.TaskFailed) as info:
        pipeline.run()
    assert time.monotonic() - t0 < 10
    assert info.value.task == "bad"
    assert info.value.result.tasks["slow"].status == "cancelled"
    # the same pipeline runs again normally afterwards
    path.write_text("steps:\n  - {name: ok, run: 'echo fine'}\n")
    assert lf.load_pipeline(path).run()["ok"] == "fine"


def test_a_bad_run_option_in_settings_is_reported_once(tmp_path):
    # a run option (timeout, max_workers, ...) is checked by the run's own rule, not also by
    # the schema's: one problem per value, in the run's words
    path = write(tmp_path, "settings:\n  timeout: -1\n  max_workers: 0\nsteps:\n  - run: echo hi\n")
    err = load_error(path)
    assert [line for _, line, _ in err.problems] == [2, 3], err.problems
    assert_reported(err, path, 2, "settings.timeout must be a number of seconds > 0, got -1")
    assert_reported(err, path, 3, "settings.max_workers must be a whole number >= 1")
