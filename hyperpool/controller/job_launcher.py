"""The engine's job model on Kubernetes: one ``batch/v1`` Job per task.

Same contract as the local :class:`~hyperpool.engine.jobs.JobLauncher`: the Job's pod runs
``hyperpool execute --reply-to <stream>``, so results arrive on the run's completion stream
like every other result. What the stream cannot tell — a pod that failed before reporting
(image pull error, OOM kill, eviction) — is found by listing the run's Jobs every few
seconds and reported as a :class:`~hyperpool.executor.results.JobExit`; that list is a
fallback for failures, not how completions are learned. Jobs carry the run id as a label
and a TTL, and the engine deletes the ones it started when the run ends (1.20's TTL
controller is feature-gated).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import redis

from hyperpool.controller.api import ApiError, KubeApi
from hyperpool.controller.jobs import JobParams, build_job
from hyperpool.executor.results import JobExit, report_job_exit

log = logging.getLogger("hyperpool.jobs")
RUN_LABEL = "hyperflow.agh.edu.pl/run-id"
FAILURE_SCAN_SECONDS = 5.0


class KubeJobLauncher:
    def __init__(self, api: KubeApi, client: redis.Redis, stream: str, run_id: str, *,
                 namespace: str, image: str, env: Mapping[str, str] | None = None):
        self.api = api
        self.client = client
        self.stream = stream
        self.run_id = run_id
        self.namespace = namespace
        self.image = image
        self.env = dict(env or {})
        self._live: dict[str, tuple[str, int]] = {}  # job name -> (task id, attempt)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._scanner = threading.Thread(target=self._scan_failures, daemon=True,
                                         name="job-failures")
        self._scanner.start()

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._live)

    def start(self, task_id: str, message: dict[str, Any], attempt: int) -> None:
        params = JobParams(namespace=self.namespace, image=self.image, reply_to=self.stream,
                           attempt=attempt, run_id=self.run_id, env=self.env,
                           labels={RUN_LABEL: self.run_id})
        job = build_job(message, params)
        self.api.create(job)
        with self._lock:
            self._live[job["metadata"]["name"]] = (task_id, attempt)

    def adopt(self, task_id: str, attempt: int, pid: int) -> bool:
        return False  # Jobs are found again by label, not by pid; resume re-runs them

    def finished(self, task_id: str) -> None:
        """The engine got the task's result: forget and delete its Job."""
        with self._lock:
            names = [n for n, (t, _) in self._live.items() if t == task_id]
            for name in names:
                del self._live[name]
        for name in names:
            self._delete(name)

    def _delete(self, name: str) -> None:
        try:
            self.api.delete("batch/v1", "Job", self.namespace, name)
        except ApiError as exc:
            log.warning("could not delete Job %s: %s", name, exc)

    def _scan_failures(self) -> None:
        while not self._stop.wait(FAILURE_SCAN_SECONDS):
            try:
                jobs = self.api.list("batch/v1", "Job", self.namespace,
                                     label_selector=f"{RUN_LABEL}={self.run_id}")
            except ApiError as exc:
                log.warning("cannot list this run's Jobs: %s", exc)
                continue
            for job in jobs:
                name = job["metadata"]["name"]
                failed = any(c.get("type") == "Failed" and c.get("status") == "True"
                             for c in (job.get("status") or {}).get("conditions") or [])
                with self._lock:
                    entry = self._live.pop(name, None) if failed else None
                if entry:
                    report_job_exit(self.client, self.stream, JobExit(entry[0], entry[1], 1))

    def terminate_all(self, grace: float = 5.0) -> int:
        """Delete every Job this run still has (their pods get SIGTERM, then the grace)."""
        self._stop.set()
        with self._lock:
            names = list(self._live)
            self._live.clear()
        for name in names:
            self._delete(name)
        return len(names)
