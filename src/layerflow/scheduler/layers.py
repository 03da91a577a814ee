"""Layers: the layer events, the barrier of ``layered`` runs, and checkpoints.

The barrier itself is ``policy.LayerBarrier``, the one ``Plan.simulate`` replays."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import (
    safe_str,
)
from ..events import (
    LayerEvent,
)
from ..faults import guarded
from ..limits import LayerReport
from ..policy import LayerBarrier
from .state import (
    _READY,
    _REUSED,
    _STATUS_NAMES,
    _SUCCEEDED,
)

if TYPE_CHECKING:  # State, with what every part declares (parts.py)
    from .state import State
else:  # for the type checker only
    State = object


class Layers(State):
    """Layers: the layer events, the barrier of ``layered`` runs, and checkpoints."""

    def _init_layers(self, mode: str, checkpoint: Callable[[LayerReport], Any] | None) -> None:
        """``layered``, ``barrier`` (the open layer, the tasks left per layer, the ready
        entries held back), ``layer_seen`` (its layer_started was emitted), ``layer_names``,
        ``checkpoint``."""
        g = self.graph
        # a checkpoint answers after each layer before the next may start: a barrier
        self.checkpoint = checkpoint
        self.layered = mode == "layered" or checkpoint is not None
        self.barrier = LayerBarrier(g.layer, g.n_layers, holding=self.layered)
        self.layer_seen = bytearray(g.n_layers)
        self.layer_names: list[tuple[str, ...]] | None = None
        self.checkpoint_asked = -1  # the last layer whose checkpoint was asked

    def _layer_started(self, li: int) -> None:
        """Emit ``layer_started`` once per layer: at its first start, or at its end when
        every task of it was skipped or cancelled."""
        if not self.layer_seen[li]:
            self.layer_seen[li] = 1
            self.emit(LayerEvent("layer_started", None, time.time(), self.run_id, layer=li))  # type: ignore[misc]

    def _layer_done(self, li: int) -> None:
        if self.emit:
            self._layer_started(li)
            if self.layer_names is None:
                g = self.graph
                self.layer_names = [tuple(g.names[i] for i in lay) for lay in g.layers()]
            names = self.layer_names[li]
            self.emit(
                LayerEvent("layer_finished", None, time.time(), self.run_id, layer=li, tasks=names)
            )
        if self.layered and li == self.barrier.current:
            if self.checkpoint is not None and not self.barrier.last and not self.stopping:
                self._ask_checkpoint(li)
            else:
                self._open_next_layer()

    def _ask_checkpoint(self, li: int) -> None:
        """Call the checkpoint for layer ``li`` in its own thread (it may prompt a person);
        the next layer opens only when it has answered."""
        self.checkpoint_asked = li
        names = self.graph.names
        layer = self.graph.layers()[li]
        report = LayerReport(
            li,
            tuple(names[i] for i in layer),
            {names[i]: _STATUS_NAMES[self.status[i]] for i in layer},
            {
                names[i]: self.values[i]
                for i in layer
                if self.status[i] >= _REUSED or self.status[i] == _SUCCEEDED
            },
        )

        def ask() -> None:
            try:
                answer = self.checkpoint(report)  # type: ignore[misc]
                error = None
            except BaseException as e:  # the checkpoint's own bug stops the run, reported
                answer, error = False, e
            with self.lock:
                if self.stopping:
                    return
                if error is not None:
                    self.outcome = "failed"
                    self.cause_error = error
                    self._stop(f"the checkpoint after layer {li} raised {safe_str(error)}")
                elif answer is False:
                    self.outcome = "stopped"
                    self.stop_reason = f"the checkpoint after layer {li} said stop"
                    self._stop(self.stop_reason)
                else:
                    self._open_next_layer()
                    self._kick()

        threading.Thread(
            target=guarded("checkpoint", ask, self._fault), name="layerflow-checkpoint", daemon=True
        ).start()

    def _open_next_layer(self) -> None:
        """Let the next layer (the first with tasks left) start. A layer that ended
        before its turn (a map over an empty list ends as soon as it is expanded) still
        gets its checkpoint before the layer after it opens."""
        barrier = self.barrier
        while not barrier.last:
            for j in barrier.open_next():
                if self.status[j] == _READY:  # not cancelled meanwhile
                    self._make_ready(j)
            current = barrier.current
            if barrier.left[current]:
                break
            if self.checkpoint is not None and not barrier.last and not self.stopping:
                if self.checkpoint_asked < current:  # (not by its own end, above)
                    self._ask_checkpoint(current)
                break
