"""layerflow ui: the live page over the store, through the public API and the command line,
in a real browser (headless Chromium driven by Playwright)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from test_cli import layerflow  # the command line in a subprocess

import layerflow as lf
from layerflow import heartbeat
from layerflow.store import Store
from layerflow.ui import UIError, serve

HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"
ODD = 'we<i>rd & "x"'


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "store"
    Store(folder).close()
    return folder


@pytest.fixture
def ui(store_dir: Path):
    server = serve(store_dir, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def get(server, path: str, host: str | None = None) -> tuple[int, str]:
    """A raw GET (the path sent as it is: no client normalizes ``..`` away)."""
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", host or f"127.0.0.1:{port}")
    conn.endheaders()
    response = conn.getresponse()
    body = response.read().decode("utf-8", "replace")
    conn.close()
    return response.status, body


def open_page(browser, url: str):
    """The page, with every console error and every request it made recorded. Its
    Content-Security-Policy is bypassed: the test's own scripts need that, and what the
    page shows must be safe by escaping alone (the policy is a second wall)."""
    page = browser.new_page(viewport={"width": 1300, "height": 900}, bypass_csp=True)
    page.errors, page.requests = [], []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("request", lambda r: page.requests.append(r.url))
    page.goto(url)
    return page


class Mine:
    """A value of the user's own class: the page must not import its module to show it."""


def finished_run(store_dir: Path) -> lf.RunResult:
    """A run with an odd name, a hostile value, a failure and a value of the user's class."""
    flow = lf.Flow("hostile")
    flow.add(lambda: HOSTILE, name=ODD)
    flow.add(lambda: Mine(), name="mine")

    @flow.task
    def broken():
        raise ValueError(f"bad input {HOSTILE}")

    return flow.run(store=store_dir, fail_fast=False)


def test_a_task_seen_running_then_succeeded_without_a_reload(browser, ui, store_dir):
    gate = threading.Event()
    flow = lf.Flow("live")

    @flow.task
    def first():
        return 1

    @flow.task
    def slow(first):
        print("working on it")
        assert gate.wait(60), "the test never opened the gate"
        return first + 1

    runner = threading.Thread(target=lambda: flow.run(store=store_dir), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not Store(store_dir).runs() and time.monotonic() < deadline:
            time.sleep(0.05)
        run_id = Store(store_dir).runs()[0]["run_id"]
        page = open_page(browser, ui.url + "run/" + run_id)
        page.wait_for_selector('#graph .node.s-running[data-task="slow"]', timeout=30_000)
        assert page.text_content("#status").strip() == "running"
        page.evaluate("window.__same = 42")  # gone if the page were loaded again
        status, body = get(ui, f"/api/run/{run_id}/task?name=slow")  # it printed: not stored
        assert "Nothing printed" not in body and "Nothing stored yet" in body
        gate.set()
        page.wait_for_function(
            "document.querySelector('#status').textContent.trim() === 'succeeded'",
            timeout=30_000,
        )
        page.wait_for_selector('#graph .node.s-succeeded[data-task="slow"]', timeout=10_000)
        assert page.evaluate("window.__same") == 42
        assert "2 of 2" in page.text_content("#progress")
        assert "working on it" in get(ui, f"/api/run/{run_id}/task?name=slow")[1]
        assert page.errors == []
        assert all(url.startswith(ui.url) or url.startswith("data:") for url in page.requests)
    finally:
        gate.set()
        runner.join(60)


def test_names_values_and_tracebacks_are_text(browser, ui, store_dir):
    run = finished_run(store_dir)
    page = open_page(browser, ui.url)
    page.wait_for_selector("#runs a")
    assert "hostile" in page.text_content("#runs")
    page.click("#runs a")
    page.wait_for_selector("#failures")
    assert HOSTILE in page.text_content("#failures")  # the error's text, as text
    page.click(f"#graph [data-task='{ODD}']")
    page.wait_for_selector("#detail:not([hidden]) pre.value")
    assert HOSTILE in page.text_content("#detail pre.value")
    assert page.text_content("#detail h3") == ODD
    page.click("#detail-close")
    page.click("#graph [data-task='mine']")
    page.wait_for_selector("#detail:not([hidden])")
    page.wait_for_function("document.querySelector('#detail h3').textContent === 'mine'")
    assert "not shown here" in page.text_content("#detail")  # the user's class: not imported
    time.sleep(1.5)  # any script that would run has run
    assert page.evaluate("window.__pwned") is None
    assert page.errors == []
    status, body = get(ui, f"/run/{run.run_id}")
    assert status == 200 and HOSTILE not in body and "&lt;script&gt;" in body


def test_paths_outside_the_pages_are_refused(ui, store_dir):
    finished_run(store_dir)
    for path in (
        "/static/../state.db",
        "/static/..%2Fstate.db",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/../../etc/passwd",
        "/state.db",
        "/results/",
        "/static/",
        "/run/..%2F..%2Fetc%2Fpasswd",
    ):
        status, body = get(ui, path)
        assert status == 404, path
        assert "root:" not in body and "SQLite format" not in body


def test_an_unknown_run_is_a_404_page_not_a_traceback(ui, store_dir):
    status, body = get(ui, "/run/no-such-run")
    assert status == 404
    assert "There is no run &#x27;no-such-run&#x27;" in body and "Traceback" not in body
    status, body = get(ui, "/run/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert status == 404 and "<script>alert" not in body and "&lt;script&gt;alert" in body
    status, body = get(ui, "/api/run/no-such-run")
    assert status == 404 and "no-such-run" in json.loads(body)["error"]
    finished_run(store_dir)
    run_id = Store(store_dir).runs()[0]["run_id"]
    status, body = get(ui, f"/api/run/{run_id}/task?name=nope")
    assert status == 404 and "no task 'nope'" in json.loads(body)["error"]


def test_read_only_and_only_at_its_own_address(ui):
    port = ui.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/", body=b"x")
    assert conn.getresponse().status == 405
    conn.close()
    status, _ = get(ui, "/", host=f"evil.example:{port}")  # DNS rebinding
    assert status == 403
    assert get(ui, "/", host=f"localhost:{port}")[0] == 200
    assert ui.server_address[0] == "127.0.0.1"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/")
    policy = conn.getresponse().getheader("Content-Security-Policy")
    conn.close()
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_a_store_that_does_not_exist_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UIError, match="no store at .*nowhere: the folder does not exist"):
        serve(missing, port=0)
    assert not missing.exists()  # never created
    result = layerflow("ui", "--store", str(missing), "--port", "0")
    assert result.returncode == 2
    assert "no store at" in result.stderr and "Traceback" not in result.stderr


def test_a_port_in_use_is_a_clear_error(store_dir):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(UIError, match=f"port {port} on 127.0.0.1 is in use"):
            serve(store_dir, port=port)
        result = layerflow("ui", "--store", str(store_dir), "--port", str(port))
        assert result.returncode == 2
        assert "is in use" in result.stderr and "--port" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        taken.close()


def test_a_killed_run_is_shown_as_crashed(ui, store_dir, tmp_path):
    script = tmp_path / "doomed.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import time
            import layerflow as lf

            flow = lf.Flow("doomed")

            @flow.task
            def quick():
                return 1

            @flow.task
            def slow(quick):
                print("working on it", flush=True)
                time.sleep(120)

            flow.run(store={str(store_dir)!r})
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.monotonic() + 60
        run_id, state = None, None
        while time.monotonic() < deadline:
            runs = Store(store_dir).runs()
            if runs:
                run_id = runs[0]["run_id"]
                live = Store(store_dir).live(run_id)
                state = live and live["state"]
                if state and "slow" in state["tasks"]:
                    break
            time.sleep(0.1)
        assert state and state["tasks"]["slow"][0] == "running"
    finally:
        proc.kill()
        proc.wait(30)
    status, body = get(ui, f"/api/run/{run_id}")
    data = json.loads(body)
    assert status == 200 and data["status"] == "crashed" and not data["live"]
    assert f"its process ({proc.pid}) is gone" in data["html"]["banner"]
    assert "--resume" in data["html"]["banner"]
    assert 'data-task="slow"' in data["html"]["graph"] and "s-unfinished" in data["html"]["graph"]
    status, body = get(ui, "/")
    assert "crashed" in body

    def duration() -> str:  # the runs list's Duration cell of the run
        row = get(ui, "/")[1].split(f'href="/run/{run_id}"')[1]
        return row.split('<td class="num">')[1].split("</td>")[0]

    # what the task printed was to be stored when it ended: it did not, and the page says so
    status, body = get(ui, f"/api/run/{run_id}/task?name=slow")
    detail = json.loads(body)["html"]
    assert status == 200 and "Nothing printed or logged" not in detail
    assert "this run never ended" in detail
    # until its last heartbeat: it does not keep growing after the run died
    shown = duration()
    time.sleep(1.5)
    assert duration() == shown


def test_the_heartbeat_writes_about_once_a_second_not_per_task(store_dir, monkeypatch):
    writes: list[float] = []
    original = Store.save_live

    def counted(self, run_id, data):
        writes.append(time.monotonic())
        original(self, run_id, data)

    monkeypatch.setattr(Store, "save_live", counted)
    flow = lf.Flow("many")
    for k in range(300):
        flow.add(lambda: time.sleep(0.01), name=f"t{k}")
    began = time.monotonic()
    run = flow.run(store=store_dir, max_workers=2)
    took = time.monotonic() - began
    assert run.ok
    # one beat per second at most (and none in the first half second), whatever the tasks
    assert len(writes) <= took / heartbeat.INTERVAL + 1
    assert Store(store_dir).live(run.run_id) is None  # the end took its place


def test_the_runs_list(ui, store_dir):
    flow = lf.Flow("spending")

    @flow.task
    def ask():
        lf.record(cost=0.5)
        return "answer"

    @flow.task
    def broken(ask):
        raise ValueError("no")

    @flow.task
    def after(broken):
        return 1

    run = flow.run(store=store_dir, fail_fast=False, budget={"cost": 5})
    status, body = get(ui, "/")
    assert status == 200
    row = body[body.index(run.run_id) :]
    assert f'href="/run/{run.run_id}"' in body and "spending" in row
    assert '<span class="pill s-failed">failed</span>' in row
    assert "<b>1</b> succeeded" in row and "<b>1</b> failed" in row and "<b>1</b> skipped" in row
    assert "cost 0.5 of 5" in row
    status, body = get(ui, "/api/runs")
    assert status == 200 and run.run_id in json.loads(body)["html"]


def test_how_a_run_listed_as_running_is_doing():
    from layerflow.ui.view import STALE, liveness

    now = time.time()
    here = socket.gethostname()
    assert liveness(now - 1, {"at": now - 1, "pid": os.getpid(), "host": here}, now)[0] == (
        "running"
    )
    # this process is alive, but a heartbeat long overdue: stopped or stuck, not crashed
    status, note = liveness(
        now - 100, {"at": now - 2 * STALE, "pid": os.getpid(), "host": here}, now
    )
    assert status == "not responding" and str(os.getpid()) in note
    # a process on another machine that went silent
    status, note = liveness(now - 100, {"at": now - 2 * STALE, "pid": 1, "host": "elsewhere"}, now)
    assert status == "crashed" and "elsewhere" in note and "--resume" in note
    # no heartbeat row at all (an earlier layerflow's run, or a start cut short)
    assert liveness(now - 2 * STALE, None, now)[0] == "crashed"
    assert liveness(now - 1, None, now)[0] == "running"


def test_a_tasks_detail_shows_what_it_printed_as_text(ui, store_dir):
    flow = lf.Flow("talking")

    @flow.task
    def talk():
        print(f"fetched {HOSTILE}")
        return 1

    run = flow.run(store=store_dir)
    status, body = get(ui, f"/api/run/{run.run_id}/task?name=talk")
    shown = json.loads(body)["html"]
    assert status == 200 and '<pre class="logs">' in shown
    assert "fetched &lt;script&gt;window.__pwned = 1&lt;/script&gt;" in shown
    assert "<script>" not in shown


def test_a_browser_that_never_reads_its_answer_holds_up_no_one_else(ui, store_dir):
    flow = lf.Flow("chatty")

    @flow.task
    def chatty():
        for _ in range(20_000):
            print("<" * 50)  # about 4 MB once escaped: more than the socket buffers hold
        return 1

    run = flow.run(store=store_dir)
    port = ui.server_address[1]
    stalled = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(
            f"GET /api/run/{run.run_id}/task?name=chatty HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n\r\n".encode()
        )
        time.sleep(1)  # its answer is being written, and stuck: it is never read
        for path in ("/", "/api/runs", f"/run/{run.run_id}", f"/api/run/{run.run_id}"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path)
            assert conn.getresponse().status == 200, path  # raises TimeoutError if held up
            conn.close()
    finally:
        stalled.close()


def test_the_heartbeat_formats_each_listed_failure_once_and_no_other(store_dir, monkeypatch):
    formatted: list[BaseException] = []
    original = heartbeat.format_failure

    def counted(error, **kw):
        formatted.append(error)
        return original(error, **kw)

    beats: list[dict] = []
    save_live = Store.save_live

    def saved(self, run_id, data):
        if data is not None:
            beats.append(json.loads(data))
        save_live(self, run_id, data)

    monkeypatch.setattr(heartbeat, "format_failure", counted)
    monkeypatch.setattr(Store, "save_live", saved)
    monkeypatch.setattr(heartbeat, "FIRST", 0.0)
    monkeypatch.setattr(heartbeat, "INTERVAL", 0.05)
    monkeypatch.setattr(heartbeat, "MAX_LISTED", 5)
    flow = lf.Flow("failing")

    @flow.task
    def numbers():
        return list(range(120))

    @flow.task(map="numbers")
    def fails(numbers):
        time.sleep(0.01)
        raise ValueError(f"element {numbers} failed")

    run = flow.run(store=store_dir, fail_fast=False, max_workers=2)
    assert not run.ok
    with_spans = [b for b in beats if any(s[5] for s in b["spans"])]
    assert with_spans, "no beat saw a failed attempt"
    assert "failed" in with_spans[-1]["spans"][-1][5]  # spans carry the error's text
    listed = [row for b in beats for row in b["tasks"].values() if row[0] == "failed"]
    assert listed and all("Traceback" in row[6] and "ValueError" in row[6] for row in listed)
    # a traceback only for the failed tasks listed (5 here), each formatted once, not one
    # per failed attempt (120)
    assert len(formatted) == len({id(e) for e in formatted}) <= 5


def test_a_large_value_is_cut_before_it_is_formatted_and_holds_up_no_one(
    ui, store_dir, monkeypatch
):
    import pprint

    flow = lf.Flow("large")

    @flow.task
    def numbers():
        return list(range(1_000_000))

    run = flow.run(store=store_dir)
    formatting, release = threading.Event(), threading.Event()
    formatted: list[int] = []
    pformat = pprint.pformat

    def slow_pformat(value, *args, **kw):  # a large value's formatting, under way
        formatted.append(len(value))
        formatting.set()
        assert release.wait(60)
        return pformat(value, *args, **kw)

    monkeypatch.setattr(pprint, "pformat", slow_pformat)
    path = f"/api/run/{run.run_id}/task?name=numbers"
    answers: list[tuple[int, str]] = []
    asking = threading.Thread(target=lambda: answers.append(get(ui, path)), daemon=True)
    asking.start()
    try:
        assert formatting.wait(30)
        for other in ("/api/runs", f"/api/run/{run.run_id}"):
            conn = http.client.HTTPConnection("127.0.0.1", ui.server_address[1], timeout=10)
            conn.request("GET", other)
            assert conn.getresponse().status == 200, other  # TimeoutError if held up
            conn.close()
    finally:
        release.set()
        asking.join(30)
    status, body = answers[0]
    value = json.loads(body)["html"]
    assert status == 200 and "[0, 1, 2, 3" in value and "more not shown" in value
    assert formatted == [formatted[0]] and formatted[0] < 10_000  # a cut copy, not a million
    assert get(ui, path) == (status, body)  # the second time from the preview kept
    assert len(formatted) == 1


def test_answering_everywhere_it_still_answers_only_to_its_own_names(store_dir):
    server = serve(store_dir, host="0.0.0.0", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        for host in ("127.0.0.1", "localhost", socket.gethostname(), "192.0.2.7", "[::1]"):
            assert get(server, "/", host=f"{host}:{port}")[0] == 200, host
        # a page elsewhere whose name now leads here (DNS rebinding) reads nothing
        status, body = get(server, "/api/runs", host=f"evil.example:{port}")
        assert status == 403 and "own address" in json.loads(body)["error"]
        assert get(server, "/", host=f"127.0.0.1:{port + 1}")[0] == 403
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_the_open_detail_is_not_asked_for_again_while_unanswered(
    browser, ui, store_dir, monkeypatch
):
    from layerflow.ui import server as ui_server

    gate, answering, release = threading.Event(), threading.Event(), threading.Event()
    task_detail = ui_server.task_detail

    def held(*args, **kw):  # a detail slow to answer (a large value, a loaded machine)
        answering.set()
        assert release.wait(60)
        return task_detail(*args, **kw)

    monkeypatch.setattr(ui_server, "task_detail", held)
    flow = lf.Flow("live")

    @flow.task
    def first():
        return 1

    @flow.task
    def slow(first):
        assert gate.wait(60), "the test never opened the gate"

    runner = threading.Thread(target=lambda: flow.run(store=store_dir), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not Store(store_dir).runs() and time.monotonic() < deadline:
            time.sleep(0.05)
        run_id = Store(store_dir).runs()[0]["run_id"]
        page = open_page(browser, ui.url + "run/" + run_id)
        page.wait_for_selector('#graph .node[data-task="first"]', timeout=30_000)
        page.click('#graph [data-task="first"]')
        assert answering.wait(30)
        polls = len([u for u in page.requests if u.endswith(f"/api/run/{run_id}")])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the page updates itself a few times meanwhile
            page.wait_for_timeout(200)
            now = len([u for u in page.requests if u.endswith(f"/api/run/{run_id}")])
            if now >= polls + 3:
                break
        assert now >= polls + 3, "the page stopped updating"
        asked = [u for u in page.requests if "/task?name=" in u]
        assert len(asked) == 1, asked
        release.set()
        page.wait_for_selector("#detail:not([hidden]) h3", timeout=30_000)
        assert page.text_content("#detail h3") == "first"
        assert page.errors == []
    finally:
        release.set()
        gate.set()
        runner.join(60)


def test_a_cut_value_shows_a_little_of_each_part():
    from layerflow.preview import preview

    shown = preview({"rows": list(range(1_000_000)), "b": [1, 2]}, lines=40, chars=4000)
    assert shown.startswith("{'b': [1, 2],\n 'rows': [0, 1, 2,")  # b not crowded out by rows
    assert shown.endswith("... (more not shown)") and len(shown) < 4100
    shown = preview([list(range(10)), "x" * 100_000, {"k": (1, 2)}], chars=400)
    assert shown.startswith("[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9],\n 'xxx")
