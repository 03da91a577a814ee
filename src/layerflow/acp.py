"""ai-content-pipeline's own pipeline format, read as that project reads it.

ai-content-pipeline (PyPI ``video-ai-studio``; its ``pipeline/`` package: ``chain.py``,
``executor.py``, ``parallel_extension.py``, and ``run-chain`` in ``__main__.py``) runs a list
of typed steps one after another and hands each enabled step the previous step's output. This
module holds that project's rules; the loader (``pipeline.py``) applies them to a file that is
in that format (:func:`reason`) and builds an ordinary flow from them:

- The pipeline's input is chosen by the *first* step's input kind (``input_type:``, else the
  kind of ``steps[0]``, disabled or not): ``prompt`` for text (and for a ``parallel_group`` or a
  step type that project does not know), ``input_image`` for an image, ``input_video`` for a
  video (:func:`input_key`). Where that project would stop for want of a ``prompt``, layerflow
  takes the key the group's first member asks for (or the ``input_image``/``input_video`` the
  file has) instead.
- Each enabled step receives what the previous one passes on: its ``output_path``, else
  ``output_url``, else ``output_text`` when its value is such a mapping, else the value itself
  (:func:`passed_on`). A ``prompt_generation`` step passes its own input on (the image), and its
  prompt reaches every later step that asks for ``generated_prompt`` (:func:`generated_prompt`).
- A ``parallel_group`` gives every member the group's input; its ``merge_strategy`` decides what
  it passes on (:func:`merge`): ``collect_all`` the list of the members' outputs in their order,
  ``first_success`` and ``best_quality`` (which that project runs as ``first_success``) the
  first member's output.
- An unnamed step is ``step_N_TYPE`` (N counts the enabled top-level steps from 1), as that
  project names its outputs; an unnamed member of group N is ``step_N_K_TYPE``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "CONFIG_KEYS",
    "FORMAT",
    "GROUP_PARAMS",
    "INPUT_KEYS",
    "MERGE_STRATEGIES",
    "TOP_KEYS",
    "generated_prompt",
    "input_key",
    "merge",
    "member_name",
    "passed_on",
    "reason",
    "step_name",
]

FORMAT = "ai-content-pipeline"

#: the top-level keys only that project's files have (``prompt`` is shared with layerflow's)
ONLY_KEYS = (
    "input_image",
    "input_video",
    "input_type",
    "output_dir",
    "temp_dir",
    "cleanup_temp",
    "save_intermediates",
)
TOP_KEYS = ("name", "description", "prompt", *ONLY_KEYS, "steps")
#: run settings a step type receives when its signature names them
CONFIG_KEYS = ("output_dir", "temp_dir", "cleanup_temp", "save_intermediates")
#: where the pipeline's input comes from, by the first step's input kind
INPUT_KEYS = {"text": "prompt", "image": "input_image", "video": "input_video", "any": "prompt"}
INPUT_TYPES = ("auto", "text", "image", "video")
GROUP_PARAMS = ("max_workers", "merge_strategy", "parallel_steps")
MERGE_STRATEGIES = ("collect_all", "first_success", "best_quality")
DEFAULT_GROUP_WORKERS = 3  # parallel_extension.py: params.get('max_workers', 3)

# chain.py, ContentCreationChain._get_step_input_type
_INPUT_KINDS = {
    "text_to_image": "text",
    "text_to_video": "text",
    "image_understanding": "image",
    "prompt_generation": "image",
    "image_to_image": "image",
    "image_to_video": "image",
    "text_to_speech": "text",
    "add_audio": "video",
    "upscale_video": "video",
    "generate_subtitles": "video",
    "parallel_group": "any",
}

# what marks a file as layerflow's own, for a file whose only project key is ``prompt``
_LAYERFLOW_TOP = ("inputs", "settings", "plugins", "version")
_LAYERFLOW_STEP = ("input_from", "needs", "run", "uses", "foreach", "when")


def _steps(data: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """Every step mapping of the file, a group's members (either form) included."""
    stack = list(data.get("steps") or []) if isinstance(data.get("steps"), list) else []
    while stack:
        s = stack.pop()
        if not isinstance(s, dict):
            continue
        yield s
        params = s.get("params")
        for inner in (
            s.get("steps"),
            params.get("parallel_steps") if isinstance(params, dict) else 0,
        ):
            if isinstance(inner, list):
                stack.extend(inner)


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    return False


def reason(data: Mapping[str, Any]) -> str | None:
    """Why ``data`` (a whole file, not declaring ``format:``) is in ai-content-pipeline's
    format, for people ("it has input_image:"), or None: it is layerflow's.

    It is when it has a key only that project's files have (``input_image``, ``output_dir``,
    ...; or a ``parallel_group`` with ``params:`` or ``model:``) and no ``inputs:``; or when
    its input is a top-level ``prompt`` and nothing in it is layerflow's own (``inputs``,
    ``settings``, ``plugins``, ``version``; a step's ``input_from``, ``needs``, ``run``,
    ``uses``, ``foreach`` or ``when``; a ``{{template}}``). No file that layerflow's format
    accepted before has the first kind of key, and a file of the second kind has no data flow
    of its own for the project's to change."""
    if "inputs" in data:
        return None
    own = [k for k in ONLY_KEYS if k in data]
    if own:
        return f"it has {own[0]}:"
    for s in _steps(data):
        if s.get("type") == "parallel_group" and ("params" in s or "model" in s):
            return "a parallel_group has " + ("params:" if "params" in s else "model:")
    if "prompt" not in data or any(k in data for k in _LAYERFLOW_TOP):
        return None
    for s in _steps(data):
        if any(k in s for k in _LAYERFLOW_STEP) or _templated(s):
            return None
    return "its input is a top-level prompt: and nothing in it is layerflow's own"


def input_key(data: Mapping[str, Any]) -> str:
    """The top-level key the pipeline's input comes from, by the first step's input kind
    (``input_type:``, else the kind of ``steps[0]``, disabled or not), as ``run-chain`` in
    that project's ``__main__.py`` chooses it. Where that project would stop for want of a
    ``prompt`` (a group first, or a step type it does not know), the key that the group's
    first member asks for, else the ``input_image`` or ``input_video`` the file has."""
    steps = data.get("steps")
    first = steps[0] if isinstance(steps, list) and steps and isinstance(steps[0], dict) else {}
    kind = data.get("input_type", "auto")
    if kind not in INPUT_TYPES or kind == "auto":
        kind = _kind(first)
    if kind != "any" or data.get("prompt"):
        return INPUT_KEYS[kind]
    params = first.get("params")
    members = first.get("steps")
    if members is None and isinstance(params, dict):
        members = params.get("parallel_steps")
    if isinstance(members, list) and members and isinstance(members[0], dict):
        key = INPUT_KEYS[_kind(members[0])]
        if data.get(key):
            return key
    return next((k for k in ("input_image", "input_video") if data.get(k)), "prompt")


def _kind(step: Mapping[str, Any]) -> str:
    kind = step.get("type")
    return _INPUT_KINDS.get(kind, "any") if isinstance(kind, str) else "any"


def step_name(n: int, step_type: Any) -> str:
    """``step_N_TYPE``: that project's name for the N-th enabled step (from 1)."""
    return f"step_{n}_{step_type}"


def member_name(group: int, k: int, step_type: Any) -> str:
    """``step_N_K_TYPE``: the K-th member (from 1) of the N-th top-level step, a group."""
    return f"step_{group}_{k}_{step_type}"


def passed_on(value: Any) -> Any:
    """What a step hands the next one: a result mapping's ``output_path``, else its
    ``output_url``, else its ``output_text`` (executor.py, ``_get_next_step_input``); any
    other value as it is."""
    if isinstance(value, Mapping) and any(
        k in value for k in ("output_path", "output_url", "output_text")
    ):
        return value.get("output_path") or value.get("output_url") or value.get("output_text")
    return value


def generated_prompt(value: Any) -> Any:
    """The prompt a ``prompt_generation`` step made: a result mapping's
    ``extracted_prompt``, else its ``output_text`` (executor.py, ``_update_step_context``); any
    other value as it is."""
    if isinstance(value, Mapping) and ("extracted_prompt" in value or "output_text" in value):
        return value.get("extracted_prompt") or value.get("output_text")
    return value


def merge(strategy: str, outputs: list[Any]) -> Any:
    """What a ``parallel_group`` passes on, from its members' outputs in their order:
    ``collect_all`` the list, ``first_success``/``best_quality`` the first (a member that
    failed has failed the run before this is reached)."""
    if strategy == "collect_all":
        return list(outputs)
    return outputs[0] if outputs else None
