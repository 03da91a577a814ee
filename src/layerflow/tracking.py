"""Token usage from LLM clients' responses, recorded for the task that received them.

``lf.usage_from(response, "llm-tokens")`` records the tokens of one response: an OpenAI one
(``usage.total_tokens``, or ``prompt_tokens + completion_tokens``; the Responses API's
``input_tokens + output_tokens``), an Anthropic one (``input_tokens + output_tokens`` plus
``cache_creation_input_tokens`` and ``cache_read_input_tokens``), litellm's (OpenAI's
shape), google-genai's (``usage_metadata.total_token_count``), or the same as a JSON dict.

``lf.track_usage(tokens="llm-tokens")`` does it for every response a task receives, with no
code in the task: it wraps the request method every ``openai`` and ``anthropic`` client
goes through (``SyncAPIClient.request`` and ``AsyncAPIClient.request`` of their
``_base_client``) and litellm's ``completion`` functions, as OpenTelemetry's
instrumentations wrap the SDKs. A library not imported yet is not imported here: it is
wrapped when something imports it (an import hook). A call outside a layerflow task is not
touched; one call inside another (litellm calling the openai client) is counted once; a
streamed response, which carries no usage until it is read, is not counted.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import inspect
import sys
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from .errors import InvalidOptionError
from .metrics import CURRENT_BOX, usage

__all__ = ["tokens_of", "track_usage", "usage_from"]


def _get(obj: Any, name: str) -> Any:
    """``obj.name`` or ``obj[name]``; None if neither."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _count(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _sum(obj: Any, names: tuple[str, ...]) -> float | None:
    """The sum of ``obj``'s counts of these names; None when it has none of them."""
    found = [c for c in (_count(_get(obj, n)) for n in names) if c is not None]
    return sum(found) if found else None


def tokens_of(response: Any) -> float | None:
    """The tokens an LLM response used, all kinds together; None when it says nothing of
    them (a stream, an error, something else)."""
    if response is None:
        return None
    used = _get(response, "usage")
    if used is not None:  # Anthropic: input, output and cache tokens; OpenAI without a total
        return _total_or_sum(
            used,
            "total_tokens",
            (
                "input_tokens",
                "output_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
                "prompt_tokens",
                "completion_tokens",
            ),
        )
    meta = _get(response, "usage_metadata")  # google-genai
    if meta is not None:
        return _total_or_sum(
            meta,
            "total_token_count",
            (
                "prompt_token_count",
                "candidates_token_count",
                "thoughts_token_count",
                "tool_use_prompt_token_count",
            ),
        )
    return None


def _total_or_sum(usage: Any, total: str, parts: tuple[str, ...]) -> float | None:
    """A usage record's total, or the sum of its parts when it gives none."""
    found = _count(_get(usage, total))
    return found if found is not None else _sum(usage, parts)


def usage_from(response: Any, limit: str) -> float | None:
    """Record the tokens ``response`` used under ``limit`` (a rate limit's or a budget's
    name), as ``lf.usage(limit, tokens)`` would: the running task's rate windows and
    budgets count them instead of its estimate. Returns the tokens; None (and nothing
    recorded) when the response says nothing of them."""
    if not isinstance(limit, str) or not limit:
        raise InvalidOptionError(f"lf.usage_from takes a limit's name second, got {limit!r}")
    total = tokens_of(response)
    if total is not None:
        usage(limit, total)
    return total


# --- track_usage: wrapping the clients ------------------------------------------------

#: what is wrapped, by module: (class name or None for the module, attribute names)
_TARGETS: dict[str, tuple[tuple[str | None, tuple[str, ...]], ...]] = {
    "openai._base_client": (("SyncAPIClient", ("request",)), ("AsyncAPIClient", ("request",))),
    "anthropic._base_client": (
        ("SyncAPIClient", ("request",)),
        ("AsyncAPIClient", ("request",)),
    ),
    "litellm": (
        (
            None,
            (
                "completion",
                "acompletion",
                "text_completion",
                "atext_completion",
                "embedding",
                "aembedding",
                "responses",
                "aresponses",
            ),
        ),
    ),
}

_NAME: str | None = None  # the name responses are recorded under; None: not recording
_LOCK = threading.RLock()
_ORIGINALS: list[tuple[Any, str, Any]] = []  # (owner, attribute, what it was), to restore
_HOOK: _ImportHook | None = None
# the innermost tracked call of a task: [recorded?]; an outer call records only if no
# inner one did (litellm's completion calls the openai client, whose answer it reshapes)
_CALL: ContextVar[list[bool] | None] = ContextVar("layerflow_tracked_call", default=None)


def track_usage(tokens: str | None = "tokens") -> None:
    """From now on, record the tokens of every response that a task receives from the
    ``openai``, ``anthropic`` and ``litellm`` clients under the name ``tokens`` (a rate
    limit's or a budget's: ``"llm-tokens"``), with no code in the task. Once per process;
    calling it again changes the name, ``track_usage(None)`` stops recording. Clients
    not imported yet are wrapped when they are imported; none is imported here."""
    global _NAME, _HOOK
    if tokens is not None and (not isinstance(tokens, str) or not tokens):
        raise InvalidOptionError(
            f"lf.track_usage(tokens=...) takes a limit's name or None, got {tokens!r}"
        )
    with _LOCK:
        _NAME = tokens
        if tokens is None:
            return
        for module in _TARGETS:
            if module in sys.modules:
                _wrap_module(module)
        if _HOOK is None:
            _HOOK = _ImportHook()
            sys.meta_path.insert(0, _HOOK)


def _untrack() -> None:
    """Undo :func:`track_usage` entirely (for tests): the originals back, no hook."""
    global _NAME, _HOOK
    with _LOCK:
        _NAME = None
        for owner, attribute, original in reversed(_ORIGINALS):
            setattr(owner, attribute, original)
        _ORIGINALS.clear()
        if _HOOK is not None and _HOOK in sys.meta_path:
            sys.meta_path.remove(_HOOK)
        _HOOK = None


def _wrap_module(name: str) -> None:
    module = sys.modules.get(name)
    if module is None:
        return
    with _LOCK:
        for owner_name, attributes in _TARGETS[name]:
            owner = module if owner_name is None else getattr(module, owner_name, None)
            if owner is None:
                continue
            for attribute in attributes:
                fn = (
                    owner.__dict__.get(attribute) if owner_name else getattr(owner, attribute, None)
                )
                if fn is None or getattr(fn, "__layerflow_tracked__", False):
                    continue
                setattr(owner, attribute, _tracked(fn))
                _ORIGINALS.append((owner, attribute, fn))


def _tracked(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, recording the tokens of what it returns when called in a task."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def tracked_async(*args: Any, **kwargs: Any) -> Any:
            if _NAME is None or CURRENT_BOX.get() is None:
                return await fn(*args, **kwargs)
            mine: list[bool] = [False]
            outer = _CALL.get()
            token = _CALL.set(mine)
            try:
                result = await fn(*args, **kwargs)
            finally:
                _CALL.reset(token)
            _note(result, mine, outer)
            return result

        tracked_async.__layerflow_tracked__ = True  # type: ignore[attr-defined]
        return tracked_async

    @functools.wraps(fn)
    def tracked(*args: Any, **kwargs: Any) -> Any:
        if _NAME is None or CURRENT_BOX.get() is None:
            return fn(*args, **kwargs)
        mine: list[bool] = [False]
        outer = _CALL.get()
        token = _CALL.set(mine)
        try:
            result = fn(*args, **kwargs)
        finally:
            _CALL.reset(token)
        _note(result, mine, outer)
        return result

    tracked.__layerflow_tracked__ = True  # type: ignore[attr-defined]
    return tracked


def _note(result: Any, mine: list[bool], outer: list[bool] | None) -> None:
    """A tracked call returned ``result``: record its tokens unless a call inside it did;
    either way, the call around it (if any) need not."""
    name = _NAME
    if not mine[0] and name is not None:
        try:
            total = tokens_of(result)
        except Exception:  # an answer of a shape we do not know: nothing to count
            total = None
        if total is not None:
            usage(name, total)
            mine[0] = True
    if outer is not None and mine[0]:
        outer[0] = True


class _ImportHook(importlib.abc.MetaPathFinder):
    """Wraps a tracked module's functions as soon as something imports it."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        spec.loader = _WrappingLoader(loader, fullname)
        return spec


class _WrappingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, name: str) -> None:
        self.loader = loader
        self.name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        if _NAME is not None:
            _wrap_module(self.name)

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, ...: the real loader's
        return getattr(self.loader, name)
