"""Run one task message as a command and describe what happened.

The runner knows nothing about Celery or Redis: the pool task and the job-model
``hyperpool execute`` both call :func:`run_message`, so both models behave identically.
``args`` are passed as a list (no shell) unless ``shell: true``, exactly as HyperFlow's job
executor does; a non-zero exit is a result, not an exception; a missing executable is a
failed result with a clear error (exit code 127, like a shell).
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from hyperpool.models import STDERR_TAIL_BYTES, TaskMessage, TaskResult

LOG_DIR = "logs-hf"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]+")


_HOST = socket.gethostname()
_slot = threading.local()
_slots = itertools.count(1)


def worker_name() -> str:
    """``host:pid`` of this process, plus ``/slot`` on a pool's slot thread.

    A pool runs its slots as threads of one process; the slot number keeps them apart in
    results and the timeline (one lane per slot, as a prefork child had).
    """
    if threading.current_thread() is threading.main_thread():
        return f"{_HOST}:{os.getpid()}"
    number = getattr(_slot, "number", None)
    if number is None:
        number = _slot.number = next(_slots)
    return f"{_HOST}:{os.getpid()}/{number}"


def log_stem(task_id: str | None, attempt: int) -> str:
    """The name (in ``<work dir>/logs-hf``) of an attempt's ``.stdout`` and ``.stderr`` logs;
    the engine's failure report points at them."""
    task = _UNSAFE.sub("_", task_id or "task") or "task"
    return f"{task}.{attempt}"


def _tail(path: Path, limit: int = STDERR_TAIL_BYTES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _copy_into(log: Path, target: Path, *, append: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with log.open("rb") as src, target.open("ab" if append else "wb") as dst:
        shutil.copyfileobj(src, dst)


def command_line(message: TaskMessage) -> list[str] | str:
    """What is handed to the OS: an argv list, or one string for ``shell: true``."""
    if message.shell:
        # HyperFlow joins executable and args with spaces and lets the shell parse them.
        return " ".join([message.executable, *message.args])
    return [message.executable, *message.args]


def run_message(
    message: TaskMessage,
    *,
    default_work_dir: str,
    attempt: int = 1,
    model: str = "pool",
    new_session: bool = True,
) -> TaskResult:
    """Execute ``message`` to completion and return its :class:`TaskResult`.

    Pool workers start the command in its own session so a Ctrl-C meant for the worker (warm
    shutdown) does not kill the task; a job-model process keeps it in its process group so
    the engine can stop the whole job with one signal.
    """
    started = time.time()
    work_dir = Path(message.work_dir or default_work_dir)
    task_id = message.taskId or "task"
    stub = getattr(message, "stub_sleep", None)
    if stub is not None:
        # Stub mode (--stub-sleep): the real workflow shape without its executables.
        if float(stub) > 0:
            time.sleep(float(stub))
        return TaskResult(task_id=task_id, attempt=attempt, exit_code=0, started=started,
                          finished=time.time(), worker=worker_name(), model=model)
    logs = work_dir / LOG_DIR
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _failed(task_id, attempt, started, model, 1,
                       f"cannot use work dir {work_dir}: {exc}")
    stem = log_stem(message.taskId, attempt)
    out_log, err_log = logs / f"{stem}.stdout", logs / f"{stem}.stderr"
    argv = command_line(message)
    ooms_before = oom_kills()
    with out_log.open("wb") as out, err_log.open("wb") as err:
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv list, shell only when asked
                argv, cwd=work_dir, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                shell=message.shell, start_new_session=new_session,
                executable="/bin/sh" if message.shell else None,
            )
        except FileNotFoundError:
            return _failed(task_id, attempt, started, model, 127,
                           f"executable not found: {message.executable!r} (cwd {work_dir})")
        except PermissionError:
            return _failed(task_id, attempt, started, model, 126,
                           f"executable not runnable: {message.executable!r} (permission denied)")
        except OSError as exc:
            return _failed(task_id, attempt, started, model, 126,
                           f"cannot start {message.executable!r}: {exc}")
        code = proc.wait()
    for name, log, append in (
        (message.stdout, out_log, False), (message.stdoutAppend, out_log, True),
        (message.stderr, err_log, False), (message.stderrAppend, err_log, True),
    ):
        if name:
            _copy_into(log, work_dir / name, append=append)
    finished = time.time()
    # A negative return code means "killed by signal N"; report it the way shells do.
    exit_code = code if code >= 0 else 128 - code
    error = None if code >= 0 else f"killed by signal {-code}"
    if code == -signal.SIGKILL and oom_kills() > ooms_before:
        error = ("OOM-killed: the kernel's OOM killer ended it (the memory limit of this "
                 "worker's container or pod was reached; raise initialResources.limits.memory)")
    return TaskResult(
        task_id=task_id, attempt=attempt, exit_code=exit_code, started=started, finished=finished,
        worker=worker_name(), stderr_tail=_tail(err_log), error=error, model=model,
    )


# The OOM kills counted by the memory cgroup this process is in (cgroup v2, else v1): inside a
# container or pod, that is the container's, whose memory limit the task shares.
OOM_COUNTERS = (Path("/sys/fs/cgroup/memory.events"),
                Path("/sys/fs/cgroup/memory/memory.oom_control"))


def oom_kills() -> int:
    for path in OOM_COUNTERS:
        try:
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return 0


def _failed(task_id: str, attempt: int, started: float, model: str, code: int, error: str
            ) -> TaskResult:
    return TaskResult(task_id=task_id, attempt=attempt, exit_code=code, started=started,
                      finished=time.time(), worker=worker_name(), stderr_tail=error,
                      error=error, model=model)


def describe(message: TaskMessage) -> str:
    """A copy-pasteable rendering of the command for logs."""
    line = command_line(message)
    return line if isinstance(line, str) else shlex.join(line)
