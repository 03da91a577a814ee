"""A seeded mutator over the example pipelines: every mutated file either loads or raises a
``PipelineError`` whose every problem names the file and a line, within a time bound.

``make test`` runs ``LAYERFLOW_FUZZ_CASES`` cases (500 by default); ``make fuzz`` runs many
more. A failure prints the seed and the case number, and keeps the file under ``tmp_path``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import yaml

import layerflow as lf

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CASES = int(os.environ.get("LAYERFLOW_FUZZ_CASES", "500"))
SEED = int(os.environ.get("LAYERFLOW_FUZZ_SEED", "20261202"))
BOUND = 5.0  # seconds per case; a case takes milliseconds

# values a mutation puts where something else was
ODD_VALUES: list[Any] = [
    None, 0, -1, 1.5, 10**30, float("inf"), float("nan"), True, "", " ", "x" * 300,
    [], {}, [1, 2], {"a": 1}, [[[]]], {"x": {"y": {"z": []}}}, "{{steps.nope.output}}",
    "{{inputs.nope}}", "{{ input }}", "{{weird}}", "'", "a:b", "module:", ":fn",
    "parallel_group", "sh -c 'echo {{input}}'", "\t", "é", "\u202e", "1e400",
    "{{item}}", "{{index}}", "{{steps.chunk.output}}", "{{inputs.chunks}}", ["{{item}}"],
]  # fmt: skip
KEYS = [
    "name", "run", "uses", "type", "steps", "params", "input_from", "needs", "retries",
    "timeout", "retry_delay", "priority", "resources", "rate_limit", "cache", "shell", "env",
    "cwd", "enabled", "settings", "inputs", "plugins", "max_workers", "fail_fast", "budget",
    "rate_limits", "order", "mode", "parallel", "<<", "description", "foreach", "when",
]  # fmt: skip
CHARS = list(":-[]{}&*!|>#'\"\t\n ,?%@`\\") + ["{{", "}}", "\x00", "\ufeff", "&a ", "*a", "!!int "]


def _paths(doc: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*at, k))
    elif isinstance(doc, list):
        for k, v in enumerate(doc):
            out += _paths(v, (*at, k))
    return out


def _mutate_data(doc: Any, rng: random.Random) -> Any:
    for _ in range(rng.randint(1, 3)):
        paths = _paths(doc)
        at = rng.choice(paths)
        if not at:
            doc = rng.choice([doc, rng.choice(ODD_VALUES), [doc]])
            continue
        parent = doc
        for key in at[:-1]:
            parent = parent[key]
        last = at[-1]
        move = rng.randrange(5)
        if move == 0:
            parent[last] = rng.choice(ODD_VALUES)
        elif move == 1:
            del parent[last]
        elif move == 2 and isinstance(parent, dict):
            parent[rng.choice(KEYS)] = rng.choice([*ODD_VALUES, parent[last]])
        elif move == 3 and isinstance(parent, list):
            parent.insert(rng.randrange(len(parent) + 1), parent[last])  # a duplicate
        else:
            parent[last] = [parent[last]] if rng.random() < 0.5 else {"x": parent[last]}
    return doc


def _mutate_text(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 4)):
        lines = text.split("\n")
        move = rng.randrange(5)
        k = rng.randrange(len(text) + 1)
        if move == 0:
            text = text[:k] + rng.choice(CHARS) + text[k:]
        elif move == 1:
            text = text[:k] + text[k + rng.randint(1, 5) :]
        elif move == 2 and len(lines) > 1:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif move == 3:
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            text = "\n".join(lines)
        else:
            text = text[:k]
    return text


def _case(sources: list[tuple[str, str]], rng: random.Random) -> tuple[str, bytes]:
    name, text = rng.choice(sources)
    if rng.random() < 0.5:
        doc = yaml.safe_load(text)
        try:
            out = yaml.safe_dump(_mutate_data(doc, rng), allow_unicode=True, sort_keys=False)
        except yaml.YAMLError:
            out = text
    else:
        out = _mutate_text(text, rng)
    data = out.encode("utf-8", errors="surrogatepass")
    if rng.random() < 0.02:  # bytes that are not UTF-8
        k = rng.randrange(len(data) + 1)
        data = data[:k] + b"\xff\xfe" + data[k:]
    return name, data


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Hang


def test_mutated_pipelines_load_or_fail_with_file_and_line(tmp_path, monkeypatch):
    for item in EXAMPLES.iterdir():  # plugins and configs next to the files, as shipped
        target = tmp_path / item.name
        if item.is_dir():
            shutil.copytree(item, target)
        else:
            shutil.copy(item, target)
    sources = [(p.name, p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))]
    assert sources
    monkeypatch.chdir(tmp_path)
    rng = random.Random(SEED)
    path = tmp_path / "mutant.yaml"
    loaded = refused = 0
    bad: list[str] = []
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for case in range(CASES):
            source, data = _case(sources, rng)
            path.write_bytes(data)
            kept = tmp_path / f"case{case}.yaml"
            where = f"case {case} (seed {SEED}, from {source}, kept as {kept})"
            failure = None
            begin = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, BOUND)
            try:
                lf.load_pipeline(path)
                loaded += 1
            except lf.PipelineError as e:
                refused += 1
                for file, line, message in e.problems:
                    if file != str(path) or not (isinstance(line, int) and line >= 1):
                        failure = f"no file and line: {file}:{line}: {message}"
            except _Hang:
                failure = f"took more than {BOUND} s"
            except Exception as e:
                failure = f"{type(e).__name__}: {e}"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if failure is None and time.perf_counter() - begin > BOUND:
                failure = f"took {time.perf_counter() - begin:.1f} s"
            if failure is not None:
                shutil.copy(path, kept)
                bad.append(f"{where}: {failure}")
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert not bad, f"{len(bad)} of {CASES} cases failed:\n" + "\n".join(bad[:20])
    assert refused > CASES // 4 and loaded > 0  # the mutator does reach both outcomes
