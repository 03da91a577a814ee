"""Fake step types for ai-content-pipeline's own pipeline files (tests/data/ai_content_pipeline):
a plugin as the README documents them (``@lf.step_type`` in a module given with ``--plugin``
or ``plugins=``).

Each returns a result shaped as that project's step executors return theirs (``output_path``,
``output_url`` or ``output_text``; a ``prompt_generation`` step's ``extracted_prompt``), and
says what it received: ``received`` is its input, ``generated_prompt`` and ``output_dir``
what it was given of those. An output names the step type, the model and a digest of the
params, so that every step of a file makes a different one. Each call records its start and
end in ``EVENTS`` and sleeps ``ACP_FAKE_SECONDS`` (default 0.05 s) in between.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from typing import Any

import layerflow as lf

EVENTS: list[tuple[str, str, float]] = []  # ("start" | "end", token, perf_counter time)
_LOCK = threading.Lock()


def token(step_type: str, model: Any, params: dict[str, Any]) -> str:
    """What a step makes: its type, model and a digest of its params (but those the fakes
    take as arguments of their own)."""
    params = {k: v for k, v in params.items() if k not in ("input", "output_dir")}
    digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()
    return f"{step_type}.{model}.{digest[:8]}"


def _record(kind: str, name: str) -> None:
    with _LOCK:
        EVENTS.append((kind, name, time.perf_counter()))


def _fake(step_type: str, field: str, **extra: Any) -> Any:
    def step(
        input: Any = None,
        model: str = "",
        generated_prompt: str | None = None,
        output_dir: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        made = token(step_type, model, params)
        _record("start", made)
        try:
            time.sleep(float(os.environ.get("ACP_FAKE_SECONDS", "0.05")))
            out = {"success": True, "output_path": None, "output_url": None, "output_text": None}
            out[field] = f"{made}.out"
            out.update({k: f"{made}.{v}" for k, v in extra.items()})
            out.update(received=input, generated_prompt=generated_prompt, output_dir=output_dir)
            return out
        finally:
            _record("end", made)

    step.__name__ = step.__qualname__ = step_type
    return lf.step_type(step_type)(step)


# image and video steps hand on a file (text_to_image an URL, as fal's models do); analyses
# and prompt generation hand on text
text_to_image = _fake("text_to_image", "output_url")
image_to_image = _fake("image_to_image", "output_path")
image_to_video = _fake("image_to_video", "output_path")
text_to_video = _fake("text_to_video", "output_path")
text_to_speech = _fake("text_to_speech", "output_path")
add_audio = _fake("add_audio", "output_path")
upscale_video = _fake("upscale_video", "output_path")
generate_subtitles = _fake("generate_subtitles", "output_path")
image_understanding = _fake("image_understanding", "output_text")
prompt_generation = _fake("prompt_generation", "output_text", extracted_prompt="prompt")
