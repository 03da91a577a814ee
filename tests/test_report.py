"""The Chrome trace and the HTML report: parsed back, opened in headless Chromium, written
from the command line and from the store."""

from __future__ import annotations

import json
import re
import sqlite3
import textwrap
import time
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_cli import layerflow  # the command line in a subprocess

import layerflow as lf
from layerflow import report
from layerflow.errors import safe_str
from layerflow.store import Store

ODD = 'we<i>rd & "x"'  # a task name that HTML would misread if it were not escaped


def busy_flow() -> lf.Flow:
    """Retries, a pool of one, a rate limit, a failure, a skip and an odd name."""
    flow = lf.Flow("busy")
    calls = {"flaky": 0}

    @flow.task
    def start():
        time.sleep(0.05)
        return 1

    @flow.task(retries=2)
    def flaky(start):
        calls["flaky"] += 1
        time.sleep(0.02)
        if calls["flaky"] < 3:
            raise ValueError(f"flaky failure {calls['flaky']}")
        return 2

    @flow.task(resources={"gpu": 1})
    def gpu_a(start):
        time.sleep(0.08)

    @flow.task(resources={"gpu": 1})
    def gpu_b(start):
        time.sleep(0.08)

    @flow.task(rate_limit="api")
    def api_1(start):
        return 1

    @flow.task(rate_limit="api")
    def api_2(start):
        return 2

    def odd(flaky, gpu_a):
        raise RuntimeError('broken <b>markup</b> & "quotes"')

    flow.add(odd, name=ODD)

    @flow.task(after=[ODD])
    def after_odd(api_1):
        return 0

    return flow


def run_busy(**options) -> lf.RunResult:
    return busy_flow().run(
        max_workers=4,
        fail_fast=False,
        resources={"gpu": 1},
        rate_limits={"api": lf.RateLimit(1, 0.15)},
        **options,
    )


@pytest.fixture(scope="module")
def busy() -> lf.RunResult:
    return run_busy()


# --- the trace ------------------------------------------------------------------------------


def test_the_trace_has_every_attempt_in_a_lane_and_the_waits_as_events(busy, tmp_path):
    path = busy.to_chrome_trace(tmp_path / "run.json")
    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    meta = [e for e in events if e["ph"] == "M"]
    assert {"process_name", "thread_name"} <= {e["name"] for e in meta}
    spans = [e for e in events if e["ph"] == "X"]
    for e in spans:
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        assert e["ts"] >= 0 and e["dur"] >= 0 and e["name"]
    tasks = [e for e in spans if e["cat"] == "task"]
    started = {name: t.attempts for name, t in busy.tasks.items() if t.attempts}
    assert Counter(e["name"] for e in tasks) == started  # every attempt once
    for e in tasks:
        t = busy.tasks[e["name"]]
        assert e["args"]["status"] == t.status
        assert e["args"]["attempts"] == t.attempts and e["args"]["layer"] == t.layer
    flaky = sorted((e for e in tasks if e["name"] == "flaky"), key=lambda e: e["ts"])
    assert [e["args"]["attempt"] for e in flaky] == [1, 2, 3]
    assert [e["args"]["outcome"] for e in flaky] == ["failed", "failed", "succeeded"]
    assert "flaky failure 1" in flaky[0]["args"]["error"]
    odd = next(e for e in tasks if e["name"] == ODD)
    assert odd["args"]["status"] == "failed"

    lanes: dict[tuple[int, int], list[dict]] = {}
    for e in spans:
        lanes.setdefault((e["pid"], e["tid"]), []).append(e)
    for lane in lanes.values():  # no two events on one lane overlap
        lane.sort(key=lambda e: e["ts"])
        for a, b in zip(lane, lane[1:], strict=False):
            assert a["ts"] + a["dur"] <= b["ts"] + 0.002, (a, b)
    workers = {e["tid"] for e in tasks}
    assert len(workers) <= 4  # one lane per worker slot, never more than max_workers
    named = {e["tid"] for e in meta if e["name"] == "thread_name" and e["pid"] == 1}
    assert workers <= named

    waits = [e for e in spans if e["cat"] != "task"]
    kinds = Counter((e["args"]["task"], e["cat"]) for e in waits)
    assert kinds[("flaky", "retry")] == 2  # each retry's wait is its own event
    assert kinds[("gpu_a", "pool")] + kinds[("gpu_b", "pool")] == 1  # one waited for the gpu
    assert kinds[("api_1", "rate_limit")] + kinds[("api_2", "rate_limit")] == 1
    rate = next(e for e in waits if e["cat"] == "rate_limit")
    assert rate["dur"] > 50_000  # a visible wait (the window is 150 ms), not a blip
    assert "rate limit 'api'" in rate["args"]["reason"]


def test_attempts_and_waits_are_on_the_result(busy):
    assert [a.attempt for a in busy.attempts if a.task == "flaky"] == [1, 2, 3]
    assert all(a.finished_at >= a.started_at for a in busy.attempts)
    assert {w.kind for w in busy.waits} == {"retry", "pool", "rate_limit"}
    assert ("start", "flaky") in busy.edges and ("flaky", ODD) in busy.edges


# --- the HTML report ------------------------------------------------------------------------


def test_the_report_escapes_every_name_and_error(busy, tmp_path):
    text = busy.to_html(tmp_path / "r.html").read_text()
    assert ODD not in text and "<b>markup" not in text
    assert "we&lt;i&gt;rd &amp; &quot;x&quot;" in text
    assert "http://" not in text and "https://" not in text  # nothing to fetch


def open_report(browser, path: Path):
    """The page, with every console error and every request it made recorded."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.resolve().as_uri())
    return page, errors, requests


def column(page, k: int, attr: str | None = None) -> list[str]:
    cells = page.locator(f"#tasks tbody tr td:nth-child({k})")
    if attr:
        return [cells.nth(i).get_attribute(attr) for i in range(cells.count())]
    return cells.all_inner_texts()


def test_the_report_in_headless_chromium(busy, browser, tmp_path):
    path = busy.to_html(tmp_path / "report.html")
    page, errors, requests = open_report(browser, path)

    bars = page.locator("#timeline rect.bar")
    drawn = Counter(bars.nth(i).get_attribute("data-task") for i in range(bars.count()))
    assert drawn == {name: t.attempts for name, t in busy.tasks.items() if t.attempts}
    assert page.locator("#timeline rect.wait").count() == len(busy.waits)
    assert page.locator("#graph g.node").count() == len(busy.tasks)
    assert page.locator("#graph path.edge").count() == len(busy.edges)
    assert page.locator("#graph g.node.crit").count() == len(busy.critical_path)
    summary = page.locator("#summary").inner_text()
    assert "failed" in summary and "Speedup" in summary and "Critical path" in summary
    # the odd name is text, not markup
    assert page.evaluate("document.querySelectorAll('body i, body b').length") == 0
    assert ODD in column(page, 1)

    names_before = column(page, 1)
    page.click("#tasks th:has-text('Duration')")
    up = [float(v) for v in column(page, 5, "data-v")]
    assert up == sorted(up)
    page.click("#tasks th:has-text('Duration')")
    down = [float(v) for v in column(page, 5, "data-v")]
    assert down == sorted(down, reverse=True)
    assert column(page, 1) != names_before
    page.click("#tasks th:has-text('Task')")
    assert column(page, 1) == sorted(names_before, key=str.lower)

    page.hover("#timeline rect.bar[data-task='flaky'] >> nth=0")
    tip = page.locator("#tip")
    assert tip.is_visible()
    assert "flaky" in tip.inner_text() and "attempt 1 of 3" in tip.inner_text()
    page.hover("#graph g.node[data-task='start']")
    assert "layer 0" in tip.inner_text() and "start" in tip.inner_text()
    page.hover("#timeline rect.bar[data-task='flaky'] >> nth=0")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000

    assert errors == []
    assert requests == [path.resolve().as_uri()]  # no request leaves the file
    page.close()


def test_a_large_run_gives_a_capped_report_quickly(browser, tmp_path):
    flow = lf.Flow("large")
    noop = lambda: None  # noqa: E731
    for k in range(12_000):
        flow.add(noop, name=f"t{k}")
    for k in range(40):  # a second layer, so the graph has edges and columns
        flow.add(lambda **_: None, name=f"sum{k}", after=[f"t{j}" for j in range(k, 12_000, 40)])
    run = flow.run(max_workers=4)
    began = time.perf_counter()
    path = run.to_html(tmp_path / "large.html")
    took = time.perf_counter() - began
    assert took < 30  # seconds, on a loaded 2-core machine: nowhere near a problem
    assert path.stat().st_size < 15_000_000
    page, errors, requests = open_report(browser, path)
    assert page.locator("#timeline rect.bar").count() == report.MAX_BARS
    assert page.locator("#tasks tbody tr").count() == report.MAX_ROWS
    notes = page.locator(".notes").inner_text()
    assert "The timeline draws 10,000 of 12,040 attempts" in notes
    assert "The graph draws" in notes and "The table lists 5,000 of 12,040" in notes
    assert errors == [] and requests == [path.resolve().as_uri()]
    page.close()


def test_writing_into_a_missing_folder_says_what_to_do(busy, tmp_path):
    with pytest.raises(lf.LayerflowError, match="does not exist; create it first"):
        busy.to_html(tmp_path / "nope" / "r.html")
    with pytest.raises(lf.LayerflowError, match="it is a folder"):
        busy.to_chrome_trace(tmp_path)


# --- from the store -------------------------------------------------------------------------


def test_a_stored_run_has_the_same_attempts_waits_and_edges(tmp_path):
    live = run_busy(store=tmp_path / "s")
    stored = Store(tmp_path / "s").load_run(live.run_id)
    assert stored.status == live.status and stored.layers == live.layers
    assert stored.critical_path == live.critical_path
    assert sorted(stored.edges) == sorted(live.edges)

    def key(a):
        return (a.task, a.attempt, a.outcome, a.lane, round(a.started_at, 6))

    assert sorted(map(key, stored.attempts)) == sorted(map(key, live.attempts))
    assert sorted((w.task, w.kind) for w in stored.waits) == sorted(
        (w.task, w.kind) for w in live.waits
    )
    assert abs(stored.duration - live.duration) < 1e-3
    assert str(stored.tasks[ODD].error) == safe_str(live.tasks[ODD].error)
    stored.to_chrome_trace(tmp_path / "t.json")
    assert "we&lt;i&gt;rd" in stored.to_html(tmp_path / "r.html").read_text()


_OLD_SCHEMA = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, flow TEXT, started_at REAL, finished_at REAL,
    status TEXT, tasks INTEGER, resumed_from TEXT);
CREATE TABLE task_runs (run_id TEXT, name TEXT, status TEXT, attempts INTEGER,
    started_at REAL, finished_at REAL, duration REAL, error TEXT, key TEXT, result TEXT,
    PRIMARY KEY (run_id, name));
CREATE TABLE cache (key TEXT PRIMARY KEY, name TEXT, result TEXT, created_at REAL);
"""


def test_a_run_recorded_by_an_earlier_version_still_gives_a_report(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir(mode=0o700)
    db = sqlite3.connect(folder / "state.db")
    db.executescript(_OLD_SCHEMA)
    db.execute("INSERT INTO runs VALUES ('r1', 'old', 100.0, 101.0, 'failed', 3, NULL)")
    db.executemany(
        "INSERT INTO task_runs VALUES ('r1', ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
        [
            ("a", "succeeded", 1, 100.0, 100.5, 0.5, None),
            ("b", "failed", 2, 100.0, 100.8, 0.7, "ValueError: no"),
            ("c", "skipped", 0, None, None, 0.0, None),
        ],
    )
    db.commit()
    db.close()
    stored = Store(folder).load_run("r1")  # the new tables and columns are added
    assert [(a.task, a.lane) for a in stored.attempts] == [("a", 0), ("b", 1)]
    assert stored.waits == [] and stored.edges == []
    assert str(stored.tasks["b"].error) == "ValueError: no"
    trace = json.loads(stored.to_chrome_trace(tmp_path / "t.json").read_text())
    assert {e["name"] for e in trace["traceEvents"] if e["ph"] == "X"} == {"a", "b"}
    assert "ValueError: no" in stored.to_html(tmp_path / "r.html").read_text()
    with pytest.raises(lf.LayerflowError, match="no run 'r2'"):
        Store(folder).load_run("r2")


# --- the command line -----------------------------------------------------------------------


def test_run_and_show_write_the_trace_and_the_report(tmp_path):
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(
            """
            name: cli
            settings: {order: dataflow, rate_limits: {api: "1/s"}}
            steps:
              - {name: base, run: "echo base"}
              - {name: left, run: "echo left", needs: [base], rate_limit: api}
              - {name: right, run: "echo right", needs: [base], rate_limit: api}
              - {name: "<end>", run: "echo end", needs: [left, right]}
            """
        )
    )
    out = layerflow("run", "p.yaml", "--trace", "t.json", "--report", "r.html", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Trace written to t.json" in out.stdout and "Report written to r.html" in out.stdout
    trace = json.loads((tmp_path / "t.json").read_text())
    names = Counter(e["name"] for e in trace["traceEvents"] if e.get("cat") == "task")
    assert names == {"base": 1, "left": 1, "right": 1, "<end>": 1}
    assert any(e.get("cat") == "rate_limit" for e in trace["traceEvents"])
    assert "&lt;end&gt;" in (tmp_path / "r.html").read_text()

    run_id = Store(tmp_path / ".layerflow").runs()[0]["run_id"]
    (tmp_path / "out").mkdir()
    out = layerflow("show", run_id, "--report", "out/r.html", "--trace", "out/t.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "left" in out.stdout and "Report written to out/r.html" in out.stdout
    again = json.loads((tmp_path / "out" / "t.json").read_text())
    assert Counter(e["name"] for e in again["traceEvents"] if e.get("cat") == "task") == names
    html = (tmp_path / "out" / "r.html").read_text()
    assert "&lt;end&gt;" in html and 'class="edge' in html


def test_a_missing_folder_for_trace_or_report_exits_2_before_running(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "p.yaml").write_text(f'steps:\n  - {{name: a, run: "touch {marker}"}}\n')
    out = layerflow("run", "p.yaml", "--report", "missing/r.html", cwd=tmp_path)
    assert out.returncode == 2
    assert "missing" in out.stderr and "does not exist" in out.stderr
    assert "Traceback" not in out.stderr
    assert not marker.exists()  # refused before anything ran
    assert layerflow("run", "p.yaml", "-q", cwd=tmp_path).returncode == 0
    run_id = Store(tmp_path / ".layerflow").runs()[0]["run_id"]
    out = layerflow("show", run_id, "--trace", "missing/t.json", cwd=tmp_path)
    assert out.returncode == 2 and "does not exist" in out.stderr
    assert "Traceback" not in out.stderr
    out = layerflow("show", "no-such-run", "--trace", "t.json", cwd=tmp_path)
    assert out.returncode == 2 and "no run 'no-such-run'" in out.stderr


def test_the_report_explains_the_run_in_headless_chromium(busy, browser, tmp_path):
    path = busy.to_html(tmp_path / "explained.html")
    page, errors, requests = open_report(browser, path)
    # names are drawn on the bars that have room, inside their bar
    shown = page.evaluate(
        """() => Array.from(document.querySelectorAll('#timeline text.bl'))
            .filter(t => t.style.display !== 'none' && !t.hasAttribute('hidden'))
            .map(t => [t.dataset.name, t.textContent, t.getBBox().width])"""
    )
    assert any(name == "start" and text == "start" and width > 0 for name, text, width in shown)
    inside = page.evaluate(  # each drawn name lies within its own bar
        """() => Array.from(document.querySelectorAll('#timeline text.bl'))
            .filter(t => t.style.display !== 'none' && !t.hasAttribute('hidden'))
            .map(t => { const b = t.getBBox(), r = t.previousElementSibling.getBBox();
                        return b.x >= r.x && b.x + b.width <= r.x + r.width + 1; })"""
    )
    assert inside and all(inside)
    # waits: one row per limit, not one per wait
    rows = page.evaluate(
        "() => Array.from(document.querySelectorAll('#timeline text.lbl')).map(t => t.textContent)"
    )
    assert "waiting for" in rows
    assert sum(1 for r in rows if r.startswith("pool ")) == 1
    assert sum(1 for r in rows if r.startswith("rate limit ")) == 1
    # instant tasks still show; the legend lists what is there; what bound the run is said
    widths = page.evaluate(
        "() => Array.from(document.querySelectorAll('#timeline rect.bar'))"
        ".map(r => +r.getAttribute('width'))"
    )
    assert min(widths) >= 3
    legend = page.locator(".legend").first.inner_text()
    assert "failed, retried" in legend and "waiting for a pool" in legend
    assert "timed out" not in legend and "cached" not in legend
    assert "What bound this run:" in page.locator("#summary").inner_text()
    # zoom and pan: the wheel narrows the window (ticks change), a double-click resets it
    tick_texts = (
        "() => Array.from(document.querySelectorAll('#timeline g.ticks text'))"
        ".map(t => t.textContent)"
    )
    ticks = page.evaluate(tick_texts)
    box = page.locator("#timeline").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + 40)
    for _ in range(6):
        page.mouse.wheel(0, -200)
    zoomed = page.evaluate(tick_texts)
    assert zoomed != ticks
    start_w = page.evaluate(
        "() => +document.querySelector('#timeline rect.bar[data-task=start]').getAttribute('width')"
    )
    page.mouse.dblclick(box["x"] + box["width"] * 0.4, box["y"] + 40)
    assert page.evaluate(tick_texts) == ticks
    reset_w = page.evaluate(
        "() => +document.querySelector('#timeline rect.bar[data-task=start]').getAttribute('width')"
    )
    assert start_w > reset_w
    page.screenshot(path=str(tmp_path / "explained.png"), full_page=True)
    assert errors == [] and requests == [path.resolve().as_uri()]
    page.close()


def test_a_tasks_detail_in_the_report_says_what_it_runs(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "steps:\n"
        "  - {name: greet, run: 'echo hello {{inputs.who}}', description: says hello}\n"
        "inputs: {who: world}\n"
    )
    run = lf.load_pipeline(path).run()
    html = run.to_html(tmp_path / "r.html").read_text()
    assert "says hello\nrun: echo hello {{inputs.who}}" in html.replace("&#x27;", "'")
    assert "attempt 1: succeeded" in html and "value:\nhello world" in html
    busy = run_busy()
    assert "start()" in busy.details["start"] and "test_report.py:" in busy.details["start"]


def test_the_report_has_a_cpu_column_and_the_cpu_line_one_duration_style(tmp_path):
    # #17 asked for CPU time per task; the summary printed "(5.18e-05s each)"
    flow = lf.Flow("cpu")

    @flow.task
    def spin():
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass
        return 1

    @flow.task
    def quick():
        return 2

    run = flow.run(progress=False)
    html = run.to_html(tmp_path / "r.html").read_text()
    assert '<th data-type="num" tabindex="0" scope="col">CPU</th>' in html
    table = html[html.index('<table id="tasks"') :]
    row = table[table.index(">spin<") :]
    row = row[: row.index("</tr>")]
    assert re.search(r'data-v="0\.0[4-9]\d*"', row)  # its CPU seconds, sortable
    note = run.cpu_note()
    assert note is not None
    assert re.match(r"CPU: \d+(\.\d+)? ms in 1 task \(\d+(\.\d+)? ms each\)", note), note
    assert "e-0" not in note


# --- hostile text ---------------------------------------------------------------------------

HOSTILE = ("<script>alert(1)</script>", '"><svg onload=alert(2)>', "&amp;")


def hostile_run() -> lf.RunResult:
    """Each hostile string as a task's name, its error, a line it logs and its value."""
    flow = lf.Flow("hostile")
    for k, bad in enumerate(HOSTILE):

        def fails(bad: str = bad) -> None:
            time.sleep(0.03)  # wide enough a bar for its name
            print(f"log {bad}")
            raise ValueError(f"error {bad}")

        def gives(bad: str = bad) -> dict[str, str]:
            time.sleep(0.03)
            print(f"log {bad}")
            return {"value": bad}

        flow.add(fails, name=f"f{k} {bad}")
        flow.add(gives, name=f"g{k} {bad}")
    return flow.run(max_workers=2, fail_fast=False)


class Parsed(HTMLParser):
    """A page as a browser reads it: every element with its attributes, unescaped, and the
    text inside each kind of element."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.open: list[str] = []
        self.text: dict[str, list[str]] = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag not in ("rect", "line", "path", "meta", "link"):
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in self.open:
            while self.open.pop() != tag:
                pass

    def handle_data(self, data):
        for tag in set(self.open):
            self.text.setdefault(tag, []).append(data)

    def attrs(self, tag: str, name: str) -> str:
        return "\n".join(a.get(name) or "" for t, a in self.elements if t == tag)

    def inside(self, tag: str) -> str:
        return "".join(self.text.get(tag, []))


def test_hostile_names_errors_logs_and_values_are_text_everywhere(tmp_path, browser):
    run = hostile_run()
    page = run.to_html(tmp_path / "hostile.html").read_text()
    parsed = Parsed(page)
    tips = parsed.attrs("rect", "data-tip")  # the timeline's tooltips
    nodes = parsed.attrs("g", "data-tip")  # the graph's
    for k, bad in enumerate(HOSTILE):
        assert f"f{k} {bad}\n" in tips and f"error {bad}" in tips
        assert f"f{k} {bad}\n" in nodes and f"error {bad}" in nodes
        assert f"g{k} {bad}" in parsed.attrs("text", "data-name")  # a bar's label
        assert f"g{k} {bad}"[:20] in parsed.inside("svg")  # a node's label (clipped)
        table = parsed.inside("table")
        assert f"f{k} {bad}" in table and f"error {bad}" in table
        assert f"log {bad}" in table and repr(bad) in table  # its output and its value
    # only the page's own script, no element or handler from a name
    assert [t for t, _ in parsed.elements if t == "script"] == ["script"]
    assert not [a for _, attrs in parsed.elements for a in attrs if a.startswith("on")]
    assert page.count("<script") == 1 and "<svg onload" not in page
    assert "&amp;amp;" in page  # "&amp;" itself, as text

    browsed = browser.new_page()
    dialogs: list[str] = []
    browsed.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    browsed.goto((tmp_path / "hostile.html").resolve().as_uri())
    assert browsed.evaluate("document.scripts.length") == 1
    browsed.hover(f"#timeline rect.bar[data-task='f0 {HOSTILE[0]}']")
    assert f"error {HOSTILE[0]}" in browsed.locator("#tip").inner_text()
    assert dialogs == []
    browsed.close()

    fragment = run._repr_html_()  # the notebook's: tooltips are <title>s
    shown = Parsed(fragment)
    for bad in HOSTILE:
        assert f"error {bad}" in shown.inside("title")
    assert "<script" not in fragment and "<svg onload" not in fragment
