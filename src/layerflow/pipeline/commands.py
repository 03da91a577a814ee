"""``run:`` steps: commands whose templates are rendered into arguments, never into shell
syntax, and which Ctrl-C, a timeout or fail-fast can stop (each in its own process group).

The template is split into arguments first and each argument rendered afterwards, so a
value is always one literal argument. ``shell: true`` runs ``sh -c SCRIPT`` where every value
is a positional parameter (``"$1"``), never part of the script's text. What neither can make
safe is a value placed *inside* a script that the command hands to a second interpreter
(``sh -c '... {{x}}'``, ``eval``, ``python -c``): :func:`script_templates` finds those at
load time, so that the loader refuses them with the fix.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..capture import keep as keep_output
from ..errors import Cancelled, CommandFailed, TaskTimeout
from .templates import ITEM, TEMPLATE, check_when, render, step_values

__all__ = ["Command", "script_templates", "stop_commands"]

# programs that run their argument after these flags as a script of their own
_SCRIPT_FLAGS = {
    **dict.fromkeys(("sh", "bash", "dash", "zsh", "ksh", "ash", "fish", "busybox"), "c"),
    **dict.fromkeys(("python", "python3", "pypy", "pypy3"), "c"),
    **dict.fromkeys(("perl", "ruby", "node", "nodejs", "deno"), "e"),
    "su": "c",
    "osascript": "e",
}
_EVALS = ("eval", "source", ".")
# what runs the next word as the program: its own options and arguments are skipped
_WRAPPERS = (
    *("env", "nice", "nohup", "sudo", "doas", "exec", "command", "time", "timeout"),
    *("stdbuf", "xargs", "setsid", "ionice", "chrt", "taskset", "unbuffer", "flock"),
)


_WRAPPER_ARG = re.compile(r"^\w+=|^[0-9.]+[smhd]?$")  # VAR=value, a duration


def script_templates(words: list[str]) -> list[str]:
    """A problem for each template placed inside a script that the command passes to a
    shell or interpreter (``sh -c '... {{x}}'``): its value would become code there."""
    problems = []
    for k, word in enumerate(words):
        program = os.path.basename(word)
        program = re.sub(r"^(python|pypy)[0-9.]*$", r"\1", program)
        if program in _WRAPPERS or word.startswith("-") or _WRAPPER_ARG.match(word):
            continue  # a wrapper, its option or argument, or VAR=value: the program follows
        if program in _EVALS and k == 0 or program == "eval":
            scripts = [w for w in words[k + 1 :] if TEMPLATE.search(w)]
            if scripts:
                problems.append(
                    f"{{{{...}}}} inside the script that {program!r} runs would be run as code; "
                    f"use shell: true, which passes every value as a parameter, never as code"
                )
            break
        flag = _SCRIPT_FLAGS.get(program)
        if flag is None:
            continue
        for j in range(k + 1, len(words) - 1):
            option = words[j]
            if not option.startswith("-") or option.startswith("--"):
                break
            if flag in option[1:]:
                script = words[j + 1]
                if TEMPLATE.search(script):
                    fix = (
                        "use shell: true, which passes every value to the shell as a parameter "
                        '("$1"), never as code'
                        if flag == "c" and program not in ("python", "pypy")
                        else "pass the value as a separate argument after the script "
                        "(sys.argv[1], process.argv[2], $ARGV[0]) and read it there"
                    )
                    problems.append(
                        f"a template inside the script of {program} -{flag} puts its value into "
                        f"the code that {program} runs ({script!r}): a value such as "
                        f"'; rm -rf ~' would run. Instead, {fix}"
                    )
                break
        break  # the program is found: its own arguments are its business
    return problems


_PROCESSES: dict[subprocess.Popen[bytes], object] = {}  # running command -> its pipeline
_PROCESSES_LOCK = threading.Lock()


def stop_commands(owner: object | None = None) -> None:
    """Kill the commands ``run:`` steps started that are still running (each with its
    process group): those of pipeline ``owner``, or all of them."""
    with _PROCESSES_LOCK:
        running = [p for p, o in _PROCESSES.items() if owner is None or o is owner]
    for proc in running:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def _shell_argv(template: str, values: Mapping[str, Any]) -> list[str]:
    """``sh -c SCRIPT`` where every value is a positional parameter (``"$1"``), never part of
    the script's text, so the shell cannot parse it whatever quotes surround it. Inside
    double quotes the reference stays as is; inside single quotes (where ``$`` means
    nothing) the quote is closed around it."""
    script: list[str] = []
    args: list[str] = []
    quote = ""  # the quote we are inside: "", "'" or '"'
    pos = 0
    for m in TEMPLATE.finditer(template):
        text = template[pos : m.start()]
        k = 0
        while k < len(text):  # track the quoting state up to the placeholder
            ch = text[k]
            if quote == "'":
                if ch == "'":
                    quote = ""
            elif ch == "\\":
                k += 1  # an escaped character
            elif quote == '"':
                if ch == '"':
                    quote = ""
            elif ch in "'\"":
                quote = ch
            k += 1
        script.append(text)
        args.append(str(values[m.group(1).strip()]))
        ref = f"${{{len(args)}}}"
        script.append(ref if quote == '"' else f"'\"{ref}\"'" if quote == "'" else f'"{ref}"')
        pos = m.end()
    script.append(template[pos:])
    return ["/bin/sh", "-c", "".join(script), "layerflow", *args]


class Command:
    """A ``run:`` step. The template is split first and each argument rendered after, so a
    value is always one literal argument; with ``shell: true`` every value is quoted.

    A plain object rather than a closure, so that the step can be pickled and run in a
    worker process or on a Dask worker: what only makes sense in this process (the
    commands it is running, its pipeline) is left behind and started afresh there."""

    #: each attempt kills its own command at ``timeout`` (see ``scheduler/deadlines.py``)
    times_its_attempts = True

    def __init__(self, name: str, d: dict[str, Any], base: Path, owner: object) -> None:
        self.__name__ = self.name = name
        self.template = d["run"]
        self.shell = bool(d.get("shell"))
        self.env_t = d.get("env") or {}
        self.cwd_t = d.get("cwd")
        self.timeout = d.get("timeout")
        self.argv_t = None if self.shell else shlex.split(self.template)
        self.base = base
        self.when = d.get("when")  # None: always runs
        self.item = ITEM  # the argument that holds a foreach element (the loader sets it)
        self.literal = isinstance(d.get("foreach"), list)
        self._local(owner)

    def _local(self, owner: object) -> None:
        self.owner = owner
        self.running: set[subprocess.Popen[bytes]] = set()
        # each attempt in progress here has its own stop (guarded by _PROCESSES_LOCK): a
        # stop is for the attempts it found, never for a retry that starts after it
        self.attempts: set[threading.Event] = set()

    def __getstate__(self) -> dict[str, Any]:
        local = ("owner", "running", "attempts")
        return {k: v for k, v in self.__dict__.items() if k not in local}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local(None)

    def __call__(self, **kwargs: Any) -> str:
        values = step_values(kwargs, self.item, self.literal)
        if self.when is not None:  # before anything is rendered: a skip needs no cwd
            check_when(self.name, self.when, values)
        stop = threading.Event()
        with _PROCESSES_LOCK:
            self.attempts.add(stop)
        try:
            return self._attempt(values, stop)
        finally:
            with _PROCESSES_LOCK:
                self.attempts.discard(stop)

    def _attempt(self, values: dict[str, Any], stop: threading.Event) -> str:
        name, timeout = self.name, self.timeout
        if self.shell:
            argv = _shell_argv(self.template, values)
        else:
            argv = [render(arg, values) for arg in self.argv_t]  # type: ignore[union-attr]
        env = {**os.environ, **{k: render(str(v), values) for k, v in self.env_t.items()}}
        cwd = self.base / render(self.cwd_t, values) if self.cwd_t else self.base
        if not cwd.is_dir():
            raise CommandFailed(f"step {name!r}: its cwd {str(cwd)!r} is not a folder", 127, "")
        if stop.is_set():  # stopped before its command started: it never starts
            raise Cancelled(f"step {name!r} was stopped: another step failed")
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,  # its own process group: a timeout kills it all
            )
        except OSError as e:
            raise CommandFailed(f"step {name!r}: cannot run {argv[0]!r}: {e}", 127, "") from None
        with _PROCESSES_LOCK:
            _PROCESSES[proc] = self.owner
            self.running.add(proc)
            stopped = stop.is_set()  # stopped while it was starting
        if stopped:
            _kill_group(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            keep_output(out.decode(errors="replace"))
            keep_output(err.decode(errors="replace"), err=True)
            raise TaskTimeout(
                f"step {name!r} timed out after {timeout:g}s; its command was killed",
                name,
                timeout,
            ) from None
        finally:
            _kill_group(proc)  # anything it left running in its group
            with _PROCESSES_LOCK:
                _PROCESSES.pop(proc, None)
                self.running.discard(proc)
        keep_output(out.decode(errors="replace"))  # the step's output: its logs too
        keep_output(err.decode(errors="replace"), err=True)
        if stop.is_set():
            raise Cancelled(f"step {name!r} was stopped: another step failed")
        if proc.returncode != 0:
            tail = "\n".join(err.decode(errors="replace").strip().splitlines()[-20:])
            command = shlex.join(argv)
            command = command if len(command) <= 200 else command[:197] + "..."
            raise CommandFailed(
                f"step {name!r}: command exited with code {proc.returncode}: {command}"
                + (f"\nstderr ends with:\n{tail}" if tail else "\n(nothing on stderr)"),
                proc.returncode,
                tail,
            )
        return out.decode(errors="replace").strip()

    @property
    def detail(self) -> str:
        """What a report shows of this step: its command, as written."""
        return f"run: {self.template}" + ("  (shell: true)" if self.shell else "")

    def cancel(self) -> None:
        """Stop the attempts of this step in progress here (fail-fast, Ctrl-C): kill their
        commands, or keep a command that has not started yet from starting."""
        with _PROCESSES_LOCK:
            for stop in self.attempts:
                stop.set()
            procs = list(self.running)
        for proc in procs:
            _kill_group(proc)
