"""Runs and plans in a notebook: ``_repr_html_`` (the report's cards, timeline and graph,
inline, escaped, small for big runs) and ``progress=True`` in a real Jupyter kernel."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

import layerflow as lf
from layerflow.notebook import NOTEBOOK_CAPS

HOSTILE = "<script>window.pwned=1</script>"


def hostile_flow() -> lf.Flow:
    flow = lf.Flow("nb <b>flow</b>")

    @flow.task
    def start():
        time.sleep(0.02)
        lf.record(tokens=12)
        return 1

    def odd(start):
        time.sleep(0.02)
        return "<img src=x onerror=window.pwned=2>"

    flow.add(odd, name=HOSTILE)

    @flow.task
    def middle(start):
        time.sleep(0.03)
        return 2

    @flow.task
    def end(middle):
        raise ValueError("<b>bad</b> input")

    return flow


@pytest.fixture(scope="module")
def failed_run():
    run = hostile_flow().run(fail_fast=False)
    assert run.status == "failed"
    return run


def test_a_runs_html_has_the_cards_the_timeline_and_the_graph(failed_run):
    page = failed_run._repr_html_()
    for card in ("Status", "Wall time", "Sequential estimate", "Speedup", "Tasks", "tokens"):
        assert f'<div class="k">{card}</div>' in page
    assert page.count('<svg class="timeline"') == 1
    assert page.count('<rect class="bar') == sum(t.attempts for t in failed_run.tasks.values())
    assert page.count('<svg class="graph"') == 1
    assert page.count('<g class="node') == len(failed_run.tasks)
    assert "Critical path" in page
    assert "<strong>end</strong>: ValueError: &lt;b&gt;bad&lt;/b&gt; input" in page  # failures
    assert "<title>" in page  # hover texts without a script


def test_every_name_and_value_is_escaped_and_nothing_is_fetched(failed_run):
    page = failed_run._repr_html_()
    assert HOSTILE not in page and "<b>" not in page and "<script" not in page
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page
    assert "nb &lt;b&gt;flow&lt;/b&gt;" in page
    assert not re.search(r"(src|href)=|url\((?!#)|https?://", page)
    plan = hostile_flow().plan()._repr_html_()
    assert HOSTILE not in plan and "<script" not in plan
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in plan


def test_each_output_has_its_own_style_scope_and_ids(failed_run):
    one, two = failed_run._repr_html_(), failed_run._repr_html_()
    scope = re.search(r'class="lf-nb (lf-nb-\d+)"', one).group(1)
    assert scope not in two  # two outputs on one page do not restyle each other
    style = re.search(r"<style>(.*?)</style>", one, re.S).group(1)
    selectors = [s.strip() for rule in re.findall(r"([^{}]+)\{", style) for s in rule.split(",")]
    assert selectors and all(s.startswith(f".{scope}") for s in selectors)
    clips = set(re.findall(r'id="(lf-plot-\d+)"', one + two))
    assert len(clips) == 2


def test_a_plans_html_has_its_numbers_and_graph():
    flow = hostile_flow()
    page = flow.plan()._repr_html_()
    assert '<div class="k">Tasks</div><div class="v">4</div>' in page
    assert '<div class="k">Layers</div><div class="v">3</div>' in page
    assert page.count('<g class="node') == 4
    assert page.count('<path class="edge') == 3
    assert "start → middle → end" in page


def test_a_plan_with_past_runs_shows_its_prediction(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default store, where flow.plan() looks for history
    flow = lf.Flow("timed")
    flow.add(lambda: time.sleep(0.05), name="a")
    flow.add(lambda a: time.sleep(0.05), name="b")
    flow.add(lambda a: time.sleep(0.05), name="c")
    flow.run(store=True)
    page = flow.plan()._repr_html_()
    assert '<div class="k">Predicted</div>' in page and '<div class="k">Speedup</div>' in page
    assert "3 tasks timed in past runs" in page


def test_a_big_run_stays_small_and_says_what_it_left_out():
    flow = lf.Flow("big")
    for k in range(3000):
        flow.add(lambda: None, name=f"t{k}")
    flow.add(lambda **_: None, name="sink", after=[f"t{k}" for k in range(3000)])
    run = flow.run()
    page = run._repr_html_()
    assert len(page) < 400_000
    assert page.count('<rect class="bar') <= NOTEBOOK_CAPS.bars
    assert page.count('<g class="node') <= NOTEBOOK_CAPS.nodes + NOTEBOOK_CAPS.layers  # + "more"
    assert "The graph draws" in page and "run.to_html(path)" in page
    assert len(flow.plan()._repr_html_()) < 100_000


def test_the_reprs_in_headless_chromium(failed_run, browser, tmp_path):
    """As a notebook shows them: two outputs on one page, among the page's own content."""
    plan = hostile_flow().plan()
    path = tmp_path / "notebook.html"
    path.write_text(
        "<!doctype html><meta charset='utf-8'><body><h1>A notebook</h1>"
        f"<div class='output'>{failed_run._repr_html_()}</div>"
        f"<div class='output'>{plan._repr_html_()}</div></body>",
        encoding="utf-8",
    )
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.resolve().as_uri())
    assert page.evaluate("window.pwned === undefined")
    assert page.locator("img, script").count() == 0
    timeline = page.locator("svg.timeline").bounding_box()
    assert timeline["width"] > 500 and timeline["height"] > 50
    assert page.locator("svg.graph").count() == 2
    assert page.locator("svg.graph >> nth=1").bounding_box()["height"] > 30
    assert HOSTILE in page.locator("svg.graph >> nth=0").text_content()
    # the page's own heading keeps its style: the outputs' style is scoped to them
    assert page.evaluate("getComputedStyle(document.querySelector('h1')).fontSize") == "32px"
    page.screenshot(path=str(tmp_path / "notebook.png"), full_page=True)
    assert errors == []
    assert requests == [path.resolve().as_uri()]


def test_progress_in_a_jupyter_kernel_is_one_output_updated_in_place(tmp_path, monkeypatch):
    """A real kernel: two lines per task on stderr would flood the cell; the live display
    is one output whose last frame holds the run's closing line."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    code = (
        "import time, layerflow as lf\n"
        "flow = lf.Flow('nb')\n"
        "for k in range(40):\n"
        "    flow.add(lambda: time.sleep(0.02), name=f't{k}')\n"
        "run = flow.run(progress=True, max_workers=4)\n"
        "run"
    )
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(code)]
    monkeypatch.setenv("PYTHONPATH", str(Path(lf.__file__).resolve().parents[1]))  # this layerflow
    nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = notebook.cells[0].outputs
    kinds = [o["output_type"] for o in outputs]
    assert "stream" not in kinds, outputs  # no line per task, nothing on stderr
    (display,) = [o for o in outputs if o["output_type"] == "display_data"]
    text = display["data"]["text/plain"]
    assert "40/40 done" in text and "Completed 40 tasks" in text
    (result,) = [o for o in outputs if o["output_type"] == "execute_result"]
    assert '<svg class="timeline"' in result["data"]["text/html"]
