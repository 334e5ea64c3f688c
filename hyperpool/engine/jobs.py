"""The local job model: one fresh ``hyperpool execute`` process per task.

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

import redis

from hyperpool.executor.results import JobExit, report_job_exit
from hyperpool.settings import Settings


class JobLauncher:
    def __init__(self, settings: Settings, client: redis.Redis, stream: str, work_dir: Path):
        self.settings = settings
        self.client = client
        self.stream = stream
        self.work_dir = work_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._stopping = False

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
        argv = [sys.executable, "-m", "hyperpool", "execute", "--message-json",
                json.dumps(message), "--reply-to", self.stream, "--attempt", str(attempt)]
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            argv, cwd=self.work_dir, env=self._env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, start_new_session=True)
        with self._lock:
            self._procs[f"{task_id}#{attempt}"] = proc
        threading.Thread(target=self._wait, args=(task_id, attempt, proc), daemon=True,
                         name=f"job-{task_id}").start()

    def _wait(self, task_id: str, attempt: int, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        with self._lock:
            self._procs.pop(f"{task_id}#{attempt}", None)
        for _ in range(30):
            try:
                report_job_exit(self.client, self.stream, JobExit(task_id, attempt, code))
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


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
