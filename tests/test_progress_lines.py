"""The plain progress lines: ai-content-pipeline's shape, a done counter on every finished
line, numbers for mapped elements, a parallel_group's own lines, skipped tasks named."""

from __future__ import annotations

import re
import textwrap

from cli_run import layerflow

GROUP = """\
steps:
  - {name: base, run: "echo base"}
  - type: parallel_group
    name: batch_images
    steps:
      - {name: a, run: "sleep 0.2", input_from: base}
      - {name: b, run: "sleep 0.2", input_from: base}
      - {name: c, run: "sleep 0.2", input_from: base}
  - {name: final, run: "echo {{steps.a.output}}"}
"""


def test_lines_count_what_is_done_and_keep_each_tasks_number(tmp_path):
    (tmp_path / "p.yaml").write_text(GROUP)
    out = layerflow(tmp_path, "run", "p.yaml", "--no-store").stdout
    started = {name: seq for seq, name in re.findall(r"\[(\d+)/5\] Started: (\w+)", out)}
    finished = re.findall(r"\[(\d+)/5\] Completed: (\w+) \([0-9.]+s\), (\d) of 5 done", out)
    assert len(finished) == 5, out
    for seq, name, _ in finished:
        assert started[name] == seq  # k is the task's number, the same on both lines
    assert [int(k) for _, _, k in finished] == [1, 2, 3, 4, 5]  # the counter only grows


def test_a_parallel_group_has_its_own_lines(tmp_path):
    (tmp_path / "p.yaml").write_text(GROUP)
    out = layerflow(tmp_path, "run", "p.yaml", "--no-store").stdout
    lines = out.splitlines()
    begin = lines.index("Starting parallel group 'batch_images' with 3 steps")
    end = next(k for k, line in enumerate(lines) if line.startswith("Parallel group "))
    assert begin < end
    assert re.fullmatch(
        r"Parallel group 'batch_images' completed in [0-9.]+s \(vs [0-9.]+s sequential\)",
        lines[end],
    )
    between = "\n".join(lines[begin:end])
    assert all(f"Completed: {n}" in between for n in "abc")


MAPPED = textwrap.dedent(
    """
    import layerflow as lf

    flow = lf.Flow("mapped")

    @flow.task
    def chunks():
        return list(range(4))

    @flow.task(map="chunks")
    def square(chunks):
        return chunks * chunks

    @flow.task
    def total(square):
        return sum(square)
    """
)


def test_mapped_elements_get_numbers_and_the_counter_includes_them(tmp_path):
    (tmp_path / "mapped.py").write_text(MAPPED)
    out = layerflow(tmp_path, "run", "mapped:flow", "--no-store").stdout
    assert "[-/" not in out
    assert re.search(r"\[\d+/7\] Completed: square\[0\]", out), out
    assert "Completed: square (4 elements: 4 succeeded)" in out
    assert "7 of 7 done" in out
    assert "total = 14" in out


def test_a_large_map_prints_a_few_element_lines_then_counts(tmp_path):
    (tmp_path / "mapped.py").write_text(MAPPED.replace("range(4)", "range(500)"))
    out = layerflow(tmp_path, "run", "mapped:flow", "--no-store").stdout
    assert len(out.splitlines()) < 30, out
    assert "Completed: square (500 elements: 500 succeeded)" in out
    assert "Completed 503 tasks" in out


def test_skipped_tasks_are_named_at_the_end(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "steps:\n"
        "  - {name: broken, run: 'false'}\n"
        "  - {name: later, run: 'echo {{steps.broken.output}}'}\n"
        "  - {name: last, run: 'echo {{steps.later.output}}'}\n"
    )
    out = layerflow(tmp_path, "run", "p.yaml", "--no-store", "--no-fail-fast").stdout
    assert "Skipped (what they need failed): later, last" in out
    stopped = layerflow(tmp_path, "run", "p.yaml", "--no-store").stdout  # fail-fast
    assert "Cancelled (the run stopped): later, last" in stopped


def test_a_reader_that_goes_away_stops_the_lines_quietly(tmp_path):
    import subprocess
    import sys

    (tmp_path / "p.yaml").write_text(GROUP)
    proc = subprocess.Popen(
        [sys.executable, "-m", "layerflow", "run", "p.yaml", "--no-store"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline()  # as `| head -1` reads
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert "observer" not in err and "Traceback" not in err, err
