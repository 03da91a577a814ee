"""The local Dask cluster layerflow starts when a run names no scheduler: a Dask scheduler
in this process and one worker process per core, started as fresh interpreters (as the
process backend does), so the user's script is never re-imported and needs no main guard.
Its scheduler does not retry tasks whose worker died (``allowed-failures: 0``): layerflow's
own ``retries`` apply instead."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
from typing import Any

from ..errors import LayerflowError
from . import child_pythonpath

__all__ = ["LocalCluster", "connect", "warn_if_dask_retries"]


def connect(distributed: Any, address: str | None, client: Any) -> tuple[Any, LocalCluster | None]:
    """The client a run uses, and the local cluster started for it (None when the caller
    gave a ``client`` or an ``address``: theirs is left running)."""
    if client is not None:
        if not isinstance(client, distributed.Client):
            raise LayerflowError(
                f"client= must be a distributed.Client, got {type(client).__name__}"
            )
        return client, None
    if address is not None:
        try:
            return distributed.Client(address, timeout=30), None
        except (OSError, TimeoutError) as e:
            raise LayerflowError(
                f"cannot connect to the Dask scheduler at {address}: {e}. Is `dask "
                f"scheduler` running there, and is the address tcp://HOST:PORT?"
            ) from None
    n = os.cpu_count() or 1
    local = LocalCluster(n)
    try:
        started = distributed.Client(local.address, timeout=30)
        started.wait_for_workers(n, timeout=120)
    except Exception as e:
        log = local.failure()
        local.close()
        raise LayerflowError(
            f"could not start a local Dask cluster: {e}" + (f"\n{log}" if log else "")
        ) from None
    except BaseException:  # Ctrl-C while it starts: no cluster left behind
        local.close()
        raise
    return started, local


class LocalCluster:
    """A Dask scheduler in this process and ``n`` worker processes on 127.0.0.1."""

    def __init__(self, n: int) -> None:
        import dask
        import distributed

        settings = {
            "distributed.scheduler.allowed-failures": 0,  # layerflow's retries decide
            # with every worker gone, a task fails after a minute rather than waits forever
            "distributed.scheduler.no-workers-timeout": "60s",
        }
        with dask.config.set(settings):
            self.cluster = distributed.LocalCluster(
                n_workers=0,
                processes=True,
                host="127.0.0.1",
                scheduler_port=0,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (kept open for the cluster's life)
        env = dict(os.environ)
        # the workers import the user's modules by the same paths as this process
        env["PYTHONPATH"] = child_pythonpath()
        env.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                self.cluster.scheduler_address,
                "--nworkers",
                str(n),
                "--nthreads",
                "1",
                "--host",
                "127.0.0.1",
                "--no-dashboard",
                "--death-timeout",
                "30",  # a worker whose run was killed does not outlive it by long
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,  # Ctrl-C is this process's to handle
        )
        self.address = self.cluster.scheduler_address

    def failure(self) -> str:
        """The end of the workers' log, for an error message."""
        self.log.seek(0)
        tail = self.log.read().decode(errors="replace").strip().splitlines()[-5:]
        return "\n".join(tail)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, 9)
            self.process.wait()
        with contextlib.suppress(Exception):
            self.cluster.close(timeout=10)
        self.log.close()


#: schedulers already looked at (one warning per scheduler and process)
_CHECKED: dict[str, int] = {}


def warn_if_dask_retries(client: Any) -> int:
    """A cluster layerflow did not start may run a task again on another worker when its
    worker dies (Dask's ``allowed-failures``, 3 by default), behind layerflow's back: a
    task that kills its worker then kills several, and its values with them. Said once;
    returns the setting (0 when it cannot be read)."""
    address = str(getattr(client.scheduler, "address", "?"))
    if address in _CHECKED:
        return _CHECKED[address]
    _CHECKED[address] = 0
    try:  # (a lambda travels by value: the scheduler need not have layerflow installed)
        allowed = client.run_on_scheduler(
            lambda dask_scheduler: int(getattr(dask_scheduler, "allowed_failures", 0))
        )
    except Exception:  # cannot ask: nothing to say
        return 0
    if allowed:
        logging.getLogger("layerflow").warning(
            "the Dask scheduler at %s runs a task again on another worker when its worker "
            "dies (allowed-failures: %d), before layerflow hears of it: so that a task that "
            "kills its worker does not kill several, each task asks the scheduler before it "
            "begins (one round trip). Leave retries to layerflow and save that: start the "
            "scheduler with DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0 (layerflow's "
            "own local cluster does)",
            address,
            allowed,
        )
    _CHECKED[address] = int(allowed)
    return int(allowed)
