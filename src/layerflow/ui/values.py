"""A stored value's preview for the page, read without running anyone's code.

Unpickling can import modules and call what they define; a page request must do neither.
Values are read with an unpickler that knows only plain data (numbers, text, containers,
dates, decimals, paths, NumPy arrays): anything else is named, not loaded, and the page
says how to print it (``layerflow show RUN_ID --output NAME``, the user's own choice).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from ..names import element_of
from ..preview import preview
from ..store import Store

__all__ = ["NotShown", "shown_value", "stored_value"]

_BUILTINS = frozenset(
    [
        "set",
        "frozenset",
        "dict",
        "list",
        "tuple",
        "bytearray",
        "bytes",
        "complex",
        "range",
        "slice",
        "int",
        "float",
        "str",
        "bool",
    ]
)
_ALLOWED = {
    "collections": frozenset({"OrderedDict", "defaultdict", "deque", "Counter"}),
    "datetime": frozenset({"date", "datetime", "time", "timedelta", "timezone"}),
    "decimal": frozenset({"Decimal"}),
    "fractions": frozenset({"Fraction"}),
    "uuid": frozenset({"UUID"}),
    "pathlib": frozenset({"Path", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"}),
    "copyreg": frozenset({"_reconstructor"}),
    "numpy": frozenset({"ndarray", "dtype"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy.core.numeric": frozenset({"_frombuffer"}),
    "numpy._core.numeric": frozenset({"_frombuffer"}),
}


class NotShown(Exception):
    """A value the page does not load: what it is, and how to see it."""


class _PlainData(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module == "builtins" and name in _BUILTINS) or name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise NotShown(f"a {module}.{name}")


def _load(data: bytes) -> Any:
    return _PlainData(io.BytesIO(data)).load()


def stored_value(store: Store, run_id: str, name: str) -> bytes:
    """The stored value of task ``name`` in ``run_id``, pickled (the store read: the page
    server holds its lock for this only), or :class:`NotShown` when there is none."""
    found = store.finished_results(run_id).get(name)
    if found is not None:
        return store.load_bytes(found[1])
    element = element_of(name)
    if element is not None:
        known = store.finished_elements(run_id).get(element[0], {}).get(element[1])
        if known is not None:
            _, value, file = known
            return value if value is not None else store.load_bytes(file)
    raise NotShown("no stored value (it did not finish, or the run kept none)")


def shown_value(data: bytes, run_id: str, name: str) -> str:
    """A value read by :func:`stored_value` as text for people (its size bounds only the
    time to load it: the preview is cut before it is formatted), or :class:`NotShown`
    saying why not."""
    try:
        value = _load(data)
    except NotShown as e:
        raise NotShown(
            f"{e}: not shown here, the page does not run your code to read it; "
            f"layerflow show {run_id} --output {name!r} prints it"
        ) from None
    except Exception as e:
        raise NotShown(f"the stored value cannot be read ({type(e).__name__}: {e})") from None
    return preview(value, lines=40, chars=4000)
