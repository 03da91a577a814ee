"""Pipeline files that attack the loader, or are merely wrong everywhere: each is refused
with a ``PipelineError`` naming the file and line, quickly and in bounded memory, and the
command line exits 2 without a traceback."""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from cli_run import layerflow

import layerflow as lf


def _bomb(levels: int, width: int = 10) -> str:
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for k in range(1, levels + 1):
        lines.append(f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * width) + "]")
    return "\n".join(lines) + "\nsteps: [{run: echo}]\n"


# name -> (file content, the line the error must name, a fragment of its message)
HOSTILE: dict[str, tuple[str | bytes, int, str]] = {
    "alias bomb 7x10": (_bomb(7), 5, "alias bomb"),
    "alias bomb 9x10": (_bomb(9), 5, "alias bomb"),
    "recursive alias": ("steps: &s [{run: echo, params: *s}]\n", 1, "contains it"),
    "200-deep flow nesting": ("steps: " + "[" * 200 + "]" * 200 + "\n", 1, "nested more"),
    "200-deep block nesting": (
        "steps:\n" + "".join("  " * i + "-\n" for i in range(1, 200)),
        65,
        "nested more",
    ),
    "5000-digit integer": ("steps:\n  - run: echo\n    retries: " + "9" * 5000 + "\n", 3, "digits"),
    "timeout too large for a float": (
        "steps:\n  - run: echo\n    timeout: 1" + "0" * 99 + "0" * 310 + "\n",
        3,
        "this number has 410 digits",
    ),
    "retry_delay as huge text": (
        "steps:\n  - run: echo\n    retry_delay: 1e400\n",
        3,
        "retry_delay must be a number of seconds >= 0",
    ),
    "empty !!int": ("steps:\n  - run: echo\n    retries: !!int ''\n", 3, "cannot read '' as int"),
    "params: 1.5": (
        "steps:\n  - name: f\n    run: echo\n    params: 1.5\n",
        4,
        "params must be a mapping",
    ),
    "env: 3": ("steps:\n  - name: f\n    run: echo\n    env: 3\n", 4, "env must be a mapping"),
    "settings.resources a list": (
        "settings: {resources: [1, 2]}\nsteps: [{run: echo}]\n",
        1,
        "settings.resources must be a mapping",
    ),
    "group steps a number": (
        "steps:\n  - type: parallel_group\n    name: g\n    steps: 3\n",
        4,
        "needs a list of steps",
    ),
    "NUL byte": ("name: x\nsteps:\n  - run: echo\x00\n", 3, "NUL"),
    "invalid UTF-8": (b"name: x\nsteps:\n  - run: echo \xff\xfe\n", 3, "not UTF-8"),
    "a mapping as a key": ("steps:\n  - {run: echo, {a: 1}: 2}\n", 2, ""),
    "sh -c with a template inside": (
        "inputs: {x: hi}\nsteps:\n  - name: f\n    run: \"sh -c 'echo {{inputs.x}}'\"\n",
        4,
        "shell: true",
    ),
    "env bash -c": (
        "inputs: {x: hi}\nsteps:\n  - name: f\n    run: \"env A=1 bash -ec 'echo {{inputs.x}}'\"\n",
        4,
        "shell: true",
    ),
    "eval": ('inputs: {x: hi}\nsteps:\n  - name: f\n    run: "eval {{inputs.x}}"\n', 4, "eval"),
    "python -c": (
        "inputs: {x: hi}\nsteps:\n  - name: f\n    run: \"python3 -c 'print({{inputs.x}})'\"\n",
        4,
        "sys.argv[1]",
    ),
}


def _write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "hostile.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_file_is_refused_with_its_line_quickly(tmp_path, case):
    content, line, fragment = HOSTILE[case]
    path = _write(tmp_path, content)
    tracemalloc.start()
    begin = time.perf_counter()
    try:
        with pytest.raises(lf.PipelineError) as caught:
            lf.load_pipeline(path)
        elapsed = time.perf_counter() - begin
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    text = str(caught.value)
    assert f"{path}:{line}:" in text, text
    assert fragment in text, text
    assert len(text) < 2000, text  # quotes what it found, never the whole of it
    assert elapsed < 2.0, f"{case}: {elapsed:.2f} s"  # generous: well under a second here
    assert peak < 64 * 2**20, f"{case}: {peak / 2**20:.0f} MB"


@pytest.mark.parametrize("case", ["alias bomb 9x10", "200-deep flow nesting", "invalid UTF-8"])
def test_validate_and_run_exit_2_without_a_traceback(tmp_path, case):
    content, line, _ = HOSTILE[case]
    path = _write(tmp_path, content)
    for args in (["validate", str(path)], ["run", str(path), "--no-store"]):
        done = subprocess.run(
            [sys.executable, "-m", "layerflow", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert f"{path}:{line}:" in done.stderr


def test_aliases_used_sensibly_still_load(tmp_path):
    path = _write(
        tmp_path,
        """
        defaults: &defaults {retries: 2, timeout: 30}
        steps:
          - {name: a, run: "echo a", <<: *defaults}
          - {name: b, run: "echo b", <<: *defaults}
        """.replace("\n        ", "\n").replace("defaults: &defaults", "x-defaults: &defaults"),
    )
    with pytest.raises(lf.PipelineError, match="unknown key 'x-defaults'"):
        lf.load_pipeline(path)  # an unknown top-level key is still an error...
    path.write_text(
        "steps:\n"
        "  - &base {name: a, run: 'echo a', retries: 2, timeout: 30}\n"
        "  - {<<: *base, name: b, run: 'echo b'}\n"
    )
    flow = lf.load_pipeline(path)  # ...but a merge of a step's own keys is fine
    assert [t.retries for t in flow.tasks] == [2, 2]


def test_problems_of_different_kinds_are_reported_in_one_round(tmp_path):
    path = _write(
        tmp_path,
        "steps:\n"
        "  - {name: a, run: echo, retries: -1}\n"
        "  - {name: a, run: echo}\n"
        "  - {name: c, run: 'echo {{steps.nope.output}}'}\n"
        "  - {name: d, run: echo, timout: 3}\n"
        "  - {name: e, run: echo, run: again}\n",
    )
    with pytest.raises(lf.PipelineError) as caught:
        lf.load_pipeline(path)
    text = str(caught.value)
    assert "5 problems" in text, text
    assert f"{path}:2: step 'a': retries must be" in text
    assert f"{path}:3: step 'a': duplicate step name" in text
    assert f"{path}:4: step 'c': no step named 'nope'" in text
    assert f"{path}:5:" in text and "Did you mean 'timeout'?" in text
    assert f"{path}:6: duplicate key 'run'" in text


INPUTS = """\
name: inp
inputs: {topic: cats}
steps:
  - name: a
    run: "echo {{inputs.topic}}"
  - name: b
    run: "echo for {{inputs.audience}}"
"""


def test_a_missing_input_says_where_it_is_used_and_how_to_give_it(tmp_path):
    path = _write(tmp_path, INPUTS)
    done = layerflow(tmp_path, "run", str(path), "--no-store")
    assert done.returncode == 2
    assert f"{path}:7: step 'b' uses the input 'audience'" in done.stderr
    assert "--set audience=VALUE" in done.stderr
    assert "Traceback" not in done.stderr
    with pytest.raises(lf.PipelineError, match="--set audience=VALUE"):
        lf.load_pipeline(path).run()
    assert lf.load_pipeline(path).run({"audience": "kids"})["b"] == "for kids"


def test_a_set_name_no_step_uses_is_an_error_with_the_closest_name(tmp_path):
    path = _write(tmp_path, INPUTS)
    done = layerflow(tmp_path, "run", str(path), "--no-store", "--set", "audence=kids")
    assert done.returncode == 2
    assert "--set audence=...: no step uses an input named 'audence'" in done.stderr
    assert "Did you mean 'audience'?" in done.stderr
    done = layerflow(tmp_path, "plan", str(path), "--set", "topc=dogs", "--set", "audience=x")
    assert done.returncode == 2 and "Did you mean 'topic'?" in done.stderr
    done = layerflow(tmp_path, "run", str(path), "--no-store", "--set", "audience=kids", "-q")
    assert done.returncode == 0, done.stderr


def test_a_template_as_its_own_argument_after_a_script_is_fine(tmp_path):
    # the value is one argument that the script reads: not code
    path = _write(
        tmp_path,
        "inputs: {x: '; touch pwned'}\n"
        "steps:\n"
        "  - name: f\n"
        '    run: "sh -c \'echo \\"$1\\"\' sh {{inputs.x}}"\n'
        "  - name: g\n"
        "    run: \"python3 -c 'import sys; print(sys.argv[1])' {{inputs.x}}\"\n"
        "  - name: h\n"
        "    shell: true\n"
        '    run: "echo {{inputs.x}}"\n',
    )
    result = lf.load_pipeline(path).run()
    assert result["f"] == result["g"] == result["h"] == "; touch pwned"
    assert not (tmp_path / "pwned").exists()


def test_the_script_refusal_names_the_fix(tmp_path):
    path = _write(tmp_path, HOSTILE["sh -c with a template inside"][0])
    with pytest.raises(lf.PipelineError) as caught:
        lf.load_pipeline(path)
    text = str(caught.value)
    assert "sh -c" in text and "'; rm -rf ~' would run" in text, text
    assert not (tmp_path / "x").exists()


def test_an_integer_beyond_any_float_is_refused_not_overflowed():
    flow = lf.Flow()
    with pytest.raises(lf.InvalidOptionError, match="timeout must be a number of seconds > 0"):
        flow.add(lambda: 1, name="b", timeout=10**400)
    with pytest.raises(lf.InvalidOptionError, match="timeout must be a number of seconds"):
        flow.run(timeout=10**400)
