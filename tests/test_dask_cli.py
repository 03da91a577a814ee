"""The README's Dask recipe from the command line: a scheduler that cannot import the
user's plugin module, workers that can. The scheduler never needs the user's code; a
worker that lacks it names the module and the fix."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("distributed")

STEPS = """
import layerflow as lf

@lf.step_type("lftest_shout")
def shout(input):
    return str(input).upper() + "!"
"""

PIPELINE = """
name: shouting
inputs: {input: "hello"}
plugins: [lfsteps_dask_cli]
steps:
  - {name: loud, type: lftest_shout}
  - {name: louder, type: lftest_shout, input_from: loud}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


@contextlib.contextmanager
def _daemon(argv: list[str], cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_for(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}")


def test_the_scheduler_never_needs_the_users_code(tmp_path):
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "lfsteps_dask_cli.py").write_text(STEPS)
    (pipe / "p.yaml").write_text(PIPELINE)
    elsewhere = tmp_path / "elsewhere"  # the scheduler's folder: no plugin module there
    elsewhere.mkdir()
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "distributed.cli"]
    scheduler = [*dask[:2], "distributed.cli.dask_scheduler", "--host", "127.0.0.1"]
    scheduler += ["--port", str(port), "--dashboard-address", ":0"]
    worker = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "2"]
    worker += ["--dashboard-address", ":0", "--no-nanny"]
    run = [sys.executable, "-m", "layerflow", "run", "p.yaml", "--backend", "dask"]
    run += ["--address", address, "--no-store", "--json"]
    with _daemon(scheduler, elsewhere, _clean_env()):
        _wait_for(port)
        with _daemon(worker, elsewhere, _clean_env(PYTHONPATH=str(pipe))):
            done = subprocess.run(run, cwd=pipe, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-3000:]
            assert '"output": "HELLO!!"' in done.stdout
        # a worker without the module: the error names it and the fix
        with _daemon(worker, elsewhere, _clean_env()):
            done = subprocess.run(run, cwd=pipe, capture_output=True, text=True, timeout=120)
            assert done.returncode == 1
            assert "cannot import 'lfsteps_dask_cli'" in done.stdout + done.stderr
            assert "PYTHONPATH" in done.stdout + done.stderr
            assert "Traceback" not in done.stderr
