"""Worker processes of a local pool: start, warm-stop, tell busy from idle, reap.

Each worker is ``hyperpool worker --queue Q -c <the pool's concurrency>`` (default 1): one
worker is one "pod", so the budget counts processes. It is forked from the pre-imported
template (:mod:`hyperpool.executor.template`: 0.08 s from publish to the task's start for a
pool at zero, against 0.5 s for a fresh interpreter, docs/benchmarks.md), or with
``HYPERPOOL_FORK_TEMPLATE=0`` started as ``python -m hyperpool worker``. Why the details:

* **Own session**: a Ctrl-C in the terminal goes to the whole foreground process group; the
  workers must not get it, because the supervisor decides how they stop (warm, then forced
  on a second Ctrl-C).
* **Parent-death signal** (``prctl(PR_SET_PDEATHSIG)`` in a forked worker, whose parent, the
  template, leaves with the supervisor; ``setpriv --pdeathsig TERM`` for a fresh one): if the
  supervisor is killed outright, its workers get SIGTERM, i.e. a warm shutdown, instead of
  consuming forever as orphans. ``setpriv`` execs the worker, so the PID is the worker's.
* **Stopping is SIGTERM only**: Celery's warm shutdown finishes the running task and takes no
  new one, so scaling down never kills a task. Only :meth:`WorkerProcess.kill` (a second
  Ctrl-C, or a drain timeout the caller chose) kills, and then the unacknowledged message is
  redelivered by the broker.
* **Busy = its pool child has a child**: the task's command. Read from
  ``/proc/<pid>/task/*/children`` every tick (~25 µs per worker). It floors the unacked count
  (statistics lag), orders whom to stop, and tells whether a draining worker still uses its
  budget; correctness never depends on it (a stub task with no process reads as idle).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from hyperpool.executor import template
from hyperpool.settings import Settings

_sequence = itertools.count(1)


@functools.lru_cache(maxsize=1)
def _pdeathsig_prefix() -> tuple[str, ...]:
    setpriv = shutil.which("setpriv")
    if setpriv is None or not sys.platform.startswith("linux"):
        return ()
    try:
        ok = subprocess.run([setpriv, "--pdeathsig", "TERM", "--", "true"],  # noqa: S603
                            capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return (setpriv, "--pdeathsig", "TERM", "--") if ok else ()


def worker_argv(queue: str, *, loglevel: str = "INFO", concurrency: int = 1) -> list[str]:
    """The ``hyperpool`` arguments of one pool worker on ``queue``."""
    return ["worker", "--queue", queue, "--concurrency", str(concurrency), "--loglevel", loglevel]


def worker_command(queue: str, *, loglevel: str = "INFO", concurrency: int = 1) -> list[str]:
    """The argv of one pool worker on ``queue`` as a fresh interpreter."""
    return [*_pdeathsig_prefix(), sys.executable, "-m", "hyperpool",
            *worker_argv(queue, loglevel=loglevel, concurrency=concurrency)]


def worker_env(settings: Settings, queue: str, work_dir: Path,
               base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker: the supervisor's settings, explicitly.

    Settings may have been built in code (embedded mode), so they are written out rather than
    trusted to be in ``os.environ``. The delivery limit must match, or the worker's queue
    declaration would differ from the supervisor's and RabbitMQ would refuse it.
    """
    env = dict(os.environ if base is None else base)
    env.update(
        HYPERPOOL_BROKER_URL=settings.broker_url,
        HYPERPOOL_REDIS_URL=settings.redis_url,
        HYPERPOOL_NAMESPACE=settings.namespace,
        HYPERPOOL_QUEUE=queue,
        HYPERPOOL_WORK_DIR=str(work_dir),
        HYPERPOOL_DELIVERY_LIMIT=str(settings.delivery_limit),
        HYPERPOOL_CONNECT_TIMEOUT=str(settings.connect_timeout),
        PYTHONUNBUFFERED="1",
    )
    # One port cannot serve every worker; the supervisor exports the pool metrics itself.
    env.pop("HYPERPOOL_METRICS_PORT", None)
    return env


class Worker:
    """What the supervisor knows of any worker (a process here, a container in
    :mod:`hyperpool.local.containers`): its age, whether it was asked to stop, how busy."""

    def __init__(self, pool: str, log_path: Path | None = None):
        self.pool = pool
        self.log_path = log_path
        self.started = time.monotonic()
        self.draining_since: float | None = None
        self.busy: bool | None = None
        self.running = 0  # tasks' commands running right now (its slots in use)
        # Once it exited on its own, what its runtime could tell (containers: the kernel's
        # OOM kill, the last log lines; a process's log is in its log file).
        self.oom_killed = False
        self.exit_note = ""
        self.exit_log = ""

    @property
    def draining(self) -> bool:
        return self.draining_since is not None

    def age(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.started

    def _mark_draining(self) -> None:
        if self.draining_since is None:
            self.draining_since = time.monotonic()


class WorkerProcess(Worker):
    """One running ``hyperpool worker`` of a pool."""

    def __init__(self, pool: str, proc: subprocess.Popen[bytes] | template.ForkedProcess,
                 log_path: Path | None):
        super().__init__(pool, log_path)
        self.proc = proc

    @classmethod
    def start(cls, pool: str, queue: str, *, settings: Settings, work_dir: Path,
              log_dir: Path | None = None, loglevel: str = "INFO",
              concurrency: int = 1) -> WorkerProcess:
        log_path = None
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            log_path = log_dir / f"{pool}.{os.getpid()}-{next(_sequence)}.log"
        env = worker_env(settings, queue, work_dir)
        if template.enabled():
            proc: subprocess.Popen[bytes] | template.ForkedProcess = template.start(
                worker_argv(queue, loglevel=loglevel, concurrency=concurrency), env=env,
                cwd=work_dir, log_path=log_path, parent_death_signal=True)
            return cls(pool, proc, log_path)
        out = log_path.open("ab") if log_path is not None else None
        try:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv
                worker_command(queue, loglevel=loglevel, concurrency=concurrency), cwd=work_dir,
                env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT if out is not None else None,
                start_new_session=True,
            )
        finally:
            if out is not None:
                out.close()
        return cls(pool, proc, log_path)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self) -> None:
        """Warm shutdown: finish the running task (if any), take no new one, exit."""
        self._mark_draining()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the worker and every task process it started (their messages are redelivered).

        Task commands run in their own session, so killing the worker alone would orphan them.
        """
        try:
            family = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            family = []
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        for child in family:
            with contextlib.suppress(psutil.Error):
                child.kill()

    def describe(self, now: float) -> dict[str, object]:
        return {"pid": self.pid, "age_seconds": round(self.age(now), 1),
                "state": "draining" if self.draining else "running", "busy": self.busy,
                "log": str(self.log_path) if self.log_path else None}


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``: ``/proc/<pid>/task/*/children`` (two small reads), else psutil.

    Cheap enough to run every tick, unlike a scan of every process on the machine.
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        pids: list[int] = []
        for tid in tasks:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                pids.extend(int(c) for c in fh.read().split())
        return pids
    except (OSError, ValueError):
        try:
            return [c.pid for c in psutil.Process(pid).children()]
        except psutil.Error:
            return []


def refresh_busy(workers: list[WorkerProcess]) -> None:
    """Mark each worker busy when it runs a task's command (its slot threads start them as
    children of the worker process; an in-process ``--stub-sleep`` task is not seen here, the
    queue's unacknowledged count covers it)."""
    for worker in workers:
        if worker.poll() is not None:
            worker.busy, worker.running = False, 0
            continue
        worker.running = len(_children(worker.pid))
        worker.busy = worker.running > 0
