"""YAML ``foreach:`` and ``when:`` through the public API (``lf.load_pipeline``) and the
command line (in a subprocess).

``uses:`` targets are small modules written next to each YAML file under unique names, so
that one test's module state (events, counters) is never another's; step types are
registered under names starting with ``lfforeach_``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

import layerflow as lf

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


# --- helpers ------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def module(tmp_path: Path, source: str) -> str:
    """A module with a unique name next to the pipelines; its name."""
    name = f"lfforeach_mod_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return name


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    """The 1-based number of the ``nth`` line of ``path`` that contains ``needle``."""
    hits = [i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} not found {nth} times in {path}"
    return hits[nth - 1]


def problems(path: Path) -> list[tuple[str, int | None, str]]:
    with pytest.raises(lf.PipelineError) as info:
        lf.load_pipeline(path)
    return info.value.problems


def reported(
    found: list[tuple[str, int | None, str]], path: Path, line: int, *fragments: str
) -> None:
    """One problem names ``path``, ``line`` and every fragment."""
    for file, at, message in found:
        if file == str(path) and at == line and all(f in message for f in fragments):
            return
    shown = "\n".join(f"{f}:{at}: {m}" for f, at, m in found)
    raise AssertionError(f"no problem at line {line} with {fragments}:\n{shown}")


def layerflow(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "layerflow", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def element_names(run: lf.RunResult, step: str) -> list[str]:
    return sorted(n for n in run.tasks if n.startswith(f"{step}["))


@lf.step_type("lfforeach_label")
def _label(word: Any, position: int, prefix: str = "") -> str:
    """A registered step type: ``word`` and its index, for ``type:`` foreach steps."""
    return f"{prefix}{position}={word}"


# --- what a foreach iterates over ---------------------------------------------------------------


def test_foreach_over_a_step_output_runs_once_per_element(tmp_path):
    mod = module(tmp_path, "def names():\n    return ['ann', 'bob', 'cy']\n")
    path = write(
        tmp_path,
        f"""
        steps:
          - {{name: names, uses: "{mod}:names"}}
          - name: greet
            foreach: "{{{{steps.names.output}}}}"
            run: "echo {{{{index}}}}:{{{{item}}}}"
          - name: joined
            run: "echo {{{{steps.greet.output}}}}"
        """,
    )
    flow = lf.load_pipeline(path)
    assert flow.plan().layers == [["names"], ["greet"], ["joined"]]  # one task in the plan
    run = flow.run()
    assert run.ok
    assert run["greet"] == ["0:ann", "1:bob", "2:cy"]
    assert element_names(run, "greet") == ["greet[0]", "greet[1]", "greet[2]"]
    assert run["joined"] == "['0:ann', '1:bob', '2:cy']"


def test_foreach_over_an_input_takes_its_default_or_a_given_list(tmp_path):
    path = write(
        tmp_path,
        """
        inputs: {files: [a.txt, b.txt]}
        steps:
          - name: each
            foreach: "{{inputs.files}}"
            run: "echo file {{item}}"
        """,
    )
    flow = lf.load_pipeline(path)
    assert flow.run()["each"] == ["file a.txt", "file b.txt"]
    assert flow.run({"files": ["x", "y", "z"]})["each"] == ["file x", "file y", "file z"]
    assert flow.run({"files": []})["each"] == []


def test_foreach_input_that_is_not_a_list_is_refused_before_anything_runs(tmp_path):
    path = write(
        tmp_path,
        """
        inputs: {files: [a]}
        steps:
          - {name: first, run: "echo never"}
          - name: each
            foreach: "{{inputs.files}}"
            run: "echo {{item}}"
        """,
    )
    flow = lf.load_pipeline(path)
    with pytest.raises(lf.PipelineError) as info:
        flow.run({"files": "a.txt,b.txt"})
    reported(
        info.value.problems,
        path,
        line_of(path, "foreach:"),
        "'each'",
        "'files'",
        "not a list",
        "--set files=[a,b]",
    )


def test_set_gives_a_list_on_the_command_line(tmp_path):
    path = write(
        tmp_path,
        """
        inputs: {files: [a]}
        steps:
          - name: each
            foreach: "{{inputs.files}}"
            run: "echo <{{item}}>"
        """,
    )
    out = layerflow(
        "run", str(path), "--no-store", "--json", "-q", "--set", "files=[x, y z]", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tasks"]["each"]["output"] == ["<x>", "<y z>"]
    out = layerflow(
        "run", str(path), "--no-store", "--json", "-q", "--set", 'files=["a,b", 2]', cwd=tmp_path
    )
    assert json.loads(out.stdout)["tasks"]["each"]["output"] == ["<a,b>", "<2>"]
    out = layerflow("run", str(path), "--no-store", "--set", "files=x.txt", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{path}:{line_of(path, 'foreach:')}:" in out.stderr
    assert "not a list" in out.stderr and "--set files=[a,b]" in out.stderr


def test_foreach_over_a_literal_list_renders_the_templates_inside_it(tmp_path):
    path = write(
        tmp_path,
        """
        inputs: {folder: data}
        steps:
          - name: each
            foreach: ["{{inputs.folder}}/a", "b", 3]
            run: "echo {{item}} {{index}}"
        """,
    )
    run = lf.load_pipeline(path).run()
    assert run["each"] == ["data/a 0", "b 1", "3 2"]


# --- the step kinds -----------------------------------------------------------------------------


def test_run_step_has_item_and_index_in_env_and_cwd(tmp_path):
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "here.txt").write_text(name)
    path = write(
        tmp_path,
        """
        steps:
          - name: each
            foreach: [one, two]
            env: {WHICH: "{{item}}-{{index}}"}
            cwd: "{{item}}"
            shell: true
            run: 'echo "$WHICH $(cat here.txt)"'
        """,
    )
    assert lf.load_pipeline(path).run()["each"] == ["one-0 one", "two-1 two"]


def test_uses_step_gets_the_element_itself_not_its_text(tmp_path):
    mod = module(
        tmp_path,
        """
        def describe(value, position, note):
            return [type(value).__name__, value, position, note]
        """,
    )
    path = write(
        tmp_path,
        f"""
        steps:
          - name: each
            foreach: [7, {{a: 1}}, [x]]
            uses: "{mod}:describe"
            params: {{value: "{{{{item}}}}", position: "{{{{index}}}}", note: "#{{{{index}}}}"}}
        """,
    )
    assert lf.load_pipeline(path).run()["each"] == [
        ["int", 7, 0, "#0"],
        ["dict", {"a": 1}, 1, "#1"],
        ["list", ["x"], 2, "#2"],
    ]


def test_type_step_over_a_step_output_and_input_from_the_same_step(tmp_path):
    mod = module(
        tmp_path,
        """
        def words():
            return ["red", "green"]

        def upper(input):
            return input.upper()
        """,
    )
    path = write(
        tmp_path,
        f"""
        steps:
          - {{name: words, uses: "{mod}:words"}}
          - name: labelled
            foreach: "{{{{steps.words.output}}}}"
            type: lfforeach_label
            prefix: "#"
            params: {{word: "{{{{item}}}}", position: "{{{{index}}}}"}}
          - name: shouted
            foreach: "{{{{steps.words.output}}}}"
            input_from: words       # input is the element too
            uses: "{mod}:upper"
        """,
    )
    run = lf.load_pipeline(path).run()
    assert run["labelled"] == ["#0=red", "#1=green"]
    assert run["shouted"] == ["RED", "GREEN"]


# --- streaming and bounds -----------------------------------------------------------------------


def test_foreach_over_a_foreach_streams_element_by_element(tmp_path):
    # the first stage's last element waits until the second stage has begun: with a barrier
    # between the stages it would wait in vain, and fail
    mod = module(
        tmp_path,
        """
        import threading

        second_started = threading.Event()

        def first(n):
            if n == 2:
                assert second_started.wait(30), "the second stage waited for the whole first"
            return n

        def second(n):
            second_started.set()
            return n * 10
        """,
    )
    path = write(
        tmp_path,
        f"""
        steps:
          - name: a
            foreach: [0, 1, 2]
            uses: "{mod}:first"
            params: {{n: "{{{{item}}}}"}}
          - name: b
            foreach: "{{{{steps.a.output}}}}"
            uses: "{mod}:second"
            params: {{n: "{{{{item}}}}"}}
        """,
    )
    events: list[tuple[str, str | None]] = []
    run = lf.load_pipeline(path).run(on_event=lambda e: events.append((e.kind, e.task)))
    assert run.ok and run["b"] == [0, 10, 20]
    order = [(kind, task) for kind, task in events if kind in ("task_started", "task_succeeded")]
    # which of a's first elements finishes first is the threads' choice: some b element starts first
    starts = [i for i, (kind, task) in enumerate(order) if kind == "task_started"]
    first_b = min(i for i in starts if order[i][1].startswith("b["))
    assert first_b < order.index(("task_succeeded", "a[2]"))


def test_max_workers_bounds_the_elements_that_run_at_once(tmp_path):
    # pairs meet at a barrier of two: the bound lets two run together, and never more
    mod = module(
        tmp_path,
        """
        import threading

        lock = threading.Lock()
        running = peak = 0
        pair = threading.Barrier(2, timeout=30)

        def work(n):
            global running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            pair.wait()
            with lock:
                running -= 1
            return n
        """,
    )
    path = write(
        tmp_path,
        f"""
        settings: {{max_workers: 8}}
        steps:
          - name: each
            foreach: [0, 1, 2, 3, 4, 5]
            max_workers: 2
            uses: "{mod}:work"
            params: {{n: "{{{{item}}}}"}}
        """,
    )
    flow = lf.load_pipeline(path)
    run = flow.run()
    assert run.ok and run["each"] == [0, 1, 2, 3, 4, 5]
    assert sys.modules[mod].peak == 2
    assert any("at most 2 of the elements of each" in line for line in flow.plan().binding_limits())


# --- when ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["run", "uses", "type"])
def test_when_false_skips_the_step_and_what_needs_it(tmp_path, kind):
    mod = module(tmp_path, "def echo(word):\n    return word\n")
    body = {
        "run": 'run: "echo ran"',
        "uses": f'uses: "{mod}:echo"\n    params: {{word: ran}}',
        "type": "type: lfforeach_label\n    params: {word: ran, position: 0}",
    }[kind]
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "inputs: {go: 'no'}\n"
        "steps:\n"
        "  - name: maybe\n"
        '    when: "{{inputs.go}}"\n'
        f"    {body}\n"
        '  - {name: after, run: "echo {{steps.maybe.output}}"}\n'
        '  - {name: other, run: "echo independent"}\n'
    )
    flow = lf.load_pipeline(path)
    run = flow.run()
    assert run.ok and run.status == "succeeded"
    assert run.tasks["maybe"].status == "skipped" and run.tasks["maybe"].attempts == 1
    assert isinstance(run.tasks["maybe"].error, lf.Skip)
    assert run.tasks["maybe"].error.reason == "step 'maybe': when '{{inputs.go}}' is 'no'"
    assert run.tasks["after"].status == "skipped"
    assert run["other"] == "independent"
    assert flow.run({"go": "yes"})["after"] in ("ran", "0=ran")


FALSE = ["false", "False", "0", "no", "OFF", "None", "null", "", " "]
TRUE = ["true", "yes", "1", "anything", "[]"]


def test_when_is_true_unless_the_text_is_empty_false_0_no_off_none_or_null(tmp_path):
    mod = module(tmp_path, "def same(value):\n    return value\n")
    values = [*FALSE, *TRUE]
    path = write(
        tmp_path,
        f"""
        inputs: {{values: {json.dumps(values)}}}
        steps:
          - name: kept
            foreach: "{{{{inputs.values}}}}"
            when: "{{{{item}}}}"
            uses: "{mod}:same"
            params: {{value: "{{{{item}}}}"}}
        """,
    )
    run = lf.load_pipeline(path).run()
    assert run["kept"] == TRUE
    assert [run.tasks[f"kept[{k}]"].status for k in range(len(FALSE))] == ["skipped"] * len(FALSE)


def test_when_reads_a_step_output_and_is_a_dependency(tmp_path):
    path = write(
        tmp_path,
        """
        settings: {order: dataflow}
        steps:
          - {name: deploy, when: "{{steps.check.output}}", run: "echo deployed"}
          - {name: check, run: "echo no"}
        """,
    )
    run = lf.load_pipeline(path).run()
    assert run.tasks["deploy"].status == "skipped" and run.tasks["check"].status == "succeeded"


def test_when_with_item_filters_the_elements_of_a_foreach(tmp_path):
    path = write(
        tmp_path,
        """
        steps:
          - name: kept
            foreach: [keep, "off", keep, ""]
            when: "{{item}}"
            run: "echo {{index}}"
          - {name: total, run: "echo {{steps.kept.output}}"}
        """,
    )
    run = lf.load_pipeline(path).run()
    assert run.ok and run["kept"] == ["0", "2"]  # a skipped element is left out of the list
    assert run.tasks["kept[1]"].status == "skipped"
    assert run["total"] == "['0', '2']"


def test_when_false_exits_0_on_the_command_line(tmp_path):
    path = write(
        tmp_path,
        """
        inputs: {publish: false}
        steps:
          - {name: build, run: "echo built"}
          - {name: upload, when: "{{inputs.publish}}", run: "echo {{steps.build.output}}"}
          - {name: notify, run: "echo {{steps.upload.output}}"}
        """,
    )
    out = layerflow("run", str(path), "--no-store", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Skipped: upload (step 'upload': when '{{inputs.publish}}' is 'False')" in out.stdout
    assert "Skipped (lf.Skip or a false when:): upload (step 'upload'" in out.stdout
    assert "notify (upstream 'upload' was skipped)" in out.stdout
    out = layerflow(
        "run", str(path), "--no-store", "--json", "-q", "--set", "publish=true", cwd=tmp_path
    )
    assert out.returncode == 0 and json.loads(out.stdout)["tasks"]["notify"]["output"] == "built"


# --- errors at load time ------------------------------------------------------------------------


def test_foreach_over_an_unknown_step_or_input(tmp_path):
    path = write(
        tmp_path,
        """
        inputs: {files: [a]}
        steps:
          - {name: names, run: "echo a"}
          - name: a
            foreach: "{{steps.nmaes.output}}"
            run: "echo {{item}}"
          - name: b
            foreach: "{{inputs.fils}}"
            run: "echo {{item}}"
        """,
    )
    found = problems(path)
    reported(found, path, line_of(path, "nmaes"), "'a'", "no step named 'nmaes'", "'names'")
    reported(found, path, line_of(path, "fils"), "'b'", "'fils'", "inputs:", "'files'")


def test_item_and_index_outside_a_foreach_step(tmp_path):
    path = write(
        tmp_path,
        """
        steps:
          - name: plain
            run: "echo {{item}}"
          - name: other
            env: {N: "{{ index }}"}
            run: "echo x"
          - name: inside
            foreach: ["{{item}}"]
            run: "echo x"
        """,
    )
    found = problems(path)
    reported(found, path, line_of(path, "{{item}}"), "'plain'", "{{item}}", "foreach")
    reported(found, path, line_of(path, "index"), "'other'", "{{index}}", "foreach")
    reported(found, path, line_of(path, '["{{item}}"]'), "'inside'", "inside foreach")


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "two", "true", "[2]"])
def test_max_workers_must_be_a_positive_whole_number(tmp_path, value):
    path = write(
        tmp_path,
        f"""
        steps:
          - name: each
            foreach: [1, 2]
            max_workers: {value}
            run: "echo {{{{item}}}}"
        """,
    )
    reported(problems(path), path, line_of(path, "max_workers"), "'each'", "max_workers", ">= 1")


def test_max_workers_without_foreach(tmp_path):
    path = write(tmp_path, 'steps:\n  - name: s\n    max_workers: 2\n    run: "echo a"\n')
    reported(problems(path), path, 3, "'s'", "max_workers", "no foreach")


@pytest.mark.parametrize(
    "value, fragments",
    [
        ('"{{input}}"', ["must be '{{steps.NAME.output}}'", "'{{input}}'"]),
        ('"a, b"', ["must be", "a list"]),
        ("{a: 1}", ["must be", "{'a': 1}"]),
        ('"{{steps.words.output}} and more"', ["must be"]),
    ],
    ids=["bare-input", "text", "mapping", "template-and-text"],
)
def test_foreach_of_the_wrong_shape(tmp_path, value, fragments):
    path = write(
        tmp_path,
        f"""
        steps:
          - {{name: words, run: "echo a"}}
          - name: each
            foreach: {value}
            run: "echo {{{{item}}}}"
        """,
    )
    reported(problems(path), path, line_of(path, "foreach:"), "'each'", *fragments)


def test_foreach_over_a_run_step_is_refused(tmp_path):
    # a run: step's output is one text: at run time it could only fail
    path = write(
        tmp_path,
        """
        steps:
          - {name: listing, run: "ls"}
          - name: each
            foreach: "{{steps.listing.output}}"
            run: "echo {{item}}"
        """,
    )
    reported(problems(path), path, line_of(path, "foreach:"), "'each'", "'listing'", "not a list")


def test_the_iterated_list_named_inside_its_own_foreach(tmp_path):
    path = write(
        tmp_path,
        """
        inputs: {files: [a]}
        steps:
          - name: words
            foreach: [a, b]
            run: "echo {{item}}"
          - name: each
            foreach: "{{steps.words.output}}"
            run: "echo {{steps.words.output}}"
          - name: per_file
            foreach: "{{inputs.files}}"
            when: "{{inputs.files}}"
            run: "echo x"
        """,
    )
    found = problems(path)
    reported(found, path, line_of(path, 'run: "echo {{steps.words'), "'each'", "use {{item}}")
    reported(found, path, line_of(path, "when:"), "'per_file'", "use {{item}}")


def test_an_input_default_that_is_not_a_list(tmp_path):
    path = write(
        tmp_path,
        """
        inputs:
          files: a.txt
        steps:
          - name: each
            foreach: "{{inputs.files}}"
            run: "echo {{item}}"
        """,
    )
    reported(problems(path), path, line_of(path, "files: a.txt"), "'each'", "not a list")


def test_when_of_the_wrong_type(tmp_path):
    path = write(tmp_path, 'steps:\n  - name: s\n    when: [1]\n    run: "echo a"\n')
    reported(problems(path), path, 3, "'s'", "when must be")


def test_foreach_over_itself_is_a_cycle(tmp_path):
    path = write(
        tmp_path,
        """
        steps:
          - name: me
            foreach: "{{steps.me.output}}"
            run: "echo {{item}}"
        """,
    )
    reported(problems(path), path, line_of(path, "name: me"), "cycle", "me -> me")


# --- the command line ---------------------------------------------------------------------------


def test_validate_plan_and_graph_show_a_foreach_step_as_one_task(tmp_path):
    path = write(
        tmp_path,
        """
        inputs: {files: [a, b, c]}
        steps:
          - name: each
            foreach: "{{inputs.files}}"
            max_workers: 2
            run: "echo {{item}}"
          - {name: total, run: "echo {{steps.each.output}}"}
        """,
    )
    out = layerflow("validate", str(path), cwd=tmp_path)
    assert out.returncode == 0 and "valid, 2 tasks in 2 layers" in out.stdout, out.stderr
    out = layerflow("plan", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "layer 0: each" in out.stdout and "layer 1: total" in out.stdout
    assert "resource pool foreach:each holds 2: at most 2 of the elements of each" in out.stdout
    out = layerflow("graph", str(path), "--format", "mermaid", cwd=tmp_path)
    assert out.returncode == 0 and '["each"]' in out.stdout and "each[" not in out.stdout


def test_the_batch_example_runs_and_publishes_only_when_asked(tmp_path):
    out = layerflow("run", str(EXAMPLES / "batch.yaml"), "--no-store", "--json", "-q", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    tasks = json.loads(out.stdout)["tasks"]
    assert tasks["chunk"]["output"] == [4950, 14950, 24950, 34950]
    assert tasks["total"]["output"] == "79800"
    assert tasks["upload"]["status"] == "skipped"
    out = layerflow(
        "run",
        str(EXAMPLES / "batch.yaml"),
        *("--no-store", "--json", "-q", "--set", "chunks=[1]", "--set", "publish=true"),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tasks"]["upload"]["output"] == "uploading the total 14950"


# --- the plan: a pool that bounds a foreach -------------------------------------------------


def test_a_pool_that_bounds_a_map_speaks_of_its_elements():
    flow = lf.Flow("pool")

    def items() -> list[int]:
        return [1, 2, 3]

    def each(items: int) -> int:
        return items

    flow.add(items)
    flow.add(each, map="items", resources={"db": 1})
    lines = flow.plan().binding_limits(resources={"db": 2})
    assert lines == ["resource pool db holds 2: at most 2 of the elements of each at once"]


def test_one_elements_timeout_does_not_stop_its_running_siblings(tmp_path):
    # the deadline of each[0] called the step's cancel(), shared by every element: each[1]
    # ended "Cancelled: step 'each' was stopped: another step failed", never retried
    path = write(
        tmp_path,
        """
        inputs: {xs: ["0", "1", "2"]}
        settings: {fail_fast: false}
        steps:
          - name: each
            foreach: "{{inputs.xs}}"
            max_workers: 2
            timeout: 1
            retries: 1
            shell: true
            run: >-
              if [ {{item}} = 0 ] && [ ! -e tried ]; then touch tried; exec sleep 30; fi;
              case {{item}} in 1) sleep 0.6;; 2) sleep 0.8;; esac; echo ok-{{item}}
        """,
    )
    # each[2] starts as each[1] ends (0.6 s) and runs 0.8 s: at each[0]'s deadline (1 s) it
    # is running
    run = lf.load_pipeline(path).run(progress=False)
    assert run.ok, {n: t.error for n, t in run.tasks.items() if t.error}
    assert run["each"] == ["ok-0", "ok-1", "ok-2"]
    assert run.tasks["each[2]"].attempts == 1
