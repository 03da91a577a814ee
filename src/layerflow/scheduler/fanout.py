"""``map``: one subtask per element of an upstream list, added at run time.

A mapped task is expanded once the lists it maps over are known: one entry per element,
``name[k]``, appended after the graph's tasks. Several lists (``map=["a", "b"]``) are
zipped; lists of different lengths fail the task with ``MapError``.

A task mapped over a mapped task streams: it is expanded as soon as that task's elements
exist (its other dependencies done), and its element ``k`` waits only for the upstream
element ``k`` (``elem_wait``), so ``b[k]`` starts when ``a[k]`` is done, with no barrier.
An upstream element that fails or is skipped ends the downstream element of its chain
(``_element_ended``); the other elements go on. ``streams`` maps a mapped task to the
mapped tasks that stream from it. Layered mode keeps its barrier: there nothing streams.

An element that raises ``lf.Skip`` is left out of its task's list (a filter), and the later
stages of its chain are skipped with it. With a store, each element is durable on its own
(``storage.py``), and a resumed run reuses the elements that finished (``reuse``).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import MapError, Skip
from ..graph import gc_paused
from ..policy import KEY_BASE
from .state import (
    _CACHED,
    _CANCELLED,
    _FAILED,
    _MAPPED,
    _PENDING,
    _READY,
    _REUSED,
    _SKIPPED,
    _SUCCEEDED,
)

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object

#: the statuses whose value a consumer receives
_DONE = (_SUCCEEDED, _REUSED, _CACHED)
#: a mapped source a consumer may stream from: running its elements, or failed by one
#: (its other chains go on: ``_streams_past``)
_STREAMING = (_MAPPED, _FAILED)


class FanOut(State):
    """``map``: one subtask per element of an upstream list, added at run time."""

    def _init_fanout(self) -> None:
        """``map_left`` and ``children`` per expanded task, ``elem_wait`` (an element's
        upstream elements not done yet), ``streams`` / ``stream_from`` (which mapped
        tasks stream from which), ``streamable`` (per graph task)."""
        g = self.graph
        self.map_left: dict[int, int] = {}
        self.children: dict[int, list[int]] = {}
        self.elem_wait: dict[int, int] = {}
        self.streams: dict[int, list[int]] = {}
        self.stream_from: dict[int, tuple[int, ...]] = {}
        self.streamable = bytearray(self.n)
        if self.layered:
            return
        for m, sources in g.map_source.items():
            chained = tuple(j for j in sources if j in g.map_args)
            if chained:
                self.stream_from[m] = chained
                self.streamable[m] = 1
                for j in chained:
                    self.streams.setdefault(j, []).append(m)

    def _try_stream(self, m: int) -> None:
        """Expand mapped task ``m`` before its mapped sources have finished, if everything
        else it needs is done and those sources' elements exist. Lock held."""
        if self.status[m] != _PENDING:
            return
        status, children = self.status, self.children
        # ``waiting`` counts the dependencies whose success has not been handled yet (a
        # resumed task is _REUSED before its value is in): all of them must be streaming
        streaming = sum(1 for j in self.stream_from[m] if status[j] in _STREAMING and j in children)
        if streaming and streaming == self.waiting[m]:
            self.status[m] = _READY
            self._expand(m)

    def _streams_past(self, j: int, s: int) -> bool:
        """Does mapped task ``s`` stream from mapped task ``j``, which failed element by
        element? A failed element ends only its own chain: ``s`` still runs the others
        once what else it needs is done, even if that is after ``j`` failed."""
        return (
            self.status[j] == _FAILED
            and j in self.children
            and s in self.streams.get(j, ())
            and not self.stopping
        )

    def _expand(self, m: int) -> None:
        """The lists mapped task ``m`` maps over are known: one subtask per element."""
        name = self.names[m]
        const = self.consts[m] or {}
        lists: list[tuple[str, list[int] | None, Sequence[Any] | None]] = []
        sizes: list[tuple[str, int]] = []
        for p, j in self.graph.map_args[m]:
            if j >= 0 and j in self.children:  # a mapped task's elements, one by one
                kids = self.children[j]
                lists.append((p, kids, None))
                sizes.append((self.names[j], len(kids)))
                continue
            items = self.values[j] if j >= 0 else const.get(p)
            if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
                what = f"{self.names[j]!r}, which returned" if j >= 0 else f"{p!r}, which is"
                kind = type(items).__name__
                self._map_error(m, f"task {name!r} maps over {what} {kind}, not a list")
                return
            lists.append((p, None, items))
            sizes.append((self.names[j] if j >= 0 else p, len(items)))
        lengths = {size for _, size in sizes}
        if len(lengths) > 1:
            shown = ", ".join(f"{w!r} has {size}" for w, size in sizes)
            self._map_error(m, f"task {name!r} zips lists of different lengths: {shown}")
            return
        k = sizes[0][1] if sizes else 0
        reuse = self.reuse
        if reuse is not None and m in self.reusable and k:
            known = self._known_items(m, lists, k)

            def then(found: Any, error: BaseException | None) -> None:
                if self.status[m] == _READY:  # not cancelled while the store was read
                    self._fan_out(m, lists, k, found if error is None else {})

            self._off_lock(lambda: reuse(m, known), then)
            return
        self._fan_out(m, lists, k, {})

    def _known_items(
        self, m: int, lists: list[tuple[str, list[int] | None, Sequence[Any] | None]], k: int
    ) -> list[tuple[int, tuple[Any, ...]]]:
        """(index, element values) of the elements of ``m`` whose values are known now."""
        out = []
        status, values = self.status, self.values
        for idx in range(k):
            item = []
            for _, kids, items in lists:
                if kids is None:
                    item.append(items[idx])  # type: ignore[index]
                elif status[kids[idx]] in _DONE:
                    item.append(values[kids[idx]])
                else:
                    break
            else:
                out.append((idx, tuple(item)))
        return out

    def _map_error(self, m: int, message: str) -> None:
        self.attempts[m] = 1
        self._fail(m, MapError(message))

    def _fan_out(
        self,
        m: int,
        lists: list[tuple[str, list[int] | None, Sequence[Any] | None]],
        k: int,
        reused: dict[int, Any],
    ) -> None:
        """One subtask per element, queued (or waiting for its upstream elements); the ones
        a resumed run reuses end at once. Mutates; lock held."""
        name = self.names[m]
        self.status[m] = _MAPPED
        if not k:
            self._map_nothing(m)
            return
        mapped = {p for p, _, _ in lists}
        given = [(p, items) for p, kids, items in lists if kids is None]
        chained = [(p, kids) for p, kids, _ in lists if kids is not None]
        upstream = list({id(kids): kids for _, kids in chained}.values())
        other_args = tuple((p, j) for p, j in self.args[m] if p not in mapped)
        base = self.consts[m] or {}
        index_param = self.spec[m].element_index
        plain = not base and not given and index_param is None
        prefix = (self.keys[m] // KEY_BASE) * KEY_BASE
        first = len(self.names)
        kids = list(range(first, first + k))
        self.children[m] = kids
        self.map_left[m] = k
        self.left += k
        spec, kind = self.spec[m], self.kind[m]
        fn = list.__getitem__(self.fns, m)  # its own call: tagged when handed out
        pos, layer = self.positional[m], self.layer[m]
        need, cost = self.need[m], self.cost[m]
        status = self.status
        ready_now: list[int] = []
        ended: list[tuple[int, int]] = []  # (element, the upstream element that ended it)
        with gc_paused():
            for idx in range(k):
                e = first + idx
                if plain:
                    const = None
                else:
                    const = dict(base)
                    for p, items in given:
                        const[p] = items[idx]  # type: ignore[index]
                    if index_param is not None:
                        const[index_param] = idx
                args = other_args
                wait = 0
                dead = -1
                if chained:
                    args = other_args + tuple((p, up[idx]) for p, up in chained)
                    for up in upstream:  # each upstream element once, however many params
                        st = status[up[idx]]
                        if st in _DONE:
                            continue
                        if st >= _SUCCEEDED:
                            dead = up[idx]
                        else:
                            wait += 1
                self.names.append(f"{name}[{idx}]")
                self.spec.append(spec)
                self.layer.append(layer)
                self.kind.append(kind)
                self.fns.append(fn)
                self.consts.append(const)
                self.args.append(args)
                self.positional.append(pos)
                self.need.append(need)
                self.cost.append(cost)
                self.pushbacks.append(0)
                self.keys.append(prefix + e)
                status.append(_PENDING)
                self.token.append(0)
                self.values.append(None)
                self.errors.append(None)
                self.attempts.append(0)
                self.first_start.append(0.0)
                self.last_end.append(0.0)
                self.busy.append(0.0)
                self.seq.append(0)
                self.handle.append(None)
                self.parent.append(m)
                if idx in reused:
                    ended.append((e, -2))
                elif dead >= 0:
                    ended.append((e, dead))
                elif wait:
                    self.elem_wait[e] = wait
                else:
                    ready_now.append(e)
        if self.tracing is not None:  # each element in spans of its own (telemetry.py)
            self._trace_elements(m, kids)
        for e in ready_now:
            status[e] = _READY
        ready = self.ready[kind]
        ready.extend(self.keys[e] for e in ready_now)
        heapq.heapify(ready)
        for e, ender in ended:  # after the set-up: ending the last one ends the map
            if ender != -2:
                if status[e] == _PENDING:
                    self._element_dead(e, ender)
                continue
            value = reused[e - first]
            if isinstance(value, Skip):  # it skipped itself then: it is skipped now
                status[e] = _SKIPPED
                self.errors[e] = value
                if self.emit:
                    self._task_event("task_skipped", e, reason=value.reason, error=value)
                self._finalize(e)
            else:
                self._succeed(e, value, _REUSED)
        for c in self.streams.get(m, ()):
            self._try_stream(c)

    def _element_ended(self, s: int, c: int) -> None:
        """Element ``c`` of mapped task ``s`` ended: the elements that stream from it may
        start, or end with it (it failed or was skipped)."""
        k = c - self.children[s][0]
        ok = self.status[c] in _DONE
        for m in self.streams[s]:
            kids = self.children.get(m)
            if kids is None or self.status[m] != _MAPPED:
                continue  # not expanded yet: it reads the statuses when it is
            e = kids[k]
            if self.status[e] != _PENDING:
                continue
            if not ok:
                self._element_dead(e, c)
                continue
            left = self.elem_wait[e] - 1
            if left:
                self.elem_wait[e] = left
            else:
                del self.elem_wait[e]
                self._make_ready(e)

    def _element_dead(self, e: int, up: int) -> None:
        """Element ``e`` will not run: upstream element ``up`` of its chain ended without a
        value. A skip (``lf.Skip``) passes along as one; a failure skips the chain; a
        cancelled upstream cancels it."""
        self.elem_wait.pop(e, None)
        error = self.errors[up]
        if self.stopping and not isinstance(error, Skip):
            self._cancel_waiting(e, f"the run stopped: {self.names[up]!r} did not succeed")
            return
        self.status[e] = _SKIPPED
        if isinstance(error, Skip):
            reason = f"upstream {self.names[up]!r} was skipped"
            self.errors[e] = Skip(reason)
        else:
            reason = f"upstream {self.names[up]!r} did not succeed"
        if self.emit:
            self._task_event("task_skipped", e, reason=reason, error=self.errors[e])
        self._finalize(e)

    def _map_done(self, m: int) -> None:
        """Every subtask of map task ``m`` ended: its value is their values, in order,
        without the ones that skipped themselves."""
        kids = self.children[m]
        status, errors = self.status, self.errors
        ran = [j for j in kids if self.attempts[j]]
        if ran:  # the map task's span is its elements'
            self.first_start[m] = min(self.first_start[j] for j in ran)
            self.last_end[m] = max(self.last_end[j] for j in ran)
        failed = cancelled = upstream = -1
        for j in kids:
            st = status[j]
            if st in _DONE:
                continue
            if st == _FAILED:
                failed = j
                break
            if st == _CANCELLED:
                cancelled = j
            elif st == _SKIPPED and not isinstance(errors[j], Skip):
                upstream = j
        if failed >= 0:
            self._map_failed(m, errors[failed])  # type: ignore[arg-type]
        elif cancelled >= 0:
            self.status[m] = _CANCELLED
            if self.emit:
                self._task_event(
                    "task_cancelled", m, reason=f"{self.names[cancelled]!r} was cancelled"
                )
            self._finalize(m)
            if not self.stopping:  # only its group stopped: what needs it will not run
                self._skip_downstream(m)
        elif upstream >= 0:  # an upstream element failed: this task's chain ends there
            self.status[m] = _SKIPPED
            if self.emit:
                self._task_event(
                    "task_skipped", m, reason=f"{self.names[upstream]!r} could not run"
                )
            self._finalize(m)
            self._skip_downstream(m)
        else:
            value = [self.values[j] for j in kids if status[j] in _DONE]
            # every element cached (or reused): so is the task, as a task run would be
            how = status[kids[0]]
            if how not in (_CACHED, _REUSED) or any(status[j] != how for j in kids):
                how = _SUCCEEDED
            if self.persist is None or len(value) < len(kids):
                # (a list with skipped elements is not stored whole: a resumed run reuses
                # its elements one by one, so that the skipped ones keep their places)
                self._succeed(m, value, how)
                return
            t0, t1 = self.first_start[m], self.last_end[m]

            def then(error: BaseException | None) -> None:
                if self.status[m] != _MAPPED:
                    return  # given up on meanwhile (its store writer failed)
                if error is None:
                    self._succeed(m, value, how)
                else:
                    self._map_failed(m, error)

            # its elements are stored one by one; the list too, so that a resumed run
            # loads it in one read instead of element by element
            self._store_result(m, value, t0, t1, then)

    def _map_nothing(self, m: int) -> None:
        """Map task ``m`` maps over an empty list: it succeeds with ``[]``, stored (resume
        reuses it) and looked up in the cache first (off the lock). Lock held."""
        now = self.first_start[m] = self.last_end[m] = time.perf_counter()
        if self.persist is None:
            self._succeed(m, [])
            return

        def stored(error: BaseException | None) -> None:
            if self.status[m] != _MAPPED:
                return  # given up on meanwhile (its store writer failed)
            if error is None:
                self._succeed(m, [])
            else:
                self._map_failed(m, error)

        if self.lookup is None:
            self._store_result(m, [], now, now, stored)
            return
        args, kwargs = self._call_args(m)

        def looked_up(found: Any, error: BaseException | None) -> None:
            if self.status[m] != _MAPPED:
                return
            if error is None and found[0]:
                self._succeed(m, [], _CACHED)
            else:
                self._store_result(m, [], now, now, stored)

        self._off_lock(lambda: self.lookup(m, args, kwargs), looked_up)  # type: ignore[misc]

    def _element_item(self, e: int) -> tuple[Any, ...]:
        """The values element ``e`` was given from the lists its task maps over."""
        m = self.parent[e]
        const = self.consts[e] or {}
        mapped = self.graph.map_args[m]
        if len(mapped) == 1 and mapped[0][0] in const:  # the common case, once per element
            return (const[mapped[0][0]],)
        entry = dict(self.args[e])
        values = self.values
        return tuple(const[p] if p in const else values[entry[p]] for p, _ in mapped)

    def _element_info(self, e: int) -> tuple[str, tuple[Any, ...], int]:
        """Element ``e``'s name, the values it was given, and its index in its task."""
        return self.names[e], self._element_item(e), e - self.children[self.parent[e]][0]

    def _map_failed(self, m: int, error: BaseException) -> None:
        """Map task ``m`` failed: a subtask failed, or its list could not be stored."""
        self.status[m] = _FAILED
        self.errors[m] = error
        if self.emit:
            self._task_event("task_failed", m, error=error, duration=0.0)
        if self.outcome != "interrupted":  # a Ctrl-C stays one (its list not stored after it)
            self.outcome = "failed"
        if self.cause < 0:
            self.cause, self.cause_error = m, error
        self._finalize(m)
        if not self._fails_fast(m) or self._in_stopped_group(m):
            self._skip_downstream(m)
        elif not self.fail_fast:  # its group's own fail-fast: the rest of the run goes on
            self._stop_group(self.spec[m].group, m)  # type: ignore[arg-type]
        elif not self.stopping:
            self._stop(f"{self.names[m]!r} failed")
