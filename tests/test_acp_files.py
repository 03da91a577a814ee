"""ai-content-pipeline's own pipeline files, unchanged, with that project's data flow.

``tests/data/ai_content_pipeline`` holds every pipeline file that project ships
(``input/pipelines/*.yaml`` of ``video-ai-studio`` 1.0.17). Each is loaded with the fake step
types of ``acp_steps`` (a plugin, as the README documents them), whose results say what they
received. :func:`project_flow` is that project's data flow, written from its code
(``ContentCreationChain``, ``ChainExecutor.execute``, ``ParallelExtension``, ``run-chain``)
and independent of layerflow's: what every step receives, from which steps. Each file must
validate, plan with exactly those edges, and run with exactly those inputs, its groups'
members at the same time and its top-level steps one after another in the file's order.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

import layerflow as lf
from layerflow.pipeline import step_types

sys.path.insert(0, str(Path(__file__).parent))  # acp_steps, also when run on its own
import acp_steps  # noqa: E402

DATA = Path(__file__).parent / "data" / "ai_content_pipeline"
FILES = sorted(DATA.glob("*.yaml"))
GIVEN = "input given on the command line"  # for a file that has no value for its input

# that project's tables (chain.py: _get_step_input_type; run-chain: where the input comes from)
KINDS = {
    "text_to_image": "text",
    "text_to_video": "text",
    "image_understanding": "image",
    "prompt_generation": "image",
    "image_to_image": "image",
    "image_to_video": "image",
    "text_to_speech": "text",
    "add_audio": "video",
    "upscale_video": "video",
    "generate_subtitles": "video",
    "parallel_group": "any",
}
INPUT_KEYS = {"text": "prompt", "image": "input_image", "video": "input_video", "any": "prompt"}


@pytest.fixture(autouse=True)
def fakes(monkeypatch):
    """The fake step types registered afresh (another test may have registered its own
    under these names), and whatever was registered before put back afterwards."""
    before = step_types()
    monkeypatch.delenv("PIPELINE_PARALLEL_ENABLED", raising=False)
    monkeypatch.delenv("LAYERFLOW_PARALLEL", raising=False)
    monkeypatch.delenv("LAYERFLOW_MAX_WORKERS", raising=False)
    importlib.reload(acp_steps)
    acp_steps.EVENTS.clear()
    yield acp_steps
    for name, fn in before.items():
        lf.step_type(name)(fn)


def made(step: dict[str, Any]) -> str:
    """What the fake for ``step`` makes (acp_steps.token)."""
    return acp_steps.token(step["type"], step.get("model", ""), step.get("params") or {})


def first_input(data: dict[str, Any]) -> Any:
    """The pipeline's input as run-chain chooses it: by the first step's kind (input_type:
    says otherwise). Where that project stops for want of a prompt: (a group first, and no
    prompt:), layerflow takes what the group's first member asks for."""
    steps = data["steps"]
    kind = data.get("input_type", "auto")
    if kind == "auto":
        kind = KINDS[steps[0]["type"]]  # steps[0]: disabled or not
    value = data.get(INPUT_KEYS[kind])
    if kind == "any" and not value:  # layerflow's, where that project stops
        members = steps[0].get("steps") or steps[0]["params"]["parallel_steps"]
        value = data.get(INPUT_KEYS[KINDS[members[0]["type"]]])
    return value


def project_flow(data: dict[str, Any], given: Any = None) -> dict[str, Any]:
    """That project's run of ``data`` with the fakes: for every step (by the name layerflow
    gives it), what it receives, the steps that made that, its generated_prompt, and its
    token; and the top-level entries in order (each a list of step names)."""
    steps = data["steps"]
    current: Any = given if given is not None else first_input(data)
    sources: set[str] = set()  # the steps whose outputs make ``current``
    prompt, prompt_from = None, set()
    out: dict[str, Any] = {"steps": {}, "entries": []}
    enabled = [s for s in steps if s.get("enabled", True)]
    for i, step in enumerate(enabled, 1):
        if step["type"] == "parallel_group":
            members = step["params"]["parallel_steps"] if "params" in step else step["steps"]
            names, outputs = [], []
            for k, member in enumerate(members, 1):
                name = member.get("name") or f"step_{i}_{k}_{member['type']}"
                out["steps"][name] = {
                    "received": current,
                    "from": sources | prompt_from,
                    "generated_prompt": prompt,
                    "token": made(member),
                }
                names.append(name)
                outputs.append(f"{made(member)}.out")
            out["entries"].append(names)
            # merge_strategy collect_all: the members' outputs, in their order
            current, sources = outputs, set(names)
            continue
        name = step.get("name") or f"step_{i}_{step['type']}"
        out["steps"][name] = {
            "received": current,
            "from": sources | prompt_from,
            "generated_prompt": prompt,
            "token": made(step),
        }
        out["entries"].append([name])
        if step["type"] == "prompt_generation":  # keeps the image; its prompt goes on
            prompt, prompt_from = f"{made(step)}.prompt", {name}
        else:  # output_path, else output_url, else output_text
            current, sources = f"{made(step)}.out", {name}
    return out


def read(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def needs_input(data: dict[str, Any]) -> bool:
    """Whether the file has no value for its input (that project needs --input-text)."""
    return not first_input(data)


def test_the_data_is_what_that_project_ships():
    assert len(FILES) == 28
    # three of them have no value for their input: --set input=VALUE gives it, as
    # --input-text does there
    assert sorted(p.stem for p in FILES if needs_input(read(p))) == [
        "analysis_ocr_direct",
        "sora2_alien_video",
        "video_smart_prompts_kling",
    ]
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert "video-ai-studio" in readme and "1.0.17" in readme and "MIT" in readme


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_each_file_validates_plans_and_runs_with_that_projects_data_flow(path, fakes):
    data = read(path)
    inputs = {"input": GIVEN} if needs_input(data) else {}
    expected = project_flow(data, inputs.get("input"))

    pipeline = lf.load_pipeline(path, plugins=["acp_steps"])
    assert pipeline.format == "ai-content-pipeline"
    plan = pipeline.plan(inputs)
    assert sorted(plan.graph.names) == sorted(expected["steps"])
    for name, want in expected["steps"].items():  # the edges: what each step's input is made of
        assert set(plan.dependencies(name)) == want["from"], name

    result = pipeline.run(inputs)
    assert result.ok
    for name, want in expected["steps"].items():
        value = result[name]
        assert value["received"] == want["received"], name
        assert value["generated_prompt"] == want["generated_prompt"], name
        assert value["output_dir"] == data.get("output_dir"), name

    # top-level entries one after another, in the file's order
    events = {(kind, token): t for kind, token, t in fakes.EVENTS}
    tokens = {name: want["token"] for name, want in expected["steps"].items()}
    for before, after in zip(expected["entries"], expected["entries"][1:], strict=False):
        ended = max(events["end", tokens[n]] for n in before)
        assert all(events["start", tokens[n]] >= ended for n in after), (before, after)


GROUPS = [p for p in FILES if "parallel_group" in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("path", GROUPS, ids=lambda p: p.stem)
def test_a_groups_members_run_at_the_same_time(path, fakes, monkeypatch):
    monkeypatch.setenv("ACP_FAKE_SECONDS", "0.4")
    data = read(path)
    inputs = {"input": GIVEN} if needs_input(data) else {}
    expected = project_flow(data, inputs.get("input"))
    assert lf.load_pipeline(path, plugins=["acp_steps"]).run(inputs).ok
    events = {(kind, token): t for kind, token, t in fakes.EVENTS}
    groups = [e for e in expected["entries"] if len(e) > 1]
    assert groups
    for members in groups:
        tokens = [expected["steps"][n]["token"] for n in members]
        latest_start = max(events["start", t] for t in tokens)
        first_end = min(events["end", t] for t in tokens)
        assert latest_start < first_end, members  # all of them were running at once


def test_pipeline_parallel_enabled_is_honoured_like_settings_parallel(fakes, monkeypatch):
    path = DATA / "parallel_tts_test.yaml"
    monkeypatch.setenv("ACP_FAKE_SECONDS", "0.3")
    monkeypatch.setenv("PIPELINE_PARALLEL_ENABLED", "false")
    assert lf.load_pipeline(path, plugins=["acp_steps"]).run().ok
    assert [k for k, _, _ in fakes.EVENTS] == ["start", "end"] * 3  # one at a time

    fakes.EVENTS.clear()
    monkeypatch.setenv("PIPELINE_PARALLEL_ENABLED", "true")
    assert lf.load_pipeline(path, plugins=["acp_steps"]).run().ok
    assert [k for k, _, _ in fakes.EVENTS][:3] == ["start"] * 3


def test_a_group_first_without_a_prompt_takes_what_its_first_member_asks_for(fakes):
    pipeline = lf.load_pipeline(DATA / "miranda_nyc_fashion.yaml", plugins=["acp_steps"])
    image = "output/images/miranda/611T-D1l76L._AC_UF894,1000_QL80_.jpg"
    assert pipeline.inputs == {"input": image}
    result = pipeline.run()
    assert {result[n]["received"] for n in result.tasks} == {image}


def test_the_files_settings_reach_the_run_and_the_step_types_that_name_them(fakes):
    pipeline = lf.load_pipeline(DATA / "cooking_lady.yaml", plugins=["acp_steps"])
    assert pipeline.config == {
        "input_image": "input/images/character/miranda.jpg",
        "output_dir": "output/cooking_lady",
        "temp_dir": "temp",
        "cleanup_temp": True,
        "save_intermediates": True,
    }
    assert pipeline.inputs == {"input": "input/images/character/miranda.jpg"}
    result = pipeline.run()
    assert result["step_3_image_to_image"]["output_dir"] == "output/cooking_lady"


# --- the command line, as a user drives it --------------------------------------------------


def cli(*args: str, cwd: Path) -> Any:
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    env.pop("PIPELINE_PARALLEL_ENABLED", None)
    return subprocess.run(
        [sys.executable, "-m", "layerflow", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def test_validate_plan_and_run_on_the_real_files_from_the_command_line(tmp_path):
    chain = str(DATA / "image_artistic_transform.yaml")
    out = cli("validate", chain, "--plugin", "acp_steps", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "valid, 3 tasks in 3 layers, read as ai-content-pipeline's format" in out.stdout

    single = str(DATA / "fashion_nyc_1.yaml")
    out = cli("validate", single, "--plugin", "acp_steps", cwd=tmp_path)
    assert out.returncode == 0 and "valid, 1 task in 1 layer," in out.stdout, out

    out = cli("plan", single, "--plugin", "acp_steps", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Plan for flow 'NYC Fashion 1 - 5th Avenue': 1 task in 1 layer" in out.stdout
    assert "1 unit instead of 1 one by one" in out.stdout

    out = cli("run", chain, "--plugin", "acp_steps", "--json", "-q", "--no-store", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    tasks = json.loads(out.stdout)["tasks"]
    assert (
        tasks["step_2_image_to_image"]["output"]["received"]
        == (tasks["step_1_text_to_image"]["output"]["output_url"])
    )
    assert (
        tasks["step_3_image_to_image"]["output"]["received"]
        == (tasks["step_2_image_to_image"]["output"]["output_path"])
    )
    out = cli("run", single, "--plugin", "acp_steps", "--no-store", cwd=tmp_path)
    assert out.returncode == 0 and "Completed 1 task in" in out.stdout + out.stderr, out


def test_a_file_whose_input_comes_from_the_command_line_validates_with_set(tmp_path):
    path = str(DATA / "video_smart_prompts_kling.yaml")  # no prompt: in the file
    out = cli("validate", path, "--plugin", "acp_steps", cwd=tmp_path)
    assert out.returncode == 2
    assert "step 'step_1_text_to_image' takes the pipeline's input" in out.stderr
    assert "--set input=VALUE, or as prompt: in the file" in out.stderr
    for command in ("validate", "plan", "graph"):
        out = cli(command, path, "--plugin", "acp_steps", "--set", "input=a cat", cwd=tmp_path)
        assert out.returncode == 0, (command, out.stderr)
    out = cli("run", path, "--plugin", "acp_steps", "--set", "input=a cat", "--json", "-q",
              "--no-store", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tasks"]["step_1_text_to_image"]["output"]["received"] == "a cat"


def test_plan_without_the_plugin_says_plugin_module(tmp_path):
    out = cli("plan", str(DATA / "parallel_tts_test.yaml"), cwd=tmp_path)
    assert out.returncode == 2
    assert "unknown step type 'text_to_speech'" in out.stderr
    assert "--plugin MODULE" in out.stderr


# --- the format's rules, one by one ----------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_a_disabled_step_is_passed_over_and_not_counted(tmp_path, fakes):
    path = write(
        tmp_path,
        """
        prompt: "a cat"
        output_dir: out
        steps:
          - {type: text_to_image, model: a}
          - {type: image_to_image, model: b, enabled: false}
          - {type: image_to_image, model: c}
        """,
    )
    result = lf.load_pipeline(path, plugins=["acp_steps"]).run()
    assert list(result.tasks) == ["step_1_text_to_image", "step_2_image_to_image"]
    assert (
        result["step_2_image_to_image"]["received"] == result["step_1_text_to_image"]["output_url"]
    )


def test_merge_strategies_decide_what_a_group_passes_on(tmp_path, fakes):
    for strategy, want in (("collect_all", "list"), ("first_success", "first")):
        path = write(
            tmp_path,
            f"""
            prompt: "hello"
            steps:
              - type: parallel_group
                model: parallel
                params:
                  merge_strategy: {strategy}
                  parallel_steps:
                    - {{type: text_to_speech, model: a}}
                    - {{type: text_to_speech, model: b}}
              - {{type: add_audio, model: c}}
            """,
        )
        result = lf.load_pipeline(path, plugins=["acp_steps"]).run()
        outputs = [result[f"step_1_{k}_text_to_speech"]["output_path"] for k in (1, 2)]
        received = result["step_2_add_audio"]["received"]
        assert received == (outputs if want == "list" else outputs[0]), strategy
    bad = write(
        tmp_path,
        """
        prompt: "hello"
        steps:
          - type: parallel_group
            params: {merge_strategy: best_of, parallel_steps: [{type: text_to_speech, model: a}]}
        """,
    )
    with pytest.raises(lf.PipelineError) as info:
        lf.load_pipeline(bad, plugins=["acp_steps"])
    assert "merge_strategy must be one of collect_all, first_success, best_quality" in str(
        info.value
    )


def test_a_params_group_runs_at_most_max_workers_members_at_once(tmp_path, fakes, monkeypatch):
    monkeypatch.setenv("ACP_FAKE_SECONDS", "0.3")
    members = "\n".join(f"          - {{type: text_to_speech, model: m{k}}}" for k in range(5))
    path = write(
        tmp_path,
        "prompt: hi\nsteps:\n  - type: parallel_group\n    params:\n      max_workers: 2\n"
        "      parallel_steps:\n" + members + "\n",
    )
    assert lf.load_pipeline(path, plugins=["acp_steps"]).run().ok
    running = peak = 0
    for kind, _, _ in sorted(fakes.EVENTS, key=lambda e: (e[2], e[0] == "start")):
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2
    # without max_workers under params, that project's default: 3
    path = write(tmp_path, path.read_text().replace("      max_workers: 2\n", ""))
    pipeline = lf.load_pipeline(path, plugins=["acp_steps"])
    assert pipeline.settings["resources"] == {"group:step_1_parallel_group": 3}


def test_input_from_and_needs_keep_layerflows_meaning_in_that_format(tmp_path, fakes):
    path = write(
        tmp_path,
        """
        prompt: "a dog"
        output_dir: out
        steps:
          - {name: base, type: text_to_image, model: a}
          - {name: edit, type: image_to_image, model: b}
          - {name: again, type: image_to_image, model: c, input_from: base}
        """,
    )
    result = lf.load_pipeline(path, plugins=["acp_steps"]).run()
    assert result["edit"]["received"] == result["base"]["output_url"]
    assert result["again"]["received"] == result["base"]  # layerflow's: the value itself


def test_retry_count_is_accepted_and_retries_nothing_as_there(tmp_path, fakes):
    calls = []

    @lf.step_type("lfacp_flaky")
    def flaky(input: Any = None, model: str = "") -> str:
        calls.append(input)
        raise RuntimeError("flaky")

    path = write(
        tmp_path,
        """
        prompt: "x"
        output_dir: out
        steps:
          - {type: lfacp_flaky, model: a, retry_count: 2}
        """,
    )
    with pytest.raises(lf.TaskFailed):
        lf.load_pipeline(path).run()
    assert calls == ["x"]
    bad = write(tmp_path, path.read_text().replace("retry_count: 2", "retry_count: -1"))
    with pytest.raises(lf.PipelineError, match="retry_count must be a whole number >= 0"):
        lf.load_pipeline(bad)


def test_an_unnamed_steps_made_up_name_that_collides_says_where_it_came_from(tmp_path, fakes):
    path = write(
        tmp_path,
        """
        input_image: a.png
        steps:
          - {name: step_2_image_to_image, type: image_to_image, model: a}
          - {type: image_to_image, model: b}
        """,
    )
    with pytest.raises(lf.PipelineError) as info:
        lf.load_pipeline(path, plugins=["acp_steps"])
    text = str(info.value)
    assert "step 'step_2_image_to_image': duplicate step name" in text
    assert "layerflow names the unnamed step at line 4 'step_2_image_to_image' (step_N_TYPE" in text

    # layerflow's own format names an unnamed step after its type, and says so
    path = write(
        tmp_path,
        """
        inputs: {input: a.png}
        steps:
          - {type: image_to_image, model: a}
          - {type: image_to_image, model: b}
        """,
    )
    with pytest.raises(lf.PipelineError) as info:
        lf.load_pipeline(path, plugins=["acp_steps"])
    assert "layerflow names the unnamed step at line 4 'image_to_image' (after its type:)" in str(
        info.value
    )


def test_a_key_of_that_format_is_never_did_you_mean_something_else(tmp_path, fakes):
    path = write(
        tmp_path,
        """
        inputs: {input: a.png}
        input_type: image
        output_dir: out
        steps:
          - {type: image_to_image, model: a}
        """,
    )
    with pytest.raises(lf.PipelineError) as info:
        lf.load_pipeline(path, plugins=["acp_steps"])
    text = str(info.value)
    assert "Did you mean" not in text
    assert "'input_type' in the pipeline is a key of ai-content-pipeline's format" in text
    assert "read as layerflow's because it has inputs:" in text

    @lf.step_type("lfacp_modelless")
    def modelless(input: Any = None) -> str:
        return "x"

    path = write(tmp_path, "input_image: a.png\nsteps:\n  - {type: lfacp_modelless, model: m}\n")
    with pytest.raises(lf.PipelineError) as info:
        lf.load_pipeline(path)
    text = str(info.value)
    assert "unknown key 'model'" in text and "Did you mean" not in text
    assert "a parameter 'model' to receive it" in text


@lf.step_type("lfacp_takes")
def takes(input: Any, model: str = "") -> str:
    """Needs its input (layerflow's rule then gives it the pipeline's, without input_from)."""
    return f"{model}({input})"


def test_a_declared_format_wins_over_the_shape(tmp_path, fakes):
    body = """
prompt: "a cat"
steps:
  - {name: a, type: lfacp_takes, model: x}
  - {name: b, type: lfacp_takes, model: y}
"""
    acp = lf.load_pipeline(write(tmp_path, "format: ai-content-pipeline" + body))
    assert acp.format == "ai-content-pipeline"
    assert acp.run()["b"] == "y(x(a cat))"
    own = lf.load_pipeline(write(tmp_path, "format: layerflow" + body))
    assert own.format == "layerflow"
    assert own.run()["b"] == "y(a cat)"  # layerflow's: the pipeline's input
    # without format:, a prompt: and nothing of layerflow's own is that project's format
    shaped = lf.load_pipeline(write(tmp_path, body))
    assert shaped.format == "ai-content-pipeline" and shaped.run()["b"] == "y(x(a cat))"
    with pytest.raises(lf.PipelineError, match="format must be 'layerflow' or"):
        lf.load_pipeline(write(tmp_path, "format: acp" + body))


def test_layerflows_own_format_keeps_its_meaning(tmp_path, fakes):
    # inputs:, no input_from: every step gets the pipeline's input, as before
    path = write(
        tmp_path,
        """
        inputs: {input: "a cat"}
        settings: {order: sequence}
        steps:
          - {name: a, type: lfacp_takes, model: x}
          - {name: b, type: lfacp_takes, model: y}
          - type: parallel_group
            name: g
            steps:
              - {name: c, type: lfacp_takes, model: z, input_from: a}
              - {name: d, type: lfacp_takes, model: w}
          - {type: lfacp_takes, model: v}
        """,
    )
    pipeline = lf.load_pipeline(path)
    assert pipeline.format == "layerflow"
    result = pipeline.run()
    assert [result[n] for n in ("b", "c", "d", "lfacp_takes")] == [
        "y(a cat)",
        "z(x(a cat))",
        "w(a cat)",
        "v(a cat)",
    ]


def test_mutated_files_of_that_format_load_or_fail_with_file_and_line(tmp_path, fakes):
    """The loader's promise (tests/test_fuzz_pipeline.py) holds for that format's files too:
    each mutant loads, or every problem has the file and a line; none raises anything else."""
    import random

    from test_fuzz_pipeline import _case

    sources = [(p.name, p.read_text(encoding="utf-8")) for p in FILES]
    rng = random.Random(int(os.environ.get("LAYERFLOW_FUZZ_SEED", "20261207")))
    path = tmp_path / "mutant.yaml"
    loaded = refused = 0
    bad = []
    for case in range(int(os.environ.get("LAYERFLOW_FUZZ_CASES", "300"))):
        source, data = _case(sources, rng)
        path.write_bytes(data)
        try:
            lf.load_pipeline(path, plugins=["acp_steps"])
            loaded += 1
        except lf.PipelineError as e:
            refused += 1
            for file, line, message in e.problems:
                if file != str(path) or not (isinstance(line, int) and line >= 1):
                    bad.append(f"case {case} from {source}: {file}:{line}: {message}")
        except Exception as e:  # a bug of the loader's
            bad.append(
                f"case {case} from {source}: {type(e).__name__}: {e}\n"
                + data.decode(errors="replace")
            )
    assert not bad, "\n".join(bad[:10])
    assert loaded and refused


def test_a_name_layerflow_gave_an_unnamed_group_says_so(tmp_path):
    path = write(tmp_path, "inputs: {input: x}\nsteps:\n  - type: parallel_group\n")
    with pytest.raises(lf.PipelineError) as info:
        lf.load_pipeline(path)
    assert "parallel_group 'group1' (layerflow's name for this unnamed group) needs a list" in str(
        info.value
    )
