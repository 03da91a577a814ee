"""``module:flow`` and ``path/to/file.py:flow`` on the command line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from cli_run import layerflow

FLOW = textwrap.dedent(
    """
    import layerflow as lf

    flow = lf.Flow("tiny")
    other = lf.Flow("other")

    @flow.task
    def a():
        return 1

    @flow.task
    def b(a):
        return a + 1
    """
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "tinyflow.py").write_text(FLOW)
    (tmp_path / "profile.py").write_text(FLOW)  # the standard library's name
    return tmp_path


def test_a_file_path_target_runs(folder):
    done = layerflow(folder, "run", "sub/tinyflow.py:flow", "--no-store", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tasks"]["b"]["output"] == 2


def test_a_module_in_this_folder_wins_over_the_standard_library_with_a_warning(folder):
    done = layerflow(folder, "plan", "profile:flow")
    assert done.returncode == 0, done.stderr
    assert "warning: profile.py in this folder has the name of the standard library's" in (
        done.stderr
    )
    quiet = layerflow(folder, "run", "profile:flow", "--no-store", "-q")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr


def test_the_standard_library_module_says_to_give_a_path(folder):
    done = layerflow(folder / "sub", "plan", "profile:flow")
    assert done.returncode == 2
    assert "That is the standard library's 'profile'" in done.stderr
    assert "path/to/profile.py:flow" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_attribute_names_the_closest_and_the_flows(folder):
    done = layerflow(folder / "sub", "plan", "tinyflow:flw")
    assert done.returncode == 2
    assert "has no 'flw'. Did you mean 'flow'? Its Flow objects: flow, other." in done.stderr
    done = layerflow(folder / "sub", "plan", "tinyflow:lf")
    assert "it is a module, not a layerflow.Flow" in done.stderr


def test_a_missing_module_or_file_says_what_to_do(folder):
    done = layerflow(folder, "plan", "nosuch:flow")
    assert done.returncode == 2
    assert "there is no module 'nosuch' here" in done.stderr
    assert "path/to/nosuch.py:flow" in done.stderr
    done = layerflow(folder, "plan", "sub/missing.py:flow")
    assert done.returncode == 2 and "there is no file sub/missing.py" in done.stderr
    done = layerflow(folder, "plan", "sub/tinyflow.py")
    assert done.returncode == 2 and "name the flow in it" in done.stderr
    (folder / "broken.py").write_text("import not_a_module_anywhere\n")
    done = layerflow(folder, "plan", "broken.py:flow")
    assert done.returncode == 2 and "not_a_module_anywhere" in done.stderr
    assert "Traceback" not in done.stderr
