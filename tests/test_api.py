"""The public API: what `import layerflow` offers, typed and documented."""

from __future__ import annotations

import inspect

import layerflow as lf


def test_all_names_are_exported_and_documented():
    for name in lf.__all__:
        obj = getattr(lf, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__ and obj.__doc__.strip(), f"{name} has no docstring"


def test_public_methods_are_documented():
    for cls in (lf.Flow, lf.Plan, lf.RunResult):
        for name, member in vars(cls).items():
            if name.startswith("_"):
                continue
            target = member.fget if isinstance(member, property) else member
            if callable(target):
                assert target.__doc__, f"{cls.__name__}.{name} has no docstring"


def test_errors_share_one_base():
    for name in (
        "CycleError",
        "DuplicateTaskError",
        "InvalidOptionError",
        "MissingDependencyError",
        "MissingInputError",
        "TaskFailed",
        "TaskTimeout",
        "NoValueError",
    ):
        assert issubclass(getattr(lf, name), lf.LayerflowError)
    assert issubclass(lf.CycleError, ValueError)
    assert issubclass(lf.RunInterrupted, KeyboardInterrupt)
