"""What the command line runs when it is not a YAML file: ``module:flow`` or
``path/to/file.py:flow``, a :class:`Flow` object in a Python module.

A module in the current folder wins over an installed or standard-library module of the
same name (with a warning, since a file called ``profile.py`` or ``test.py`` is easy to
write and the standard library's would otherwise be imported in silence); a name that is
not there says what the module does have.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from .errors import LayerflowError, did_you_mean, safe_str
from .flow import Flow

__all__ = ["TargetError", "load_flow"]


class TargetError(LayerflowError):
    """``module:flow`` names no importable module or no ``Flow`` in it."""


def load_flow(target: str, warn: Callable[[str], None] = lambda _: None) -> Flow:
    """The ``Flow`` that ``target`` (``module:flow`` or ``path/to/file.py:flow``) names."""
    module_part, sep, attr = target.rpartition(":")
    if not sep or not module_part or not attr:
        raise TargetError(
            f"{target}: no such file, and not of the form module:flow or path/to/file.py:flow"
        )
    if module_part.endswith(".py") or "/" in module_part or os.sep in module_part:
        path = Path(module_part)
        if not path.is_file():
            raise TargetError(f"{target}: there is no file {module_part}")
        module = _import_file(path, target)
    else:
        module = _import_name(module_part, target, warn)
    return _flow_in(module, module_part, attr, target)


def _import_file(path: Path, target: str) -> ModuleType:
    """Import ``path`` as the module named by its stem, with its folder on ``sys.path`` (its
    own imports, and worker processes unpickling its functions, find it there).

    A file whose stem names a standard or already-imported module (``queue.py``) must not
    replace that module: layerflow's own threads import it later and would get the user's
    file. Such a file is loaded under a name of its own, its folder goes last on
    ``sys.path``, and its functions travel to worker processes by value."""
    path = path.resolve()
    stem = path.stem
    if not stem.isidentifier():
        raise TargetError(f"{target}: {path.name} cannot be a module name (use letters and _)")
    shadows = _shadows(stem, path)
    name = f"_layerflow_file_{stem}" if shadows else stem
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder) if shadows else sys.path.insert(0, folder)
    loaded = sys.modules.get(name)
    if loaded is not None and _file_of(loaded) == path:
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"{target}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module  # functions pickle by reference to it
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's module failed: say so, no traceback of ours
        if previous is not None:
            sys.modules[name] = previous
        else:
            sys.modules.pop(name, None)
        raise TargetError(f"{target}: importing {path} failed: {safe_str(e)}") from None
    if shadows:  # a worker process could not import it by this name
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    return module


def _shadows(stem: str, path: Path) -> bool:
    """True when importing ``path`` as ``stem`` would hide a module Python already has."""
    if stem in sys.stdlib_module_names:
        return True
    loaded = sys.modules.get(stem)
    if loaded is not None:
        return _file_of(loaded) != path
    try:  # an installed module layerflow may import later (cloudpickle, dask, yaml...)
        spec = importlib.util.find_spec(stem)
    except (ImportError, ValueError):
        return False
    origin = getattr(spec, "origin", None)
    return origin not in (None, "built-in", "frozen") and Path(origin).resolve() != path


def _import_name(name: str, target: str, warn: Callable[[str], None]) -> ModuleType:
    cwd = Path.cwd()
    top = name.partition(".")[0]
    local = next((p for p in (cwd / f"{top}.py", cwd / top / "__init__.py") if p.is_file()), None)
    if local is not None:
        if top in sys.stdlib_module_names or _file_of(sys.modules.get(top)) not in (None, local):
            warn(
                f"{local.name if local.name != '__init__.py' else top} in this folder has the "
                f"name of the standard library's (or an installed) module {top!r}: using this "
                f"folder's. Rename it to avoid surprises elsewhere."
            )
        if name == top and local.name != "__init__.py":
            return _import_file(local, target)
    if str(cwd) not in sys.path:
        sys.path.insert(0, str(cwd))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name or name.startswith(f"{e.name}."):
            raise TargetError(
                f"{target}: there is no module {name!r} here ({cwd}) or installed. Run from "
                f"the folder that holds {top}.py, or give its path: path/to/{top}.py:"
                f"{target.rpartition(':')[2]}"
            ) from None
        raise TargetError(f"{target}: importing {name!r} failed: {safe_str(e)}") from None
    except Exception as e:
        raise TargetError(f"{target}: importing {name!r} failed: {safe_str(e)}") from None


def _file_of(module: ModuleType | None) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def _flow_in(module: ModuleType, module_part: str, attr: str, target: str) -> Flow:
    flows = sorted(n for n, v in vars(module).items() if isinstance(v, Flow))
    where = _file_of(module)
    shown = f"{module_part!r} ({where})" if where else repr(module_part)
    found = getattr(module, attr, None)
    if isinstance(found, Flow):
        return found
    if found is None:
        names = [n for n in vars(module) if not n.startswith("_")]
        tip = did_you_mean(attr, flows) or did_you_mean(attr, names)
        what = f"has no {attr!r}.{tip}"
    else:
        what = f"has {attr!r}, but it is a {type(found).__name__}, not a layerflow.Flow."
    top = module_part.partition(".")[0]
    if flows:
        have = f" Its Flow objects: {', '.join(flows)}."
    elif top in sys.stdlib_module_names and ("/" not in module_part):
        have = (
            f" That is the standard library's {top!r}: give your file's path instead, as in "
            f"path/to/{top}.py:{attr}"
        )
    else:
        have = " It has no layerflow.Flow objects: is this the module you meant?"
    raise TargetError(f"{target}: module {shown} {what}{have}")
