"""The engine's job model on Kubernetes: one ``batch/v1`` Job per task.

Same contract as the local :class:`~hyperpool.engine.jobs.JobLauncher`: the Job's pod runs
``hyperpool execute --reply-to <stream>``, so results arrive on the run's completion stream
like every other result. What the stream cannot tell — a pod that failed before reporting
(image pull error, OOM kill, eviction, deadline) — is found by listing the run's Jobs and pods
every few seconds; that list is a fallback for failures, not how completions are learned.

A failed Job is reported as the task's failed :class:`~hyperpool.models.TaskResult`, not as a
bare :class:`~hyperpool.executor.results.JobExit`: the result's ``error`` says what the
kubelet saw (exit code and reason, or the image pull error) and its ``stderr_tail`` is the
pod's last log lines, which the engine's failure report prints as it does an executor's
stderr. The engine accepts it only for the attempt it still waits on, exactly as it would a
JobExit: if the pod reported its own result first (it exits with the task's exit code, so
every failing task fails its Job), that result came earlier in the stream and wins.

A pod waiting for an image that will not come (:data:`~hyperpool.controller.jobs.PULL_FAILURES`)
would wait forever; after :data:`PULL_GRACE_SCANS` scans its Job is deleted and the task fails.
Jobs carry the run id as a label and a TTL; the engine deletes each Job once its task has a
result, and every Job of the run when it ends, however it ends (1.20's TTL controller is
feature-gated). Deletes propagate in the background, so the Jobs' pods go too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from kubernetes.client.exceptions import ApiException

from hyperpool.controller.api import REQUEST_TIMEOUT, ApiError, KubeApi
from hyperpool.controller.jobs import (
    CONTAINER,
    JOB_NAME_LABEL,
    JobFailure,
    JobParams,
    build_job,
    creation_failure,
    job_failure,
    pull_failure,
    pull_problem,
)
from hyperpool.executor.results import patiently, report
from hyperpool.models import TaskResult

log = logging.getLogger("hyperpool.jobs")
RUN_LABEL = "hyperflow.agh.edu.pl/run-id"
FAILURE_SCAN_SECONDS = 5.0
# Scans a pod may be seen waiting for its image before the task fails (a registry hiccup
# clears within one back-off; a wrong name or pull policy never does).
PULL_GRACE_SCANS = 2
LOG_TAIL_LINES = 20
REPORT_PATIENCE = 60.0  # seconds the scanner waits out a Redis restart to report a failure


def pod_log_tail(api: KubeApi, namespace: str, pod: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of the task container's log ("" if it cannot be read).

    :meth:`KubeApi.request` decodes JSON, and a log is text (which may itself look like JSON:
    the typed client's ``read_namespaced_pod_log`` would then hand back a dict's repr), so
    this is the same call through the same authenticated client, returning the bytes as text.
    """
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}/log"
    query = [("container", CONTAINER), ("tailLines", str(lines))]
    try:
        method, url, headers, body, post = api.client.param_serialize(
            method="GET", resource_path=path, query_params=query,
            header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"])
        response = api.client.call_api(method, url, header_params=headers, body=body,
                                       post_params=post, _request_timeout=REQUEST_TIMEOUT)
        response.read()
    except (ApiException, OSError) as exc:
        log.warning("cannot read the log of pod %s: %s", pod, exc)
        return ""
    if not 200 <= response.status < 300:
        log.warning("cannot read the log of pod %s: HTTP %s", pod, response.status)
        return ""
    return (response.data or b"").decode(errors="replace")


class KubeJobLauncher:
    def __init__(self, api: KubeApi, client: redis.Redis, stream: str, run_id: str, *,
                 namespace: str, image: str, env: Mapping[str, str] | None = None,
                 work_dir: str | None = None, work_claim: str | None = None,
                 work_host_path: bool = False,
                 resources: Mapping[str, Mapping[str, str]] | None = None,
                 read_log: Callable[[KubeApi, str, str], str] = pod_log_tail,
                 scan_every: float | None = FAILURE_SCAN_SECONDS):
        """``scan_every=None`` starts no scanner thread (tests call :meth:`scan` instead)."""
        self.api = api
        self.client = client
        self.stream = stream
        self.run_id = run_id
        self.namespace = namespace
        self.image = image
        self.env = dict(env or {})
        self.work_dir = work_dir
        self.work_claim = work_claim
        self.work_host_path = work_host_path
        self.resources = dict(resources or {})
        self.read_log = read_log
        self._live: dict[str, tuple[str, int, float]] = {}  # Job -> (task id, attempt, start)
        self._pulling: dict[str, int] = {}  # Job -> scans seen waiting for its image
        self._podless: dict[str, int] = {}  # Job -> scans seen without a pod
        self._pods_denied = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._scanner: threading.Thread | None = None
        if scan_every is not None:
            self._scanner = threading.Thread(target=self._scan_loop, args=(scan_every,),
                                             daemon=True, name="job-failures")
            self._scanner.start()

    @property
    def selector(self) -> str:
        return f"{RUN_LABEL}={self.run_id}"

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._live)

    def start(self, task_id: str, message: dict[str, Any], attempt: int) -> None:
        params = JobParams(namespace=self.namespace, image=self.image, reply_to=self.stream,
                           attempt=attempt, run_id=self.run_id, env=self.env,
                           labels={RUN_LABEL: self.run_id}, work_dir=self.work_dir,
                           work_claim=self.work_claim, work_host_path=self.work_host_path,
                           resources=self.resources)
        job = build_job(message, params)
        self.api.create(job)
        with self._lock:
            self._live[job["metadata"]["name"]] = (task_id, attempt, time.time())

    def adopt(self, task_id: str, record: str) -> int | None:
        return None  # Jobs are found again by label, not by pid; resume re-runs them

    def finished(self, task_id: str) -> None:
        """The engine got the task's result: forget and delete its Job."""
        with self._lock:
            names = [n for n, (t, _, _) in self._live.items() if t == task_id]
            for name in names:
                del self._live[name]
                self._pulling.pop(name, None)
                self._podless.pop(name, None)
        for name in names:
            self._delete(name)

    def _delete(self, name: str) -> None:
        try:
            self.api.delete("batch/v1", "Job", self.namespace, name, propagation="Background")
        except ApiError as exc:
            log.warning("could not delete Job %s: %s", name, exc)

    # -- failures ----------------------------------------------------------------------------

    def _scan_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.scan()
            except ApiError as exc:
                log.warning("cannot list this run's Jobs: %s", exc)
            except Exception:  # noqa: BLE001 - a dead scanner would hang the run on a failure
                log.exception("job failure scan failed")

    def _run_pods(self) -> dict[str, list[dict[str, Any]]]:
        """The run's pods by Job name: one list per scan (the pods carry the Job template's
        run label), not one ``job-name=`` list per live Job. Without the right to list pods
        failures are still found, from the Jobs alone, only with less to say."""
        try:
            pods = self.api.list("v1", "Pod", self.namespace, label_selector=self.selector)
        except ApiError as exc:
            if not self._pods_denied:
                log.warning("cannot list this run's pods (failures are reported without "
                            "their exit code and log): %s", exc)
                self._pods_denied = True
            return {}
        by_job: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            owner = ((pod.get("metadata") or {}).get("labels") or {}).get(JOB_NAME_LABEL)
            if owner:
                by_job.setdefault(owner, []).append(pod)
        return by_job

    def scan(self) -> None:
        """Report every live Job that failed, or waits too long for its image, as failed."""
        with self._lock:
            if not self._live:
                return
        jobs = self.api.list("batch/v1", "Job", self.namespace, label_selector=self.selector)
        pods = self._run_pods()
        for job in jobs:
            name = job["metadata"]["name"]
            with self._lock:
                if name not in self._live:
                    continue
            failure = job_failure(job, pods.get(name, []))
            if failure is None:
                failure = self._pull_failure(name, pods.get(name, []))
            if failure is None:
                failure = self._creation_failure(name, pods.get(name, []))
            if failure is not None:
                self._fail(name, failure)

    def _pull_failure(self, name: str, pods: list[dict[str, Any]]) -> JobFailure | None:
        problem = pull_problem(pods)
        with self._lock:
            if problem is None:
                self._pulling.pop(name, None)
                return None
            seen = self._pulling[name] = self._pulling.get(name, 0) + 1
        return pull_failure(name, self.image, problem) if seen > PULL_GRACE_SCANS else None

    def _creation_failure(self, name: str, pods: list[dict[str, Any]]) -> JobFailure | None:
        """A Job still without a pod after :data:`PULL_GRACE_SCANS` scans: its ``FailedCreate``
        event says why (e.g. a ResourceQuota demanding requests the Job has none of, or an
        admission policy forbidding its volume); without one, it waits on."""
        with self._lock:
            if pods:
                self._podless.pop(name, None)
                return None
            seen = self._podless[name] = self._podless.get(name, 0) + 1
        if seen <= PULL_GRACE_SCANS:
            return None
        try:
            events = self.api.request(
                "GET", f"/api/v1/namespaces/{self.namespace}/events",
                query=[("fieldSelector", f"involvedObject.kind=Job,involvedObject.name={name}")])
        except ApiError as exc:
            log.debug("cannot read the events of Job %s: %s", name, exc)
            return None
        return creation_failure(name, events.get("items") or [])

    def _fail(self, name: str, failure: JobFailure) -> None:
        """Report ``failure`` as the task's result, then delete the Job (after its log is
        read: deleting kills the pod and its log with it)."""
        with self._lock:
            entry = self._live.pop(name, None)
            self._pulling.pop(name, None)
            self._podless.pop(name, None)
        if entry is None:
            return
        task_id, attempt, started = entry
        tail = self.read_log(self.api, self.namespace, failure.pod) if failure.pod else ""
        result = TaskResult(task_id=task_id, attempt=attempt, exit_code=failure.exit_code,
                            started=started, finished=time.time(), worker=failure.pod or name,
                            stderr_tail=tail, error=failure.note, model="job")
        try:
            patiently(lambda: report(self.client, self.stream, result), REPORT_PATIENCE)
        except (redis.RedisError, OSError) as exc:
            log.warning("cannot report the failure of Job %s (next scan retries): %s", name,
                        exc)
            with self._lock:
                self._live[name] = entry
            return
        self._delete(name)

    # -- the end -----------------------------------------------------------------------------

    def terminate_all(self, grace: float = 5.0) -> int:
        """Delete every Job this run still has (their pods get SIGTERM and their grace period).

        Called when a run is cancelled and, by ``hyperpool run``, whenever it ends: besides the
        Jobs still running it sweeps the run's label for any a failed delete left behind.
        Returns how many were still running.
        """
        self._stop.set()
        with self._lock:
            names = list(self._live)
            self._live.clear()
            self._pulling.clear()
            self._podless.clear()
        for name in names:
            self._delete(name)
        try:
            left = [j["metadata"]["name"] for j in self.api.list(
                "batch/v1", "Job", self.namespace, label_selector=self.selector)]
        except ApiError as exc:
            log.warning("cannot list this run's Jobs to delete them: %s", exc)
            left = []
        for name in left:
            if name not in names:
                self._delete(name)
        return len(names)
