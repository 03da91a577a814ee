"""A store that is damaged, empty, read-only or full: one clear error (exit 2, or 1 for a run
that stopped), never a traceback, and nothing that was stored is lost. And pruning."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import layerflow as lf
from layerflow.cli import main
from layerflow.store import Store, StoreError

PIPELINE = 'name: small\nsteps:\n  - {name: a, run: "echo a"}\n  - {name: b, run: "echo b"}\n'

TASKS = 120
FLOW_MODULE = textwrap.dedent(
    f"""
    import time
    import layerflow as lf

    def result(k):
        time.sleep(0.002)  # results arrive spread out, in batches smaller than the room left
        return "x" * 2000 + str(k)

    flow = lf.Flow("filling")
    for k in range({TASKS}):
        flow.add(result, name=f"t{{k:03d}}", params={{"k": k}})
    """
)


@pytest.fixture(autouse=True)
def _logging_as_it_was():
    """The command line, run in this process, sets up the ``layerflow`` logger (its level,
    a handler): put it back, so later tests' ``caplog`` sees warnings again."""
    log = logging.getLogger("layerflow")
    level, handlers = log.level, list(log.handlers)
    yield
    log.setLevel(level)
    log.handlers[:] = handlers


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``layerflow ARGS`` in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "LAYERFLOW_STORE"}
    return subprocess.run(
        [sys.executable, "-m", "layerflow", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env=env,
    )


def clear_error(out: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """Exit code 2 and one ``error:`` line with every phrase; no traceback."""
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "Traceback" not in text, text
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


def recorded(tmp_path: Path) -> Path:
    """A folder with a pipeline run twice into ``.layerflow``; the database's path."""
    (tmp_path / "p.yaml").write_text(PIPELINE)
    for _ in range(2):
        assert cli(tmp_path, "run", "p.yaml", "-q").returncode == 0
    return tmp_path / ".layerflow" / "state.db"


# --- damaged, empty, read-only ---------------------------------------------------------------


def test_random_bytes_over_the_inner_pages_are_a_clear_error(tmp_path):
    db = recorded(tmp_path)
    run_id = Store(db.parent).runs()[0]["run_id"]
    page = 4096
    data = db.read_bytes()
    assert len(data) > 2 * page
    noise = random.Random(15).randbytes(len(data) - page)
    db.write_bytes(data[:page] + noise)  # the header page intact, every other one garbage
    for args in (
        ("runs",),
        ("show", run_id),
        ("run", "p.yaml", "--resume"),
        ("run", "p.yaml"),
    ):
        line = clear_error(cli(tmp_path, *args), str(Path(".layerflow/state.db")), "damaged")
        assert "Move it away" in line and "results" in line
    with pytest.raises(StoreError) as info:
        Store(db.parent).runs()
    assert info.value.kind == "damaged" and info.value.path == db


def test_an_empty_database_is_not_taken_for_a_new_store(tmp_path):
    db = recorded(tmp_path)
    results = sorted((db.parent / "results").iterdir())
    db.write_bytes(b"")
    for args in (("runs",), ("run", "p.yaml", "--resume"), ("run", "p.yaml")):
        clear_error(cli(tmp_path, *args), str(Path(".layerflow/state.db")), "empty (0 bytes)")
    assert db.stat().st_size == 0  # left as it was found, for the user to decide
    assert sorted((db.parent / "results").iterdir()) == results
    with pytest.raises(StoreError) as info:
        Store(db.parent)
    assert info.value.kind == "empty"


def test_a_store_folder_without_a_database_still_gets_one(tmp_path):
    folder = tmp_path / "s"
    (folder / "results").mkdir(parents=True, mode=0o700)
    folder.chmod(0o700)
    store = Store(folder)
    assert store.runs() == [] and (folder / "state.db").stat().st_size > 0
    assert [p.name for p in folder.iterdir() if p.name.endswith(".new")] == []
    flow = lf.Flow("fresh")
    flow.add(lambda: 1, name="a")
    assert flow.run(store=store).ok
    store.close()


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="chmod does not stop root"
)
def test_a_read_only_database_is_a_clear_error(tmp_path):
    db = recorded(tmp_path)
    db.chmod(0o400)
    listing = cli(tmp_path, "runs")  # reading needs no writes: it still works
    assert listing.returncode == 0 and "succeeded" in listing.stdout, listing.stderr
    run_id = Store(db.parent).runs(1)[0]["run_id"]
    for args in (("run", "p.yaml"), ("run", "p.yaml", "--resume", run_id)):
        line = clear_error(cli(tmp_path, *args), str(Path(".layerflow/state.db")))
        assert "read-only" in line and "chmod u+w" in line
    assert db.stat().st_mode & 0o777 == 0o400  # not quietly made writable again


def test_a_database_opened_read_only_is_a_clear_error(tmp_path, monkeypatch):
    # what a chmod 0400 database gives an unprivileged user (SQLITE_READONLY on the first
    # write, reads fine), for tests that run as root, whom chmod does not stop
    recorded(tmp_path)
    monkeypatch.chdir(tmp_path)
    original = Store._connect

    def read_only(self: Store) -> sqlite3.Connection:
        db = original(self)
        db.execute("PRAGMA query_only = ON")
        return db

    monkeypatch.setattr(Store, "_connect", read_only)
    assert CliRunner().invoke(main, ["runs"]).exit_code == 0
    run_id = Store(".layerflow").runs(1)[0]["run_id"]
    for args in (["run", "p.yaml"], ["run", "p.yaml", "--resume", run_id]):
        out = CliRunner().invoke(main, args)
        assert out.exit_code == 2 and "Traceback" not in out.output, out.output
        assert re.search(r"error: .*\.layerflow/state\.db cannot be written", out.output)
        assert "read-only" in out.output and "--store PATH" in out.output


# --- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def filling(tmp_path, monkeypatch):
    """The working directory holds ``filling_<n>.py`` (a flow of many small tasks); gives
    its ``module:flow`` target."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LAYERFLOW_STORE", raising=False)
    name = f"filling_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(FLOW_MODULE)
    yield f"{name}:flow"
    sys.modules.pop(name, None)


def room_for(pages: int):
    """A ``Store._connect`` whose database may grow by ``pages`` only: SQLITE_FULL, as a
    full disk gives, once they are used."""
    original = Store._connect

    def connect(self: Store) -> sqlite3.Connection:
        db = original(self)
        used = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {used + pages}")
        return db

    return connect


def _named(name: str, result: str | bytes) -> str:
    """A result as these tests compare them: its name, or for one packed with its batch
    (in the database, its bytes beside its task's name) that name."""
    return f"packed:{name}" if isinstance(result, bytes) else result


def stored(folder: Path, run_id: str) -> dict[str, str]:
    """name -> result of the tasks a run stored (read with no limit), each one readable."""
    store = Store(folder)
    try:
        found = store.finished_results(run_id)
        for _, result in found.values():
            store.load_value(result)
        assert store._read("PRAGMA integrity_check") == [("ok",)]
        return {name: _named(name, result) for name, (_, result) in found.items()}
    finally:
        store.close()


def held(folder: Path) -> set[str]:
    """The results a store holds: small ones in its database (named, or packed with their
    batch), large ones as files."""
    store = Store(folder)
    try:
        inline = {row[0] for row in store._read("SELECT name FROM blobs")}
        for (run_id,) in store._read("SELECT DISTINCT run_id FROM results"):
            inline.update(
                f"packed:{name}" for name, found in store._packed(run_id).items() if found[1]
            )
    finally:
        store.close()
    return inline | {p.name for p in (folder / "results").iterdir()}


def check_stopped_cleanly(out, folder: Path) -> tuple[str, dict[str, str]]:
    """The run ended with one clear reason, its row ended, every stored result complete."""
    assert out.exit_code == 1, out.output
    assert isinstance(out.exception, SystemExit) and "Traceback" not in out.output
    assert "Stopped: the store could not take the result of" in out.output
    assert "(disk full)" in out.output
    store = Store(folder)
    (last,) = store.runs(1)
    store.close()
    assert last["status"] == "failed"  # ended, not left "running"
    kept = stored(folder, last["run_id"])
    assert 0 < len(kept) < TASKS
    # each stored row has its result, no result lacks a row
    assert set(kept.values()) == held(folder)
    return last["run_id"], kept


def resume_reuses(filling: str, kept: dict[str, str]) -> None:
    out = CliRunner().invoke(main, ["run", filling, "--resume", "--json", "-q"])
    assert out.exit_code == 0, out.output
    statuses = {n: t["status"] for n, t in json.loads(out.stdout)["tasks"].items()}
    assert {n for n, s in statuses.items() if s == "reused"} == set(kept)
    assert {n for n, s in statuses.items() if s == "succeeded"} == set(statuses) - set(kept)


@pytest.mark.parametrize("fail_fast", [True, False], ids=["fail-fast", "no-fail-fast"])
def test_a_database_that_fills_up_stops_the_run_and_resume_keeps_what_was_stored(
    filling, tmp_path, monkeypatch, caplog, fail_fast
):
    with monkeypatch.context() as patch:
        patch.setattr(Store, "_connect", room_for(25))  # results of 2 kB live in the database
        args = ["run", filling, "--max-workers", "4"] + ([] if fail_fast else ["--no-fail-fast"])
        out = CliRunner().invoke(main, args)
    _, kept = check_stopped_cleanly(out, tmp_path / ".layerflow")
    said = dict(
        re.findall(
            r"task '(t\d+)' finished, but its result could not be (stored:|stored either)",
            out.output,
        )
    )
    # the first, in full; those that were running or waiting to be stored then, briefly:
    # a few lines, then counted, and named once at the end
    assert said and list(said.values()).count("stored:") == 1
    brief = out.output.count("could not be stored either (see")
    assert brief <= 3
    if brief == 3:
        assert re.search(
            r"\.\.\. and \d+ more tasks? whose results could not be stored", out.output
        )
        assert "Not stored either (the store failed, see above): " in out.output
    assert ".layerflow/state.db is full" in out.output and "Free disk space" in out.output
    assert not [r for r in caplog.records if r.exc_info]  # no logged tracebacks
    resume_reuses(filling, kept)


def test_result_files_that_no_longer_fit_stop_the_run_too(filling, tmp_path, monkeypatch):
    import layerflow.store.results

    original = Store._save_bytes
    writes = []

    def save(self: Store, run_id: str, key: str, data: bytes) -> str:
        writes.append(key)
        if len(writes) > 30:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, run_id, key, data)

    with monkeypatch.context() as patch:
        patch.setattr(layerflow.store.results, "INLINE_MAX", 0)  # every result in a file
        patch.setattr(Store, "_save_bytes", save)
        out = CliRunner().invoke(main, ["run", filling])
    _, kept = check_stopped_cleanly(out, tmp_path / ".layerflow")
    assert len(kept) == 30
    assert "the disk is full" in out.output and str(Path(".layerflow/results")) in out.output
    resume_reuses(filling, kept)


def test_a_run_whose_end_cannot_be_recorded_says_so_and_still_resumes(
    filling, tmp_path, monkeypatch
):
    original = Store.end_run

    def end_run(self: Store, *args, **kwargs) -> None:
        with self._lock:  # from now on this connection cannot write (as on a full disk)
            self._db.execute("PRAGMA query_only = ON")
        original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Store, "end_run", end_run)
        out = CliRunner().invoke(main, ["run", filling])
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    assert "ended succeeded, but the store could not record its end" in out.output
    assert "still lists the run as running" in out.output and "--resume" in out.output
    store = Store(tmp_path / ".layerflow")
    (last,) = store.runs(1)
    store.close()
    assert last["status"] == "running"
    resume_reuses(filling, stored(tmp_path / ".layerflow", last["run_id"]))


def test_the_api_error_for_an_unrecorded_end_carries_the_result(tmp_path, monkeypatch):
    def refuse(self: Store, *args, **kwargs) -> None:
        with self._lock:
            self._db.execute("PRAGMA query_only = ON")
        Store._write(self, "UPDATE runs SET status = status", ())

    monkeypatch.setattr(Store, "end_run", refuse)
    flow = lf.Flow("ending")
    flow.add(lambda: 1, name="a")
    with pytest.raises(StoreError) as info:
        flow.run(store=tmp_path / "s")
    assert info.value.kind == "read-only" and info.value.result.ok
    assert info.value.result["a"] == 1


# --- pruning and the size line ---------------------------------------------------------------


def make_runs(tmp_path: Path) -> tuple[Store, list[str]]:
    """Runs of one flow: a failed one, a resume of it, two more; ids oldest first."""
    folder = tmp_path / ".layerflow"
    store = Store(folder)
    state = {"fail": True}
    flow = lf.Flow("pruned")

    @flow.task
    def first():
        return "first"

    @flow.task
    def second(first):
        if state["fail"]:
            raise RuntimeError("not yet")
        return first + "+second"

    assert flow.run(store=store, fail_fast=False).status == "failed"
    state["fail"] = False
    assert flow.run(store=store, resume=True).tasks["first"].status == "reused"
    for _ in range(2):
        flow.run(store=store)
    return store, [r["run_id"] for r in reversed(store.runs())]


def test_prune_keeps_what_remaining_runs_use(tmp_path):
    store, (failed, resumed, third, fourth) = make_runs(tmp_path)
    assert "first" in stored(store.folder, failed)
    out = cli(tmp_path, "runs", "--prune", "--keep", "3")
    assert out.returncode == 0, out.stderr
    # the failed run's own copy of "first" goes (packed with its batch); the resumed run
    # made it its own when it started, so it keeps it
    assert re.search(rf"removed 1 run \({failed}\) and 1 result: \d+ B freed", out.stdout)
    assert store.load_value(store.finished_results(resumed)["first"][1]) == "first"
    assert [r["run_id"] for r in store.runs()] == [fourth, third, resumed]
    for table in ("runs", "task_runs", "results", "graphs", "attempts", "waits"):
        assert store._read(f"SELECT COUNT(*) FROM {table} WHERE run_id = ?", (failed,)) == [(0,)]
    found = store.finished_results(resumed)
    assert {name: store.load_value(f) for name, (_, f) in found.items()} == {
        "first": "first",
        "second": "first+second",
    }

    out = cli(tmp_path, "runs", "--prune", "--keep", "1")
    assert "removed 2 runs" in out.stdout and "4 results" in out.stdout
    assert held(store.folder) == set(stored(store.folder, fourth).values())
    assert re.search(r"freed", out.stdout)
    assert re.search(r"store .layerflow: 1 run, 2 results, [0-9.]+ kB", out.stdout)
    store.close()


def test_prune_never_removes_a_running_run_and_keeps_the_cache(tmp_path):
    store, ids = make_runs(tmp_path)
    store.begin_run("20000101-000000-abcdef", "pruned", 2, None)  # a run still going
    flow = lf.Flow("cached")
    flow.add(lambda: "kept", name="c", cache=True)
    flow.run(store=store)
    cached = store._read("SELECT result FROM cache")[0][0]
    out = cli(tmp_path, "runs", "--prune", "--keep", "0")
    assert out.returncode == 0, out.stderr
    assert "removed 5 runs" in out.stdout and "kept 1 old run listed as running" in out.stdout
    assert [r["run_id"] for r in store.runs()] == ["20000101-000000-abcdef"]
    assert held(store.folder) == {cached}
    assert flow.run(store=store).tasks["c"].status == "cached"
    store.close()


def test_prune_older_than(tmp_path):
    store, ids = make_runs(tmp_path)
    store._write(
        "UPDATE runs SET started_at = started_at - 8 * 86400 WHERE run_id IN (?, ?)", ids[:2]
    )
    out = cli(tmp_path, "runs", "--prune", "--older-than", "7d")
    assert out.returncode == 0 and "removed 2 runs" in out.stdout, out.stderr
    assert [r["run_id"] for r in store.runs()] == ids[:1:-1]
    out = cli(tmp_path, "runs", "--prune", "--older-than", "12h")
    assert "nothing to prune" in out.stdout
    time.sleep(1.1)
    assert "removed 2 runs" in cli(tmp_path, "runs", "--prune", "--older-than", "1s").stdout
    store.close()


def test_runs_says_how_big_the_store_is(tmp_path):
    recorded(tmp_path)
    out = cli(tmp_path, "runs")
    assert out.returncode == 0
    assert re.fullmatch(
        r"store \.layerflow: 2 runs, 4 results, [0-9.]+ (B|kB|MB)",
        out.stdout.splitlines()[-1],
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prune", "--keep", "-1"], "-1 is not in the range x>=0"),
        (["--prune", "--older-than", "banana"], "'banana' is not a duration"),
        (["--prune", "--older-than", "-3d"], "is not a duration"),
        (["--prune"], "--prune needs --keep N or --older-than D"),
        (["--keep", "3"], "add --prune"),
    ],
)
def test_bad_prune_values_are_clear_errors(tmp_path, args, message):
    recorded(tmp_path)
    out = CliRunner().invoke(main, ["runs", "--store", str(tmp_path / ".layerflow"), *args])
    assert out.exit_code == 2 and message in out.output, out.output
    assert "Traceback" not in out.output
    assert len(Store(tmp_path / ".layerflow").runs()) == 2
