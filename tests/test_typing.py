"""What a user's type checker sees: a task keeps its function's parameters and return type."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("mypy")

USER_CODE = """
import layerflow as lf

flow = lf.Flow("typed")


@flow.task
def fetch(url: str) -> bytes:
    return b""


@flow.task(retries=2)
def size(fetch: bytes) -> int:
    return len(fetch)


added = flow.add(size, name="size2")
reveal_type(fetch)
reveal_type(size)
reveal_type(added)
n: int = size(b"x")
size("not bytes")
"""


def test_a_task_has_its_functions_signature_for_the_type_checker(tmp_path):
    (tmp_path / "user.py").write_text(textwrap.dedent(USER_CODE))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout
    # py.typed: the package is read, not skipped as untyped
    assert "missing library stubs or py.typed marker" not in out, out
    assert 'Revealed type is "layerflow.graph.task.Task[[url: str], bytes]"' in out, out
    assert out.count('Revealed type is "layerflow.graph.task.Task[[fetch: bytes], int]"') == 2, out
    # the only error is the user's wrong argument, found through Task.__call__
    assert out.count("error:") == 1, out
    assert 'has incompatible type "str"; expected "bytes"' in out, out
