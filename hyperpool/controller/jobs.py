"""The in-cluster job model: one ``batch/v1`` Job per task message.

Tasks not listed in ``executionModels.json`` run as a fresh ``hyperpool execute`` process; on
Kubernetes that process is a Job's only pod. The Job never retries by itself
(``backoffLimit: 0``): the engine owns retries and reads the result from the completion stream
(``--reply-to``), so a Kubernetes-level retry would run the task twice behind its back.
``ttlSecondsAfterFinished`` lets the TTL controller clean finished Jobs up (beta since 1.21;
on 1.20 the field needs the TTLAfterFinished feature gate and is otherwise dropped, so the
engine should also delete Jobs it has seen complete).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hyperpool.controller import naming
from hyperpool.controller.api import KubeApi
from hyperpool.controller.workload import restricted_container_security, restricted_pod_security

TASK_LABEL = f"{naming.GROUP}/task-id"
DEFAULT_TTL = 600


@dataclass(frozen=True)
class JobParams:
    """Where and how one task message runs as a Job."""

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


def _label_value(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63].strip("-_.")
    return value or "task"


def job_name(task_id: str, attempt: int) -> str:
    """A DNS-label name unique per task attempt (``hf-task-<hash>-<attempt>``)."""
    digest = hashlib.sha256(task_id.encode()).hexdigest()[:16]
    return f"hf-task-{digest}-{attempt}"


def build_job(message: Mapping[str, Any], p: JobParams) -> dict[str, Any]:
    """The Job running ``message`` (a HyperFlow task message) once."""
    task_id = str(message.get("taskId") or message.get("name") or "task")
    labels = {naming.MANAGED_BY: naming.MANAGED_BY_VALUE, naming.COMPONENT_LABEL: "job",
              TASK_LABEL: _label_value(task_id), **p.labels}
    container: dict[str, Any] = {
        "name": "task",
        "image": p.image,
        "command": ["hyperpool", "execute", "--message-json", json.dumps(dict(message)),
                    "--reply-to", p.reply_to, "--attempt", str(p.attempt),
                    *(["--run-id", p.run_id] if p.run_id else [])],
        "env": [{"name": k, "value": v} for k, v in sorted(
            {"HYPERPOOL_NAMESPACE": p.namespace, "HF_VAR_NAMESPACE": p.namespace,
             **p.env}.items())],
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
