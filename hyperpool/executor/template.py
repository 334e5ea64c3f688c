"""Start worker and job processes by forking a pre-imported template, not a fresh interpreter.

A pool worker started as ``python -m hyperpool worker`` spends most of its start importing
Python, Celery, kombu, redis and pydantic (0.6 s idle, several seconds on a loaded 2-core
machine), and the job model paid the same for every task. The template is multiprocessing's
*forkserver*: one server process per supervisor (or engine) that imports those modules once
(:data:`PRELOAD`) and forks a child per request, so a child starts with everything imported
and shares those pages copy-on-write with its siblings.

Why a forkserver and not ``os.fork()`` of the supervisor: the supervisor has threads, an AMQP
connection and Redis sockets; a fork would copy them half-way through whatever they were doing.
The forkserver never connected anything or started a thread: it only imported modules that do
no work at import (the Celery app itself is built in the child, from the child's environment).

Each child then does what a fresh process got from :class:`subprocess.Popen`: its own session
(Ctrl-C in the terminal must not reach it), the given environment and working directory, its
stdio on the log file, and for workers a parent-death SIGTERM (the forkserver leaves when the
supervisor does, so the worker gets a warm shutdown instead of consuming as an orphan).

Like every forkserver child, a child first imports the parent's ``__main__`` module again
(multiprocessing's rule; skipped for ``python -m hyperpool``, whose main is a ``__main__``
module): a script that starts pools or jobs in-process needs the
``if __name__ == "__main__":`` guard.

prometheus-client picks its storage at import, so the template, like the supervisor, must
start after ``PROMETHEUS_MULTIPROC_DIR`` is decided (``pools up`` decides it first thing).

``HYPERPOOL_FORK_TEMPLATE=0`` starts fresh interpreters as before (the benchmark's baseline).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Modules every worker and job imports; none of them connects, starts a thread or reads the
# environment at import (checked by tests/unit/test_fork_template.py).
PRELOAD = [
    "hyperpool.cli",
    "hyperpool.executor.job",
    "hyperpool.executor.tasks",
    "hyperpool.executor.worker",
    "hyperpool.executor.consumer",
    "celery.apps.worker",
    "celery.bin.celery",
    "celery.concurrency.thread",
    "celery.worker.consumer",
    "celery.worker.components",
    "celery.loaders.app",
    "kombu.transport.pyamqp",
    # What a worker still imported after those, up to worker_ready (measured): 37 ms of it.
    "billiard.pool", "celery.app.amqp", "celery.app.control", "celery.app.events",
    "celery.app.log", "celery.app.routes", "celery.backends.base", "celery.events.dispatcher",
    "celery.events.receiver", "celery.fixups.django", "celery.worker.autoscale",
    "celery.worker.strategy", "encodings.idna", "kombu.matcher", "kombu.mixins", "kombu.pidbox",
]
PR_SET_PDEATHSIG = 1


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether processes are forked from the template (off with ``HYPERPOOL_FORK_TEMPLATE=0``)."""
    env = os.environ if environ is None else environ
    return (env.get("HYPERPOOL_FORK_TEMPLATE", "1").strip().lower() not in {"0", "false", "no"}
            and "forkserver" in multiprocessing.get_all_start_methods())


def _context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def warm_up() -> None:
    """Start the template now, so the first worker does not wait for its imports."""
    if enabled():
        _context()
        multiprocessing.forkserver.ensure_running()


@dataclass(frozen=True)
class ChildSpec:
    """What the child becomes: ``hyperpool <argv>`` with this environment, cwd and stdio."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str
    log_path: str | None = None
    parent_death_signal: bool = False


def _drop_inherited_pipes() -> None:
    """Close the write ends of the forkserver's and resource tracker's liveness pipes.

    multiprocessing hands them to every child (so that it could start processes of its own);
    the forkserver leaves only when every write end is closed. Kept open here, a killed
    supervisor left its template and workers running forever: the workers held the pipe that
    would have told the template to leave, and the template's exit is their SIGTERM.
    """
    holders = ((multiprocessing.forkserver._forkserver, "_forkserver_alive_fd"),
               (multiprocessing.resource_tracker._resource_tracker, "_fd"))
    for holder, attr in holders:
        fd = getattr(holder, attr, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
            setattr(holder, attr, None)


def _become(spec: ChildSpec) -> None:
    """In the child: the session, environment, directory and stdio of a fresh process."""
    _drop_inherited_pipes()
    os.setsid()
    if spec.parent_death_signal and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    os.environ.clear()
    os.environ.update(spec.env)
    os.chdir(spec.cwd)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    out = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) \
        if spec.log_path else null
    os.dup2(out, 1)
    os.dup2(out, 2)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own stdio
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    # The forkserver ignores SIGINT; a fresh process would not (our session sees no Ctrl-C).
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _child_main(spec: ChildSpec) -> None:
    _become(spec)
    from hyperpool.cli import main

    main(list(spec.argv))


class ForkedProcess:
    """A template child with the part of :class:`subprocess.Popen`'s interface we use."""

    def __init__(self, process: multiprocessing.process.BaseProcess):
        self._process = process
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        pid = self._process.pid
        assert pid is not None  # started in start()
        return pid

    def poll(self) -> int | None:
        if self.returncode is None and not self._process.is_alive():
            self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self.poll()
        if code is None:
            import subprocess

            raise subprocess.TimeoutExpired(["hyperpool"], timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def start(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | str,
          log_path: Path | None = None, parent_death_signal: bool = False) -> ForkedProcess:
    """Fork ``hyperpool <argv>`` from the template; it runs in a session of its own."""
    spec = ChildSpec(tuple(argv), dict(env), str(cwd), str(log_path) if log_path else None,
                     parent_death_signal)
    # daemon=True: multiprocessing's exit handler must not wait for pool workers or jobs (the
    # supervisor drains its workers, the engine ends its jobs itself).
    process = _context().Process(target=_child_main, args=(spec,), daemon=True,
                                 name=f"hyperpool {' '.join(argv[:1])}")
    process.start()
    return ForkedProcess(process)
