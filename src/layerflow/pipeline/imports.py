"""Importing a pipeline's own modules: its ``plugins:`` and the modules its ``uses:`` name.

They are imported from the pipeline's folder, which is on ``sys.path`` only while the
pipeline is loaded or run (:func:`on_import_path`); a plugin that is a module of the folder
the command runs in is found there too, as ``python -m`` would find it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

from .model import Context
from .problems import short
from .reading import Path_

__all__ = ["import_module", "import_plugin", "on_import_path"]

_PATH_USERS: dict[str, int] = {}  # folder on sys.path for a pipeline -> how many hold it
_PATH_LOCK = threading.Lock()


@contextlib.contextmanager
def on_import_path(folders: Iterable[str]) -> Iterator[None]:
    """The pipeline's own folders on ``sys.path`` while it is loaded or run (its plugins and
    ``uses:`` modules are imported from there, by this process and by worker processes
    started meanwhile), and off it again afterwards; one the caller had put there stays."""
    added = []
    with _PATH_LOCK:
        for folder in folders:
            if _PATH_USERS.get(folder):
                _PATH_USERS[folder] += 1
                added.append(folder)
            elif folder not in sys.path:
                sys.path.insert(0, folder)
                _PATH_USERS[folder] = 1
                added.append(folder)
    try:
        yield
    finally:
        with _PATH_LOCK:
            for folder in added:
                _PATH_USERS[folder] -= 1
                if not _PATH_USERS[folder]:
                    del _PATH_USERS[folder]
                    with contextlib.suppress(ValueError):
                        sys.path.remove(folder)


def import_module(ctx: Context, name: str) -> ModuleType:
    """Module ``name``, imported with the pipeline's folder on the path."""
    folder = str(ctx.path.parent.resolve())
    ctx.import_paths.add(folder)
    with on_import_path([folder]):
        return importlib.import_module(name)


def import_plugin(ctx: Context, module: object, at: Path_) -> None:
    """Import a plugin module (which registers step types), or report why it cannot be."""
    if not isinstance(module, str) or not module:
        ctx.problems.add(at, f"a plugin is a module name, got {short(module)}")
        return
    try:
        try:
            import_module(ctx, module)
        except ModuleNotFoundError as e:
            if not _in_cwd(module, e):
                raise
            # the folder the command runs in, as `python -m` would look (last on the path:
            # a file there named after a standard module shadows nothing)
            sys.path.append(os.getcwd())
            import_module(ctx, module)
    except Exception as e:
        ctx.problems.add(
            at, f"plugin module {module!r} could not be imported: {type(e).__name__}: {e}"
        )


def _in_cwd(module: str, error: ModuleNotFoundError) -> bool:
    """Is the plugin that was not found a module (or package) of the current folder?"""
    top = module.partition(".")[0]
    cwd = Path(os.getcwd())
    if error.name != top or str(cwd) in sys.path:
        return False
    return (cwd / f"{top}.py").is_file() or (cwd / top / "__init__.py").is_file()
