"""The local job model: one ``hyperpool execute`` process per task (forked from the template).

This is the analogue of a Kubernetes Job running one executor. Parallelism is bounded by the
engine (``--max-jobs``). A small thread per process waits for it and appends a
:class:`~hyperpool.executor.results.JobExit` to the completion stream, so the engine learns
about crashed jobs through the same single stream it reads results from.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import redis

from hyperpool.executor import template
from hyperpool.executor.results import JobExit, report_job_exit
from hyperpool.settings import Settings


def jobs_key(run_id: str) -> str:
    """Redis hash task id -> "pid attempt start-time" of the run's live jobs (for --resume)."""
    return f"hyperpool:run:{run_id}:jobs"


def _started(pid: int) -> float | None:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).create_time()
    return None


class JobLauncher:
    def __init__(self, settings: Settings, client: redis.Redis, stream: str, work_dir: Path,
                 run_id: str):
        self.settings = settings
        self.client = client
        self.stream = stream
        self.work_dir = work_dir
        self.run_id = run_id
        self._procs: dict[str, subprocess.Popen[bytes] | template.ForkedProcess] = {}
        self._lock = threading.Lock()
        self._stopping = False
        template.warm_up()

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._procs)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HYPERPOOL_REDIS_URL"] = self.settings.redis_url
        env["HYPERPOOL_WORK_DIR"] = str(self.work_dir)
        return env

    def start(self, task_id: str, message: dict[str, object], attempt: int) -> None:
        args = ["execute", "--message-json", json.dumps(message), "--reply-to", self.stream,
                "--attempt", str(attempt), "--run-id", self.run_id]
        # Own session: a Ctrl-C or crash of the engine does not kill the job with it; the
        # engine terminates jobs itself on a clean stop, and --resume adopts survivors.
        # Forked from the pre-imported template (hyperpool.executor.template) where it runs: a
        # fresh interpreter spends ~0.5 s importing before the task's command starts.
        proc: subprocess.Popen[bytes] | template.ForkedProcess
        if template.enabled():
            proc = template.start(args, env=self._env(), cwd=self.work_dir)
        else:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "hyperpool", *args], cwd=self.work_dir, env=self._env(),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
        with self._lock:
            self._procs[f"{task_id}#{attempt}"] = proc
        # Only --resume's adoption needs the record; the job itself runs regardless. The start
        # time tells the job from a later process that reuses its pid.
        with contextlib.suppress(redis.RedisError):
            self.client.hset(jobs_key(self.run_id), task_id,
                             f"{proc.pid} {attempt} {_started(proc.pid) or 0:.2f}")
        threading.Thread(target=self._wait, args=(task_id, attempt, proc), daemon=True,
                         name=f"job-{task_id}").start()

    def finished(self, task_id: str) -> None:
        """The engine has the task's result (local processes clean up after themselves)."""

    def adopt(self, task_id: str, record: str) -> int | None:
        """Watch a job process left running by a crashed engine; its attempt, or ``None``
        when it is gone (or its pid now belongs to another process)."""
        try:
            pid_text, attempt_text, *rest = record.split()
            pid, attempt = int(pid_text), int(attempt_text)
            started = float(rest[0]) if rest else None
        except ValueError:
            return None
        try:
            proc = psutil.Process(pid)
            if started is not None:
                if abs(proc.create_time() - started) > 0.05:
                    return None
            elif task_id not in " ".join(proc.cmdline()):  # a record without a start time
                return None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        threading.Thread(target=self._wait_adopted, args=(task_id, attempt, proc), daemon=True,
                         name=f"job-{task_id}").start()
        return attempt

    def _wait_adopted(self, task_id: str, attempt: int, proc: psutil.Process) -> None:
        try:
            code = proc.wait() or 0
        except psutil.NoSuchProcess:
            code = 0
        self._exited(task_id, attempt, code)

    def _wait(self, task_id: str, attempt: int,
              proc: subprocess.Popen[bytes] | template.ForkedProcess) -> None:
        code = proc.wait()
        with self._lock:
            self._procs.pop(f"{task_id}#{attempt}", None)
        self._exited(task_id, attempt, code)

    def _exited(self, task_id: str, attempt: int, code: int) -> None:
        for _ in range(30):
            try:
                report_job_exit(self.client, self.stream, JobExit(task_id, attempt, code))
                self.client.hdel(jobs_key(self.run_id), task_id)
                return
            except (redis.RedisError, OSError):
                if self._stopping:
                    return
                time.sleep(1.0)

    def terminate_all(self, grace: float = 5.0) -> int:
        """SIGTERM every running job's process group, SIGKILL what is left after ``grace``."""
        self._stopping = True
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        return len(procs)


def _signal_group(proc: subprocess.Popen[bytes] | template.ForkedProcess,
                  sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
