"""Dask's own scheduler tests, run against ``lf.dask.get`` and against stock Dask.

The test files are copied from the installed dask wheel into a temporary folder. In the
layerflow run, a conftest points every scheduler those tests name at ``lf.dask.get``
(``dask.threaded.get``, ``dask.multiprocessing.get``, ``dask.local.get_sync`` and the
``scheduler`` config). Both runs print their pass/fail counts; ``--files`` picks the files.

    python bench/dask_suite.py [--files tests/test_threaded.py,...] [-k EXPR]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT = (
    "tests/test_threaded.py",
    "tests/test_local.py",
    "tests/test_multiprocessing.py",
    "tests/test_delayed.py",
    "array/tests/test_array_core.py",
    "bag/tests/test_bag.py",
    "dataframe/tests/test_dataframe.py",
)

CONFTEST = """
import dask
import dask.local
import dask.multiprocessing
import dask.threaded
import pytest

import layerflow as lf

# every scheduler the tests name: layerflow's (the test modules import them after this)
dask.threaded.get = lf.dask.get
dask.multiprocessing.get = lf.dask.scheduler(backend="process")  # its own worker processes
dask.local.get_sync = lf.dask.get
dask.config.set(scheduler=lf.dask.get)
"""


def _run(folder: Path, files: list[str], extra: list[str]) -> tuple[dict[str, int], str]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rfE",
            "-p",
            "no:cacheprovider",
            "--continue-on-collection-errors",
            *files,
            *extra,
        ],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|error|errors|skipped)", tail)}
    return counts, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", default=",".join(DEFAULT))
    parser.add_argument("-k", default=None)
    parser.add_argument("--show-failures", action="store_true")
    args = parser.parse_args()
    import dask

    root = Path(dask.__file__).parent
    files = [f for f in args.files.split(",") if f]
    extra = ["-k", args.k] if args.k else []
    results = {}
    outputs = {}
    for mode in ("stock dask", "layerflow"):
        with tempfile.TemporaryDirectory(prefix="lf-dask-suite-") as tmp:
            folder = Path(tmp)
            copied = []
            for rel in files:
                src = root / rel
                if not src.exists():
                    print(f"skipping {rel}: not in this dask", file=sys.stderr)
                    continue
                dst = folder / rel.replace("/", "__")
                shutil.copy(src, dst)
                copied.append(dst.name)
            if mode == "layerflow":
                (folder / "conftest.py").write_text(CONFTEST)
            results[mode], outputs[mode] = _run(folder, copied, extra)
    print(f"Dask's scheduler tests ({', '.join(files)})")
    print(f"{'scheduler':<12}{'passed':>8}{'failed':>8}{'errors':>8}{'skipped':>9}")
    for mode, c in results.items():
        errors = c.get("error", 0) + c.get("errors", 0)
        print(
            f"{mode:<12}{c.get('passed', 0):>8}{c.get('failed', 0):>8}{errors:>8}"
            f"{c.get('skipped', 0):>9}"
        )
    failing = {mode: _failing(out) for mode, out in outputs.items()}
    only_ours = sorted(failing["layerflow"] - failing["stock dask"])
    print(f"failing on layerflow only: {len(only_ours)}")
    if args.show_failures:
        for test in only_ours:
            print(f"  {test}")


def _failing(output: str) -> set[str]:
    """The ids of the tests pytest's summary lists as FAILED or ERROR."""
    found = set()
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            found.add(line.split(" ", 2)[1])
    return found


if __name__ == "__main__":
    main()
