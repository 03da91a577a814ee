"""A worker process of the process backend: ``python _worker.py R W``.

R and W are the pipe file descriptors the parent passed down; messages on them are framed
as ``multiprocessing.connection.Connection`` frames them (the parent's side is one), read
and written here with ``os`` alone. This file runs as a plain script and imports only what
every task needs (``pickle``, ``struct``), so a worker starts in about 20 ms rather than
60: ``asyncio`` comes only for a coroutine function, ``cloudpickle`` only for a result plain
``pickle`` cannot send (calls arrive pickled by cloudpickle, which plain ``pickle`` reads,
importing cloudpickle itself if the call holds a lambda or a closure), ``traceback`` only
for an error, and layerflow only to build the error sent back when a result cannot be
pickled at all. SIGUSR1 is the parent's notice that it kills this worker: the running
call's output is sent first (``_last_words``).
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


#: what is kept of one call's output (as ``layerflow.capture.LIMIT``; the parent bounds
#: the task's output over its attempts again)
_LIMIT = 1 << 20
#: small writes to one stream are joined into chunks of about this many characters (a
#: ``print`` is two writes: a chunk each would cost far more than its text), counting
#: ``_OVERHEAD`` each in the bound
_PIECE = 8192
_OVERHEAD = 64


class _Output:
    """What one call writes to ``sys.stdout``/``sys.stderr`` and logs: (stderr?, text)
    chunks, its last ``_LIMIT`` characters or so, and the bytes dropped before them. Small
    writes wait in ``held`` until they make a chunk."""

    def __init__(self) -> None:
        self.chunks: list[tuple[bool, str]] = []
        self.size = 0  # characters kept, and _OVERHEAD per chunk
        self.cut = 0
        self.held: list[str] = []
        self.held_len = 0
        self.held_err = False

    def add(self, err: bool, text: str) -> None:
        n = len(text)
        if err != self.held_err or n >= _PIECE:
            self._join()
            self.held_err = err
        if n < _PIECE:
            self.held.append(text)
            self.held_len += n
            if self.held_len >= _PIECE or len(self.held) >= 512:
                self._join()
            return
        if n > _LIMIT:  # only its end can be kept: the rest, and all before, cut now
            self.cut += sum(len(c.encode("utf-8", "replace")) for _, c in self.chunks)
            self.cut += len(text[:-_LIMIT].encode("utf-8", "replace"))
            self.chunks, self.size, text = [], 0, text[-_LIMIT:]
        self._keep(err, text)

    def _join(self) -> None:
        if self.held:
            text = "".join(self.held)
            self.held.clear()
            self.held_len = 0
            self._keep(self.held_err, text)

    def _keep(self, err: bool, text: str) -> None:
        self.chunks.append((err, text))
        self.size += len(text) + _OVERHEAD
        if self.size > 2 * _LIMIT:
            self._trim()

    def _trim(self) -> None:
        keep: list[tuple[bool, str]] = []
        size = 0
        for chunk in reversed(self.chunks):
            if size >= _LIMIT:
                self.cut += len(chunk[1].encode("utf-8", "replace"))
            else:
                keep.append(chunk)
                size += len(chunk[1]) + _OVERHEAD
        keep.reverse()
        self.chunks, self.size = keep, size

    def result(self) -> tuple[list[tuple[bool, str]], int] | None:
        self._join()
        if not self.chunks and not self.cut:
            return None
        if self.size > _LIMIT:
            self._trim()
        return self.chunks, self.cut


class _Stream:
    """``sys.stdout``/``sys.stderr`` during a call: text into its ``_Output``."""

    layerflow_capture = True  # (a run: step's command output is kept here, not printed)

    def __init__(self, out: _Output, err: bool, real: object) -> None:
        self._out, self._err, self._real = out, err, real

    def write(self, text: str) -> int:
        if type(text) is not str:
            return self._real.write(text)  # type: ignore[attr-defined]
        if text:
            self._out.add(self._err, text)
        return len(text)

    def writelines(self, lines: object) -> None:
        for line in lines:  # type: ignore[attr-defined]
            self.write(line)

    def flush(self) -> None:
        pass

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


_HANDLER: list[object] = []  # the logging handler, made once logging is loaded


def _handler(out: _Output) -> object:
    """A handler for the root logger that puts a call's records into ``out``."""
    if not _HANDLER:
        import logging

        formatter = logging.Formatter()

        class Records(logging.Handler):
            out: _Output | None = None

            def emit(self, record: logging.LogRecord) -> None:
                if self.out is None:
                    return
                text = f"{record.levelname} {record.name}: {record.getMessage()}\n"
                if record.exc_info and record.exc_info[1] is not None:
                    text += formatter.formatException(record.exc_info) + "\n"
                self.out.add(record.levelno >= logging.WARNING, text)

        _HANDLER.append(Records())
    handler = _HANDLER[0]
    handler.out = out  # type: ignore[attr-defined]
    return handler


_SAVED: list[object] = []  # the streams a call's capture replaced, while it goes


def _forked() -> None:
    """In a child process a task forks (a ``multiprocessing`` pool): it is not the call,
    whatever it inherited; it writes to the real streams."""
    _RUNNING.clear()
    _REPLY.clear()
    if _SAVED:
        sys.stdout, sys.stderr = _SAVED
        _SAVED.clear()
    if _HANDLER and "logging" in sys.modules:
        _HANDLER[0].out = None  # type: ignore[attr-defined]
        sys.modules["logging"].getLogger().removeHandler(_HANDLER[0])


def _capture() -> tuple[_Output, tuple[object, object], object]:
    """From now on, the call's output goes into an ``_Output``: (it, the streams it
    replaced, the logging handler added or None: added again once the call is unpickled,
    as that may load ``logging``)."""
    out = _Output()
    saved = (sys.stdout, sys.stderr)
    _SAVED[:] = saved
    sys.stdout = _Stream(out, False, saved[0])
    sys.stderr = _Stream(out, True, saved[1])
    return out, saved, _log_into(out)


def _log_into(out: _Output) -> object:
    """The root logger's records into ``out``, if ``logging`` is loaded (the task's module,
    unpickled, has loaded it if it logs): the handler added, else None."""
    logging = sys.modules.get("logging")
    if logging is None:
        return None
    handler = _handler(out)
    logging.getLogger().addHandler(handler)
    return handler


def _release(saved: tuple[object, object], handler: object) -> None:
    sys.stdout, sys.stderr = saved
    _SAVED.clear()
    if handler is not None:
        handler.out = None  # type: ignore[attr-defined]
        sys.modules["logging"].getLogger().removeHandler(handler)


#: the output of the call running now, from when it begins until its answer is made: what
#: ``_last_words`` sends when the parent kills this worker (a timeout, a stop)
_RUNNING: list[_Output] = []
_REPLY: list[int] = []


def _last_words(signum: int, frame: object) -> None:
    """SIGUSR1, the parent's notice before it kills this worker: send what the running call
    has written so far (marked by a first byte 1: an answer starts with pickle's 0x80),
    then end, with whatever the task started (this worker leads its process group)."""
    try:
        if _RUNNING and _REPLY:
            output = _RUNNING[0].result()
            if output is not None:
                send(_REPLY[0], b"\x01" + pickle.dumps(output, pickle.HIGHEST_PROTOCOL))
    finally:
        try:
            os.killpg(os.getpgid(0), 9)
        finally:
            os._exit(1)


def serve(conn: int, reply: int) -> None:
    """Receive a pickled call, run it, send back the pickled outcome; until EOF."""
    _REPLY.append(reply)
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
        out, saved, handler = _capture()  # what the call prints: sent back with its result
        try:
            fn, args, kwargs, is_coroutine = pickle.loads(memoryview(payload)[1:])
            if handler is None:
                handler = _log_into(out)
            if notify:
                notify = False
                send(reply, b"")
            _RUNNING.append(out)  # (after the notice: _last_words's message never cuts one)
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
        _RUNNING.clear()
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        _release(saved, handler)
        output = out.result()
        box = None
        metrics = sys.modules.get("layerflow.metrics")  # loaded if the task used lf.record
        if metrics is not None and metrics.WORKER_BOX:
            box = dict(metrics.WORKER_BOX)
            metrics.WORKER_BOX.clear()
        try:
            answer = _dumps((ok, value, seconds, box, cpu, output))
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
            answer = _dumps((False, err, seconds, box, cpu, output))
        send(reply, answer)


if __name__ == "__main__":
    # this file's folder is not a place to import the user's modules from
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    os.register_at_fork(after_in_child=_forked)
    import signal  # (built in: no import cost to speak of)

    signal.signal(signal.SIGUSR1, _last_words)
    serve(int(sys.argv[1]), int(sys.argv[2]))
