"""A worker process of the process backend: ``python _worker.py R W``.

R and W are the pipe file descriptors the parent passed down; messages on them are framed
as ``multiprocessing.connection.Connection`` frames them (the parent's side is one), read
and written here with ``os`` alone. This file runs as a plain script and imports only what
every task needs (``pickle``, ``struct``), so a worker starts in about 20 ms rather than
60: ``asyncio`` comes only for a coroutine function, ``cloudpickle`` only for a result plain
``pickle`` cannot send (calls arrive pickled by cloudpickle, which plain ``pickle`` reads,
importing cloudpickle itself if the call holds a lambda or a closure), ``traceback`` only
for an error, and layerflow only to build the error sent back when a result cannot be
pickled at all.
"""

import os
import pickle
import struct
import sys
import time


def _read(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv(fd: int) -> bytes:
    """One message, as ``Connection.recv_bytes`` reads it."""
    (size,) = struct.unpack("!i", _read(fd, 4))
    if size == -1:  # longer than 2 GiB: the real size follows
        (size,) = struct.unpack("!Q", _read(fd, 8))
    return _read(fd, size)


def send(fd: int, data: bytes) -> None:
    """One message, as ``Connection.send_bytes`` writes it."""
    n = len(data)
    header = struct.pack("!i", n) if n <= 0x7FFFFFFF else struct.pack("!iQ", -1, n)
    view = memoryview(header + data if n <= 16384 else data)
    if n > 16384:
        os.write(fd, header)
    while view:
        view = view[os.write(fd, view) :]


def _dumps(obj: object) -> bytes:
    try:
        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    except Exception:  # a lambda, a local class...: cloudpickle sends those by value
        import cloudpickle

        return cloudpickle.dumps(obj)


def serve(conn: int, reply: int) -> None:
    """Receive a pickled call, run it, send back the pickled outcome; until EOF."""
    while True:
        try:
            payload = recv(conn)
        except (EOFError, OSError):
            return
        # first byte 1: the parent wants to hear when the call begins, to start a timeout's
        # clock (and count a rate window) from then: after this worker's start and imports
        notify = payload[0] == 1
        t0 = time.perf_counter()
        c0 = time.process_time()  # the task's CPU time, for the run's CPU note
        try:
            fn, args, kwargs, is_coroutine = pickle.loads(memoryview(payload)[1:])
            if notify:
                notify = False
                send(reply, b"")
            t0 = time.perf_counter()  # its duration is the call's, not the unpickling's
            c0 = time.process_time()
            if is_coroutine:
                import asyncio

                value = asyncio.run(fn(*args, **kwargs))
            else:
                value = fn(*args, **kwargs)
            ok = True
        except BaseException as e:  # the task's own error, sent back with its frames
            if notify:  # (it could not even be unpickled: the parent still waits for this)
                send(reply, b"")
            import traceback

            ok, value = False, e
            try:  # noqa: SIM105 (a traceback does not pickle; its frames do: see tracebacks.py)
                # tracebacks.FRAMES_ATTRIBUTE, which tracebacks.py reads on the other side
                e._layerflow_frames = [  # type: ignore[attr-defined]
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
            out = _dumps((ok, value, seconds, box, cpu))
        except Exception as e:
            import traceback

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
            out = _dumps((False, err, seconds, box, cpu))
        send(reply, out)


if __name__ == "__main__":
    # this file's folder is not a place to import the user's modules from
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    serve(int(sys.argv[1]), int(sys.argv[2]))
