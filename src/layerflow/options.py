"""Run options, defined once: their names, defaults and what each must be.

``flow.run`` / ``run_async``, ``lf.dask.get`` and a YAML file's ``settings`` all check their
values here (:func:`problem`, :class:`RunOptions`), so that an option means the same and is
refused with the same words wherever it is given. ``number`` is the one check for "a number,
but not a bool" that every other module uses too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import InvalidOptionError, did_you_mean, raise_all

__all__ = ["RunOptions", "RUN_OPTIONS", "MODES", "number", "problem"]

#: how a run orders its tasks (see ``flow.run``)
MODES = ("dynamic", "layered", "sequential")


def number(
    value: Any,
    *,
    above: float | None = None,
    at_least: float | None = None,
    whole: bool = False,
    finite: bool = True,
) -> bool:
    """Is ``value`` a number (an int or a float, never a bool) in the given range?"""
    if isinstance(value, bool) or not isinstance(value, (int, float) if not whole else int):
        return False
    if isinstance(value, int) and value.bit_length() > 1000:
        return False  # beyond any float: comparing it with one, or converting it, overflows
    if finite and not math.isfinite(value):
        return False
    if above is not None and not value > above:
        return False
    return at_least is None or value >= at_least


def _backends() -> tuple[str, ...]:
    from .backends import BACKENDS

    return BACKENDS


def _progress_ok(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    from .progress import Progress

    return isinstance(value, Progress)


# option -> (is the value acceptable?, what it must be). None is accepted where the
# default is None; a check of a mapping's contents (pools, rates) is done by limits.py.
#: how a duration is asked for, in every error that names one (the run's, a task's, a
#: group's, a YAML step's): one wording
SECONDS = "a number of seconds > 0"
SECONDS_OR_0 = "a number of seconds >= 0"


def _none_or(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _anything(value: Any) -> bool:
    return True


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_workers": (
        _none_or(lambda v: number(v, whole=True, at_least=1)),
        "a whole number >= 1 or None",
    ),
    "mode": (lambda v: v in MODES, "one of " + ", ".join(repr(m) for m in MODES)),
    "fail_fast": (lambda v: isinstance(v, bool), "True or False"),
    "timeout": (_none_or(lambda v: number(v, above=0)), SECONDS),
    "backend": (lambda v: isinstance(v, str) and v in _backends(), ""),
    "address": (_none_or(lambda v: isinstance(v, str)), "an address such as tcp://host:8786"),
    "client": (_anything, ""),
    "on_event": (_none_or(callable), "a callable taking an event"),
    "progress": (_progress_ok, "True, False or an lf.Progress"),
    "seed": (_none_or(lambda v: number(v, whole=True)), "an int"),
    "resources": (
        _none_or(lambda v: isinstance(v, Mapping)),
        "a mapping of pool names to capacities",
    ),
    "rate_limits": (
        _none_or(lambda v: isinstance(v, Mapping)),
        "a mapping of limit names to rates like '80/min'",
    ),
    "checkpoint": (_none_or(callable), "a callable taking a LayerReport"),
    "budget": (
        _none_or(
            lambda v: (
                isinstance(v, Mapping)
                and all(isinstance(k, str) and number(x, above=0) for k, x in v.items())
            )
        ),
        "a mapping of recorded metric names to ceilings > 0, like {'cost': 5.0}",
    ),
    "store": (_anything, ""),
    "resume": (_none_or(lambda v: isinstance(v, (bool, str))), "True, a run id, or None"),
    "cache": (lambda v: isinstance(v, bool), "True or False"),
}


def problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for run option ``name`` (None: nothing)."""
    check, need = _CHECKS[name]
    if check(value):
        return None
    if name == "backend":
        found = _backends()
        if value == "sequential":  # a mode, which picks the pools itself
            return "backend='sequential' is a mode: pass mode='sequential' instead"
        return (
            f"backend must be one of {', '.join(found)}, got {value!r}."
            f"{did_you_mean(str(value), found)}"
        )
    return f"{name} must be {need}, got {value!r}"


@dataclass(frozen=True)
class RunOptions:
    """Every option of a run (``flow.run``'s keywords), checked when made: all problems are
    reported at once. ``RunOptions.of(**given)`` also refuses names that are not options."""

    max_workers: int | None = None
    mode: str = "dynamic"
    fail_fast: bool = True
    timeout: float | None = None
    backend: str = "thread"
    address: str | None = None
    client: Any = None
    on_event: Callable[[Any], Any] | None = None
    progress: Any = False
    seed: int | None = None
    resources: Mapping[str, float] | None = None
    rate_limits: Mapping[str, Any] | None = None
    checkpoint: Callable[[Any], Any] | None = None
    budget: Mapping[str, float] | None = None
    store: Any = None
    resume: bool | str | None = None
    cache: bool = False

    def __post_init__(self) -> None:
        problems = [
            InvalidOptionError(text)
            for f in fields(self)
            if (text := problem(f.name, getattr(self, f.name))) is not None
        ]
        raise_all(problems, None)

    @classmethod
    def of(cls, **given: Any) -> RunOptions:
        """Options from keywords; an unknown name is an error naming the closest option."""
        unknown = [k for k in given if k not in RUN_OPTIONS]
        if unknown:
            raise_all(
                [
                    InvalidOptionError(
                        f"{k!r} is not a run option.{did_you_mean(k, RUN_OPTIONS)} "
                        f"The options are: {', '.join(RUN_OPTIONS)}"
                    )
                    for k in unknown
                ],
                None,
            )
        return cls(**given)

    def engine(self) -> dict[str, Any]:
        """The options the scheduler takes (the store's are the recorder's)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("store", "resume", "cache")
        }


#: every run option's name, in ``flow.run``'s order
RUN_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(RunOptions))
