"""Running the command line as a user does: ``python -m layerflow ...`` in a folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def layerflow(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``layerflow ARGS`` run in ``cwd``; what it printed, and its exit code."""
    return subprocess.run(
        [sys.executable, "-m", "layerflow", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )
