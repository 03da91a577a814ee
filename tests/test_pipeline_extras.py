"""Pipeline features the loader tests do not reach: entry-point step types."""

from __future__ import annotations

import importlib.metadata
import textwrap

import layerflow as lf
import layerflow.pipeline.steptypes as pipeline_module


def test_step_types_from_the_entry_point_group(tmp_path, monkeypatch):
    def shout(input: str = "", text: str = "") -> str:
        return (input or text).upper()

    class EntryPoint:
        name = "shout_from_entry_point"

        def load(self):
            return shout

    def entry_points(group=None):
        return [EntryPoint()] if group == "layerflow.step_types" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(pipeline_module, "_ENTRY_POINTS_LOADED", False)
    path = tmp_path / "ep.yaml"
    path.write_text(
        textwrap.dedent(
            """
            steps:
              - {name: loud, type: shout_from_entry_point, text: "hello"}
            """
        )
    )
    assert lf.load_pipeline(path).run()["loud"] == "HELLO"
