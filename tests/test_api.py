"""The public API: what `import layerflow` offers, typed and documented."""

from __future__ import annotations

import inspect

import pytest

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


def test_run_options_are_checked_once_and_all_problems_are_reported_together():
    flow = lf.Flow()
    flow.add(lambda: 1, name="a")
    with pytest.raises(lf.InvalidOptionError) as info:
        flow.run(max_workers=0, mode="fast", timeout=-1, backend="threads", fail_fast=1)
    text = str(info.value)
    assert text.startswith("5 problems")
    for part in (
        "max_workers must be a whole number >= 1 or None, got 0",
        "mode must be one of 'dynamic', 'layered', 'sequential', got 'fast'",
        "timeout must be a number of seconds > 0, got -1",
        "Did you mean 'thread'?",
        "fail_fast must be True or False, got 1",
    ):
        assert part in text
    # the same words from lf.dask.get and from a YAML file's settings
    from layerflow.options import RUN_OPTIONS, RunOptions

    assert "max_workers" in RUN_OPTIONS and "cache" in RUN_OPTIONS
    with pytest.raises(lf.InvalidOptionError, match="'max_worker' is not a run option"):
        RunOptions.of(max_worker=2)
    with pytest.raises(lf.InvalidOptionError, match="timeout must be a number of seconds > 0"):
        lf.dask.get({"x": 1}, "x", timeout=True)


def test_yaml_settings_are_checked_as_run_options_are(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "settings: {max_workers: 0, timeout: true}\nsteps:\n  - {name: a, run: 'true'}\n"
    )
    with pytest.raises(lf.PipelineError) as info:
        lf.load_pipeline(path)
    text = str(info.value)
    assert "p.yaml:1: settings.max_workers must be a whole number >= 1 or None, got 0" in text
    assert "settings.timeout must be a number of seconds > 0, got True" in text
