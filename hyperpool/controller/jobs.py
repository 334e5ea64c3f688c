"""The in-cluster job model: one ``batch/v1`` Job per task message.

Tasks not listed in ``executionModels.json`` run as a fresh ``hyperpool execute`` process; on
Kubernetes that process is a Job's only pod. The Job never retries by itself
(``backoffLimit: 0``): the engine owns retries and reads the result from the completion stream
(``--reply-to``), so a Kubernetes-level retry would run the task twice behind its back.
``ttlSecondsAfterFinished`` lets the TTL controller clean finished Jobs up (beta since 1.21;
on 1.20 the field needs the TTLAfterFinished feature gate and is otherwise dropped, so the
engine should also delete Jobs it has seen complete).

Task messages name the workflow's work dir by its absolute path on the engine's machine, so
the pod mounts it at that same path: a PersistentVolumeClaim (any cluster) or, on a
single-node or dev cluster, the node's own directory (``hostPath``). Without either the pod
still runs, but sees none of the work dir's files.

The second half is pure: what a failed Job's pods say about why (kubelet pod status in, one
line for the engine's failure report out), so the launcher only fetches and reports.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hyperpool.controller import naming
from hyperpool.controller.api import ApiError, KubeApi
from hyperpool.controller.workload import restricted_container_security, restricted_pod_security
from hyperpool.errors import ConfigError, ServiceUnavailable

TASK_LABEL = f"{naming.GROUP}/task-id"
DEFAULT_TTL = 600
CONTAINER = "task"
WORK_VOLUME = "work"
# Kubelet waiting reasons of an image that will not arrive without a change (a typo, a private
# registry without pull secret, ``imagePullPolicy: Never`` on a node without the image).
# ErrImagePull and ImagePullBackOff alternate while the kubelet retries.
PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull",
                           "InvalidImageName"})
# The Job controller's pod label; 1.27+ also sets batch.kubernetes.io/job-name.
JOB_NAME_LABEL = "job-name"
MAX_MESSAGE = 300  # characters of one kubelet message (pull errors run to several hundred)


@dataclass(frozen=True)
class JobParams:
    """Where and how one task message runs as a Job.

    ``work_dir`` (absolute) is the pod's ``HYPERPOOL_WORK_DIR``; ``work_claim`` (a PVC name) or
    ``work_host_path`` mounts it at that path, which is then the container's working dir.
    """

    namespace: str
    image: str
    reply_to: str
    attempt: int = 1
    run_id: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    ttl_seconds: int = DEFAULT_TTL
    active_deadline: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    work_dir: str | None = None
    work_claim: str | None = None
    work_host_path: bool = False

    def __post_init__(self) -> None:
        if self.work_claim and self.work_host_path:
            raise ValueError("work_claim and work_host_path are mutually exclusive")
        if (self.work_claim or self.work_host_path) and not self.work_dir:
            raise ValueError("a work dir volume needs work_dir (its mount path)")
        if self.work_dir and not self.work_dir.startswith("/"):
            raise ValueError(f"work_dir must be absolute: {self.work_dir!r}")


def _label_value(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63].strip("-_.")
    return value or "task"


def job_name(task_id: str, attempt: int) -> str:
    """A DNS-label name unique per task attempt (``hf-task-<hash>-<attempt>``)."""
    digest = hashlib.sha256(task_id.encode()).hexdigest()[:16]
    return f"hf-task-{digest}-{attempt}"


def _work_volume(p: JobParams) -> dict[str, Any] | None:
    if p.work_claim:
        return {"name": WORK_VOLUME, "persistentVolumeClaim": {"claimName": p.work_claim}}
    if p.work_host_path:
        # Directory, not DirectoryOrCreate: a node without the engine's directory is the
        # wrong node, and a fresh empty directory there would hide that behind missing files.
        return {"name": WORK_VOLUME, "hostPath": {"path": p.work_dir, "type": "Directory"}}
    return None


def build_job(message: Mapping[str, Any], p: JobParams) -> dict[str, Any]:
    """The Job running ``message`` (a HyperFlow task message) once."""
    task_id = str(message.get("taskId") or message.get("name") or "task")
    labels = {naming.MANAGED_BY: naming.MANAGED_BY_VALUE, naming.COMPONENT_LABEL: "job",
              TASK_LABEL: _label_value(task_id), **p.labels}
    env = {"HYPERPOOL_NAMESPACE": p.namespace, "HF_VAR_NAMESPACE": p.namespace,
           # Logs reach `kubectl logs` (and the failure report's tail) as they are written.
           "PYTHONUNBUFFERED": "1", **p.env}
    if p.work_dir:
        env["HYPERPOOL_WORK_DIR"] = p.work_dir
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": p.image,
        "command": ["hyperpool", "execute", "--message-json", json.dumps(dict(message)),
                    "--reply-to", p.reply_to, "--attempt", str(p.attempt),
                    *(["--run-id", p.run_id] if p.run_id else [])],
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "securityContext": restricted_container_security(),
    }
    if p.resources:
        container["resources"] = {k: dict(v) for k, v in p.resources.items()}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "securityContext": restricted_pod_security(),
        "automountServiceAccountToken": False,
    }
    volume = _work_volume(p)
    if volume is not None:
        pod_spec["volumes"] = [volume]
        container["volumeMounts"] = [{"name": WORK_VOLUME, "mountPath": p.work_dir}]
        # Only over the mount: without one the runtime would create the directory as root,
        # which uid 1000 then could not write its logs into.
        container["workingDir"] = p.work_dir
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": p.ttl_seconds,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if p.active_deadline:
        spec["activeDeadlineSeconds"] = p.active_deadline
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(task_id, p.attempt), "namespace": p.namespace,
                     "labels": labels},
        "spec": spec,
    }


def submit_job(api: KubeApi, message: Mapping[str, Any], p: JobParams) -> dict[str, Any]:
    """Create the Job for ``message`` (a second submit of the same attempt fails with 409)."""
    return api.create(build_job(message, p))


def check_volume_claim(api: KubeApi, namespace: str, claim: str) -> str | None:
    """Refuse a work dir claim that does not exist before any task runs (its Jobs' pods would
    sit in Pending forever); ``None``, or a warning when the claim could not be checked."""
    path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}"
    try:
        pvc = api.request("GET", path)
    except ApiError as exc:
        if exc.status == 404:
            raise ConfigError(f"PersistentVolumeClaim {claim!r} not found in namespace "
                              f"{namespace!r}", source="--job-volume-claim") from None
        if exc.status == 0:
            raise ServiceUnavailable(f"cannot check PersistentVolumeClaim {claim!r}: "
                                     f"{exc}") from None
        # e.g. 403: credentials that may create Jobs but not read claims; the Jobs may work.
        return f"cannot check PersistentVolumeClaim {claim!r} in {namespace!r}: {exc}"
    phase = (pvc.get("status") or {}).get("phase")
    if phase == "Lost":
        raise ConfigError(f"PersistentVolumeClaim {claim!r} in namespace {namespace!r} lost "
                          "its volume (phase Lost)", source="--job-volume-claim")
    return None


# -- why a Job failed (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class PodProblem:
    """What the kubelet says is wrong with one task pod."""

    pod: str
    reason: str  # OOMKilled, Error, ErrImageNeverPull, Evicted, DeadlineExceeded, ...
    message: str = ""
    exit_code: int | None = None  # the task container's, once it terminated
    waiting: bool = False  # it never started (still waiting for its image)

    def describe(self) -> str:
        if self.exit_code is not None:
            text = f"exit code {self.exit_code}"
            if self.reason:
                text += f" ({self.reason})"
        else:
            text = self.reason or "failed"
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True)
class JobFailure:
    """A task's Job that will not report: the exit code and note the engine records."""

    exit_code: int
    note: str
    pod: str | None = None  # the pod whose log tail belongs to the report


def _clip(text: Any) -> str:
    line = " ".join(str(text or "").split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3].rstrip() + "..."


def _container_status(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == CONTAINER), None) or (
        statuses[0] if statuses else None)


def pod_problem(pod: Mapping[str, Any]) -> PodProblem | None:
    """The task pod's failure, or ``None`` while it runs, starts normally or succeeded."""
    name = str((pod.get("metadata") or {}).get("name") or "?")
    status = pod.get("status") or {}
    state = (_container_status(pod) or {}).get("state") or {}
    terminated = state.get("terminated")
    if terminated:
        code = int(terminated.get("exitCode") or 0)
        if code == 0:
            return None
        return PodProblem(name, str(terminated.get("reason") or ""),
                          _clip(terminated.get("message")), exit_code=code)
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in PULL_FAILURES:
        return PodProblem(name, str(waiting["reason"]), _clip(waiting.get("message")),
                          waiting=True)
    if status.get("phase") == "Failed":  # evicted, or killed at the deadline before it ran
        return PodProblem(name, str(status.get("reason") or "Failed"),
                          _clip(status.get("message")))
    return None


def _newest_first(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp")
                                          or ""), reverse=True)


def failed_condition(job: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((c for c in (job.get("status") or {}).get("conditions") or []
                 if c.get("type") == "Failed" and c.get("status") == "True"), None)


def job_failure(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> JobFailure | None:
    """Why a Job the Job controller marked ``Failed`` failed, from its pods' status.

    ``None`` while the Job has not failed. The exit code is the task container's when it
    terminated (137 for an OOM kill), else 1; the note names the Job, the Job controller's
    reason (``DeadlineExceeded``, ``BackoffLimitExceeded``) and what the pod says.
    """
    condition = failed_condition(job)
    if condition is None:
        return None
    name = str(job["metadata"]["name"])
    ordered = _newest_first(pods)
    problem = next((pr for p in ordered if (pr := pod_problem(p)) is not None), None)
    note = f"Job {name} failed"
    reason = str(condition.get("reason") or "")
    if reason and not (reason == "BackoffLimitExceeded" and problem is not None):
        # BackoffLimitExceeded only repeats what the pod says (backoffLimit is 0).
        detail = _clip(condition.get("message"))
        note += f" ({reason}: {detail})" if detail else f" ({reason})"
    if problem is not None:
        note += f": pod {problem.pod}: {problem.describe()}"
    elif not ordered:
        note += ": its pod is gone"
    pod = problem.pod if problem else (
        str(ordered[0]["metadata"]["name"]) if ordered else None)
    code = problem.exit_code if problem is not None and problem.exit_code else 1
    return JobFailure(code, note, pod)


def pull_problem(pods: Iterable[Mapping[str, Any]]) -> PodProblem | None:
    """A pod of the Job waiting for an image that is not coming (:data:`PULL_FAILURES`)."""
    for pod in _newest_first(pods):
        problem = pod_problem(pod)
        if problem is not None and problem.waiting:
            return problem
    return None


def creation_failure(name: str, events: list[dict[str, Any]]) -> JobFailure | None:
    """The failure of Job ``name`` whose pod the Job controller cannot create, from its latest
    ``FailedCreate`` event; ``None`` while there is none, or while the reason is a full quota
    (the controller retries, and the pod is created once other pods end)."""
    failed = [e for e in events if e.get("reason") == "FailedCreate"]
    if not failed:
        return None
    latest = max(failed, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    message = str(latest.get("message") or "")
    if "exceeded quota" in message:
        return None
    return JobFailure(1, f"Job {name}: its pod cannot be created: {_clip(message)}")


def pull_failure(name: str, image: str, problem: PodProblem) -> JobFailure:
    """The failure recorded for Job ``name``, given up on because its image cannot be pulled
    (no log to read: the container never started)."""
    return JobFailure(1, f"Job {name}: image {image!r} cannot be pulled: pod {problem.pod}: "
                         f"{problem.describe()}")
