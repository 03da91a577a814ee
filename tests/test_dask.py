"""The Dask backend: what holds only there (the conformance suite in test_backends.py runs
on it too). Most tests use the session's cluster (a scheduler in this process, two worker
processes); the last ones start clusters of their own, as users do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import layerflow as lf

distributed = pytest.importorskip("distributed")

UNPICKLED: list[int] = []  # in this process: how often a Counted value arrived here


def _rebuild(size: int) -> Counted:
    UNPICKLED.append(size)
    return Counted(size)


class Counted:
    """A value that counts how often it is unpickled in the process that unpickles it."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __reduce__(self):
        return _rebuild, (self.size,)


class Watch(distributed.diagnostics.plugin.SchedulerPlugin):
    """Records every task transition on the (in-process) scheduler, with its priority."""

    name = "layerflow-test-watch"

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler
        self.log: list[tuple[str, str, str, tuple | None]] = []

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        ts = self.scheduler.tasks.get(key)
        self.log.append((str(key), start, finish, ts.priority if ts is not None else None))

    def of(self, task: str) -> list[tuple[str, str, tuple | None]]:
        return [(s, f, p) for k, s, f, p in self.log if k.rsplit("-", 1)[0] == task]


@pytest.fixture
def watch(dask_cluster, dask_client):
    cluster, _ = dask_cluster
    plugin = Watch(cluster.scheduler)
    cluster.scheduler.add_plugin(plugin, name=Watch.name)
    yield plugin
    cluster.scheduler.remove_plugin(name=Watch.name)


def ours_left(cluster, names) -> list[str]:
    """Keys of these tasks still on the cluster, after giving releases a moment."""
    left: list[str] = []
    for _ in range(50):
        left = [str(k) for k in cluster.scheduler.tasks if str(k).rsplit("-", 1)[0] in names]
        if not left:
            break
        time.sleep(0.1)
    return left


def test_tasks_run_on_the_workers_and_values_flow_between_them(dask_client):
    flow = lf.Flow()
    flow.add(lambda: os.getpid(), name="where")
    flow.add(lambda where: where, name="same", executor="thread")  # back here, by value
    run = flow.run(backend="dask", client=dask_client)
    assert run["where"] != os.getpid() and run["same"] == run["where"]
    assert run.ok


def test_upstream_values_stay_on_the_cluster(dask_client, dask_cluster):
    cluster, _ = dask_cluster
    flow = lf.Flow()
    flow.add(lambda: Counted(1000), name="big")
    flow.add(lambda big: big.size + 1, name="use")
    UNPICKLED.clear()
    run = flow.run(backend="dask", client=dask_client, outputs=["use"])
    assert run["use"] == 1001
    assert UNPICKLED == []  # "big" went from worker to worker, never through here
    with pytest.raises(lf.NoValueError, match="released"):
        run["big"]
    assert ours_left(cluster, {"big", "use"}) == []

    # without outputs every value is wanted: brought back once, at the end
    run = flow.run(backend="dask", client=dask_client)
    assert run["big"].size == 1000 and UNPICKLED == [1000]


def test_a_value_is_released_on_the_cluster_once_its_last_user_finished(dask_client, watch):
    flow = lf.Flow()
    flow.add(lambda: 1, name="a")
    flow.add(lambda a: a + 1, name="b")
    flow.add(lambda b: time.sleep(0.5) or b + 1, name="c")
    run = flow.run(backend="dask", client=dask_client, outputs=["c"])
    assert run["c"] == 3
    log = watch.log
    a_gone = [  # its data dropped from the workers' memory
        k for k, (key, s, f, _) in enumerate(log) if key.startswith("a-") and s == "memory"
    ]
    c_done = [k for k, (key, _, f, _) in enumerate(log) if key.startswith("c-") and f == "memory"]
    assert a_gone and c_done and a_gone[0] < c_done[0]


def test_priority_is_passed_on_to_dask(dask_client, watch):
    flow = lf.Flow()
    flow.add(lambda: 1, name="urgent", priority=7)
    flow.add(lambda: 2, name="plain")
    flow.run(backend="dask", client=dask_client)
    urgent = [p for _, f, p in watch.of("urgent") if f == "processing"]
    plain = [p for _, f, p in watch.of("plain") if f == "processing"]
    assert urgent and urgent[0][0] == -7  # Dask: the user's priority, negated, first
    assert plain and plain[0][0] == 0


def test_limits_checkpoints_and_map_hold_on_dask(dask_client, tmp_path):
    starts: list[tuple[str, float]] = []
    flow = lf.Flow()
    flow.add(lambda: [1, 2, 3, 4], name="items")
    flow.add(
        lambda items: time.sleep(0.2) or items * 10, name="each", map="items", resources={"slot": 1}
    )
    flow.add(lambda each: sum(each), name="total", rate_limit="api")
    run = flow.run(
        backend="dask",
        client=dask_client,
        resources={"slot": 1},
        rate_limits={"api": "5/s"},
        on_event=lambda e: starts.append((e.task, e.time)) if e.kind == "task_started" else None,
    )
    assert run["each"] == [10, 20, 30, 40] and run["total"] == 100
    spans = sorted(
        (run.tasks[f"each[{k}]"].started_at, run.tasks[f"each[{k}]"].finished_at) for k in range(4)
    )
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False))

    stopped = flow.run(
        backend="dask",
        client=dask_client,
        resources={"slot": 1},
        rate_limits={"api": "5/s"},
        checkpoint=lambda report: False,
    )
    assert stopped.status == "stopped" and stopped["items"] == [1, 2, 3, 4]
    assert stopped.tasks["total"].status == "cancelled"


def test_the_store_records_dask_results_and_resume_reuses_them(dask_client, tmp_path):
    ran = tmp_path / "ran"
    flow = lf.Flow("dask-store")

    @flow.task
    def first():
        with open(ran, "a") as f:
            f.write("first\n")
        return 21

    @flow.task
    def second(first):
        if not (tmp_path / "go").exists():
            raise RuntimeError("not yet")
        return first * 2

    store = tmp_path / "store"
    with pytest.raises(lf.TaskFailed):
        flow.run(backend="dask", client=dask_client, store=store)
    (tmp_path / "go").write_text("")
    run = flow.run(backend="dask", client=dask_client, store=store, resume=True)
    assert run["second"] == 42
    assert run.tasks["first"].status == "reused"
    assert ran.read_text() == "first\n"  # ran once, in the first run


def test_events_and_progress_lines_on_dask(dask_client, capsys):
    kinds: list[str] = []
    flow = lf.Flow()
    flow.add(lambda: 1, name="a")
    flow.add(lambda a: a, name="b")
    flow.run(
        backend="dask", client=dask_client, on_event=lambda e: kinds.append(e.kind), progress=True
    )
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("task_started") == 2 and kinds.count("task_succeeded") == 2
    assert "Completed 2 tasks" in capsys.readouterr().err


def test_an_unpicklable_task_fails_before_it_is_sent(dask_client):
    lock = threading.Lock()
    flow = lf.Flow()
    flow.add(lambda: lock.locked(), name="locked", retries=2)
    run = flow.run(backend="dask", client=dask_client, fail_fast=False)
    task = run.tasks["locked"]
    assert isinstance(task.error, lf.UnpicklableError) and task.attempts == 1
    assert "'locked'" in str(task.error) and "Dask cluster" in str(task.error)


def test_options_for_dask_only_are_refused_elsewhere():
    flow = lf.Flow()
    flow.add(lambda: 1, name="a")
    with pytest.raises(lf.InvalidOptionError, match="backend='dask'"):
        flow.run(address="tcp://127.0.0.1:8786")
    with pytest.raises(lf.LayerflowError, match="distributed.Client"):
        flow.run(backend="dask", client=object())


def test_a_missing_distributed_install_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    flow = lf.Flow()
    flow.add(lambda: 1, name="a")
    with pytest.raises(lf.LayerflowError) as info:
        flow.run(backend="dask")
    from layerflow.backends import install_command

    assert str(info.value) == (
        f"Backend 'dask' is not available. Install it with: {install_command('dask')}"
    )


def test_a_missing_install_is_one_line_on_the_command_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text('steps:\n  - {name: hello, run: "echo hello"}\n')
    hide = "import sys; sys.modules['distributed'] = None; from layerflow.cli import main; main()"
    out = subprocess.run(
        [sys.executable, "-c", hide, "run", str(path), "--backend", "dask", "--no-store"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Backend 'dask' is not available. Install it with: pip install -e '" in lines[0]
    assert lines[0].endswith("[dask]'")  # the clone's path: layerflow runs from one here


# --- a worker that dies (it is restarted by its nanny; the session cluster waits for it) ---


def test_a_worker_that_dies_fails_its_task_and_retries_apply(dask_client, tmp_path):
    marker = tmp_path / "died-once"

    def die_once():
        if not marker.exists():
            marker.write_text("x")
            time.sleep(0.3)  # a crash after some work (one within milliseconds of the start
            os._exit(3)  # cannot be told from a task only queued there: it is sent again)
        return "recovered"

    flow = lf.Flow()
    flow.add(die_once, name="retried", retries=1)
    run = flow.run(backend="dask", client=dask_client)
    assert run["retried"] == "recovered" and run.tasks["retried"].attempts == 2

    dask_client.wait_for_workers(2, timeout=60)
    flow = lf.Flow()
    flow.add(lambda: time.sleep(0.3) or os._exit(7), name="dies")
    flow.add(lambda: "fine", name="fine")
    run = flow.run(backend="dask", client=dask_client, fail_fast=False)
    dead = run.tasks["dies"]
    assert dead.status == "failed" and isinstance(dead.error, lf.WorkerDied)
    assert "'dies'" in str(dead.error) and "tcp://127.0.0.1:" in str(dead.error)
    assert "KilledWorker" in str(dead.error)
    assert run["fine"] == "fine"


def test_a_worker_death_fails_only_the_task_it_was_running(dask_client):
    # regression: tasks only queued on the dying worker failed with KilledWorker too
    def dies():
        time.sleep(0.5)
        os._exit(5)

    def innocent(k):
        time.sleep(0.2)
        return k

    flow = lf.Flow()
    flow.add(dies, name="dies", priority=10)
    for k in range(8):
        flow.add(innocent, name=f"innocent{k}", params={"k": k})
    run = flow.run(backend="dask", client=dask_client, fail_fast=False)
    assert run.tasks["dies"].status == "failed"
    assert isinstance(run.tasks["dies"].error, lf.WorkerDied)
    statuses = {k: run.tasks[f"innocent{k}"].status for k in range(8)}
    assert statuses == dict.fromkeys(range(8), "succeeded")
    assert [run[f"innocent{k}"] for k in range(8)] == list(range(8))


def test_dask_durations_do_not_count_the_wait_in_dasks_queue(dask_client):
    # regression: a task's duration ran from its submission, its wait for a worker included
    flow = lf.Flow()
    for k in range(4):
        flow.add(lambda: time.sleep(0.5), name=f"nap{k}")
    run = flow.run(backend="dask", client=dask_client)  # 2 workers: two naps wait
    durations = sorted(t.duration for t in run.tasks.values())
    assert durations[-1] < 0.85, durations  # each ran ~0.5 s; waiting made it ~1 s
    assert run.sequential_estimate < 3.4


# --- clusters of their own ------------------------------------------------------------------


def test_without_an_address_a_local_cluster_runs_the_script_and_closes(tmp_path):
    # no main guard: the workers are fresh interpreters, the script is never re-imported
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, os
            import layerflow as lf

            flow = lf.Flow()
            flow.add(lambda: os.getpid(), name="pid")
            flow.add(lambda pid: os.getpid(), name="other")
            run = flow.run(backend="dask")
            print(json.dumps({"me": os.getpid(), "pid": run["pid"], "other": run["other"]}))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 0, out.stderr
    pids = json.loads(out.stdout.strip().splitlines()[-1])
    assert pids["pid"] != pids["me"]
    for _ in range(50):  # the workers went with the run
        alive = [p for p in (pids["pid"], pids["other"]) if Path(f"/proc/{p}").exists()]
        if not alive:
            break
        time.sleep(0.1)
    assert not alive


def test_the_cli_runs_a_pipeline_on_a_dask_scheduler_and_worker(tmp_path):
    (tmp_path / "mysteps.py").write_text("def shout(input):\n    return input.upper() + '!'\n")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        textwrap.dedent(
            """
            name: remote
            steps:
              - {name: hello, run: "echo hello"}
              - {name: shout, uses: "mysteps:shout", input_from: hello}
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    info = tmp_path / "scheduler.json"
    common = ["--no-dashboard", "--host", "127.0.0.1"]
    scheduler = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--port",
            "0",
            "--scheduler-file",
            str(info),
            *common,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    worker = None
    try:
        for _ in range(300):
            if info.exists() and info.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        worker = subprocess.Popen(  # the user's module is importable on the worker
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                address,
                "--nthreads",
                "1",
                *common,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        with distributed.Client(address, timeout=30) as c:
            c.wait_for_workers(1, timeout=60)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "layerflow",
                "run",
                str(pipeline),
                "--backend",
                "dask",
                "--address",
                address,
                "--no-store",
                "--json",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert result["status"] == "succeeded"
        assert result["tasks"]["shout"]["output"] == "HELLO!"
    finally:
        for proc in (worker, scheduler):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)


def test_a_wrong_address_is_a_clear_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text('steps:\n  - {name: hello, run: "echo hello"}\n')
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "layerflow",
            "run",
            str(path),
            "--backend",
            "dask",
            "--address",
            "tcp://127.0.0.1:9",
            "--no-store",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 2
    assert "cannot connect to the Dask scheduler at tcp://127.0.0.1:9" in out.stderr
    assert "Traceback" not in out.stderr


def test_executor_dask_sends_one_task_to_the_cluster(dask_client):
    flow = lf.Flow()
    flow.add(lambda: os.getpid(), name="here")
    flow.add(lambda here: (here, os.getpid()), name="there", executor="dask")
    run = flow.run(client=dask_client)  # the run's backend stays "thread"
    here, there = run["there"]
    assert here == os.getpid() and there != os.getpid()


# --- found in review ---------------------------------------------------------------------


def test_queued_tasks_do_not_time_out_while_they_wait_for_a_worker(dask_client):
    # 6 tasks of 0.6 s on 2 worker threads: each starts only when a thread is free, so a
    # 1.5 s timeout (longer than the task, shorter than the queue) never fires
    flow = lf.Flow()
    for k in range(6):
        flow.add(lambda: time.sleep(0.6) or "ok", name=f"t{k}", timeout=1.5)
    run = flow.run(backend="dask", client=dask_client)
    assert run.ok and all(run.tasks[f"t{k}"].duration < 1.5 for k in range(6))


def test_a_task_cancelled_on_the_cluster_by_someone_else_fails_instead_of_hanging(dask_client):
    flow = lf.Flow()
    flow.add(lambda: time.sleep(2) or "late", name="slow")

    def cancel_everything() -> None:
        dask_client.cancel([distributed.Future(k, dask_client) for k in list(dask_client.futures)])

    timer = threading.Timer(0.5, cancel_everything)
    timer.start()
    t0 = time.perf_counter()
    run = flow.run(backend="dask", client=dask_client, fail_fast=False)
    took = time.perf_counter() - t0
    time.sleep(max(0.0, 2.2 - took))  # the worker thread sleeps on: the next test's
    assert took < 30
    error = run.tasks["slow"].error
    assert run.tasks["slow"].status == "failed" and "cancelled on the Dask cluster" in str(error)


def test_run_async_on_dask_counts_metrics_once(dask_client):
    import asyncio

    flow = lf.Flow()
    flow.add(lambda: lf.record(tokens=10) or 1, name="llm")
    run = asyncio.run(flow.run_async(backend="dask", client=dask_client))
    assert run.metrics == {"tokens": 10}


def test_a_timed_out_attempt_on_dask_does_not_count_its_metrics(dask_client, tmp_path):
    marker = tmp_path / "first"

    def flaky():
        lf.record(calls=1)
        if not marker.exists():
            marker.write_text("")
            # the first attempt overruns its timeout; its worker thread stays busy until
            # it ends, and Dask may queue the retry behind it: keep that wait short
            time.sleep(1.6)
        return "ok"

    flow = lf.Flow()
    flow.add(flaky, timeout=1.2, retries=1)
    run = flow.run(backend="dask", client=dask_client)
    assert run["flaky"] == "ok" and run.tasks["flaky"].metrics == {"calls": 1}


def test_a_bad_option_starts_no_cluster():
    def submitters() -> int:
        return sum(t.name == "layerflow-dask-submit" for t in threading.enumerate())

    before = submitters()
    flow = lf.Flow()
    flow.add(lambda: 1, name="a", rate_limit="api")
    with pytest.raises(lf.InvalidOptionError, match="rate limit looks like"):
        flow.run(backend="dask", rate_limits={"api": "lots"})
    assert submitters() <= before  # no cluster was started for it


def test_a_map_over_a_map_streams_and_zips_on_dask(dask_client):
    flow = lf.Flow("dask-chain")
    flow.add(lambda: [1, 2, 3, 4], name="items")
    flow.add(lambda items: items * 10, name="tens", map="items")
    flow.add(lambda tens: tens + 1, name="plus", map="tens")
    flow.add(lambda plus, items: plus * items, name="both", map=["plus", "items"])
    run = flow.run(backend="dask", client=dask_client)
    assert run["plus"] == [11, 21, 31, 41]
    assert run["both"] == [11, 42, 93, 164]


def _skip_two(items):
    if items == 2:
        raise lf.Skip("two")
    return items * 10


def test_a_map_with_a_skipped_element_leaves_it_out_on_dask(dask_client):
    flow = lf.Flow("dask-skip")
    flow.add(lambda: [1, 2, 3, 4], name="items")
    flow.add(_skip_two, name="tens", map="items")
    run = flow.run(backend="dask", client=dask_client)
    assert run["tens"] == [10, 30, 40]


def test_client_is_accepted_for_a_flow_with_no_dask_task(dask_client):
    # coroutines (or tasks with their own executor) run here even with backend='dask':
    # the client was refused with "pass backend='dask'", which had been passed
    flow = lf.Flow("coroutines")

    async def a():
        return 1

    flow.add(a, name="a")
    flow.add(lambda: 2, name="b", executor="thread")
    run = flow.run(backend="dask", client=dask_client, progress=False)
    assert (run["a"], run["b"]) == (1, 2)


def test_a_cluster_that_retries_dead_workers_tasks_is_named_once(caplog):
    # Dask's default allowed-failures (3) runs a task that kills its worker on worker after
    # worker before layerflow hears of it; layerflow says so, once per scheduler
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        flow = lf.Flow("warned")
        flow.add(lambda: 1, name="a")
        with caplog.at_level("WARNING", logger="layerflow"):
            flow.run(backend="dask", client=client, progress=False)
            flow.run(backend="dask", client=client, progress=False)
    said = [r.getMessage() for r in caplog.records if "allowed-failures" in r.getMessage()]
    assert len(said) == 1 and "allowed-failures: 3" in said[0]


def test_layerflows_own_test_cluster_is_not_warned_about(dask_client, caplog):
    flow = lf.Flow("quiet")
    flow.add(lambda: 1, name="a")
    with caplog.at_level("WARNING", logger="layerflow"):
        flow.run(backend="dask", client=dask_client, progress=False)
    assert not [r for r in caplog.records if "allowed-failures" in r.getMessage()]
