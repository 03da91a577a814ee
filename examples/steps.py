"""Simulated model calls for the example pipelines: a plugin that registers step types.

They sleep instead of calling a service, so the examples run offline and show how much
layerflow overlaps. A real plugin would call an image or LLM API here.
"""

from __future__ import annotations

import time

import layerflow as lf


@lf.step_type("text_to_image")
def text_to_image(prompt: str, model: str = "flux", seconds: float = 1.0) -> str:
    """Pretend to render an image for ``prompt``; return its file name."""
    time.sleep(seconds)
    return f"{model}-{abs(hash(prompt)) % 10_000:04d}.png"


@lf.step_type("image_to_image")
def image_to_image(input: str, prompt: str, model: str = "flux-edit", seconds: float = 1.5) -> str:
    """Pretend to edit the image ``input`` following ``prompt``."""
    time.sleep(seconds)
    return input.replace(".png", f"-{prompt.split()[-1]}.png")


@lf.step_type("image_to_video")
def image_to_video(input: str, model: str = "kling", duration: int = 5) -> str:
    """Pretend to animate the image ``input`` into a short video."""
    time.sleep(2.0)
    return input.replace(".png", f"-{duration}s.mp4")


@lf.step_type("upscale")
def upscale(input: str, factor: int = 2) -> str:
    """Pretend to upscale the image ``input``."""
    time.sleep(1.2)
    return input.replace(".png", f"-x{factor}.png")


@lf.step_type("analyze_image")
def analyze_image(input: str, question: str = "What is in this picture?") -> str:
    """Pretend to ask a vision model about the image ``input``."""
    time.sleep(0.8)
    return f"{input}: a landscape, answered for {question!r}"


def word_count(input: str) -> int:
    """For ``uses: "steps:word_count"``: count the words of the upstream value."""
    return len(str(input).split())


def process_chunk(chunk: int, size: int = 100) -> int:
    """For the batch example: pretend to process rows ``chunk*size .. (chunk+1)*size``."""
    time.sleep(0.5)
    return sum(range(chunk * size, (chunk + 1) * size))


def merge_configs(**configs: str) -> str:
    """For the config example: merge ``key=value`` lines, later files winning."""
    merged: dict[str, str] = {}
    for text in configs.values():
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip():
                merged[key.strip()] = value.strip()
    return "\n".join(f"{k}={v}" for k, v in sorted(merged.items()))
