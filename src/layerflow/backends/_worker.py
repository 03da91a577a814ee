"""A worker process of the process backend: ``python _worker.py R W``.

R and W are the pipe file descriptors the parent passed down. This file runs as a plain
script and imports only cloudpickle, so a worker starts fast; it imports layerflow only to
build the error it sends back when a result cannot be pickled.
"""

import os
import sys
import time
from multiprocessing.connection import Connection


def serve(conn: Connection, reply: Connection) -> None:
    """Receive a pickled call, run it, send back the pickled outcome; until EOF."""
    import asyncio
    import inspect
    import traceback

    import cloudpickle

    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        t0 = time.perf_counter()
        c0 = time.process_time()  # the task's CPU time, for the run's CPU note
        try:
            fn, args, kwargs = cloudpickle.loads(payload)
            if inspect.iscoroutinefunction(fn):
                value = asyncio.run(fn(*args, **kwargs))
            else:
                value = fn(*args, **kwargs)
            ok = True
        except BaseException as e:  # the task's own error, sent back with its frames
            ok, value = False, e
            try:  # noqa: SIM105 (a traceback does not pickle; its frames do: see tracebacks.py)
                e._layerflow_frames = [
                    (f.filename, f.lineno, f.name, f.line)
                    for f in traceback.extract_tb(e.__traceback__)[1:]  # [0]: this loop
                ]
            except Exception:
                pass
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        box = None
        metrics = sys.modules.get("layerflow.metrics")  # loaded if the task used lf.record
        if metrics is not None and metrics.WORKER_BOX:
            box = dict(metrics.WORKER_BOX)
            metrics.WORKER_BOX.clear()
        try:
            out = cloudpickle.dumps((ok, value, seconds, box, cpu))
        except Exception as e:
            from layerflow.errors import RemoteError, UnpicklableError

            if ok:
                err: BaseException = UnpicklableError(
                    f"the task's result ({type(value).__name__}) cannot be sent back from the "
                    f"worker process: {e}"
                )
            else:
                err = RemoteError(
                    f"{type(value).__name__}: {value}\n"
                    + "".join(traceback.format_exception(value))
                )
            out = cloudpickle.dumps((False, err, seconds, box, cpu))
        reply.send_bytes(out)


if __name__ == "__main__":
    # this file's folder is not a place to import the user's modules from
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    serve(
        Connection(int(sys.argv[1]), writable=False),
        Connection(int(sys.argv[2]), readable=False),
    )
