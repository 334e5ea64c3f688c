"""The pool's Deployment: ``hyperpool worker --queue <queue>`` in the pool's image.

Why it looks the way it does:

* ``terminationGracePeriodSeconds`` is long (600 s) because SIGTERM starts Celery's *warm*
  shutdown: the running task finishes before the pod exits (a scientific task can run minutes);
* the pod runs as non-root with every capability dropped and the runtime's seccomp profile
  (the restricted Pod Security profile), as nothing in a worker needs more;
* rolling updates never surge (``maxSurge: 0``): a pool sized to its quota has no room for extra
  pods, so surge pods would only fail admission;
* ``spec.replicas`` is passed only when the Deployment is created (see
  :mod:`hyperpool.controller.reconcile`); afterwards KEDA owns it.
"""

from __future__ import annotations

from typing import Any

from hyperpool.controller import naming
from hyperpool.controller.params import METRICS_PORT, PoolParams, worker_command, worker_env

WORKER_UID = 1000


def restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": WORKER_UID,
        "runAsGroup": WORKER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def build_deployment(p: PoolParams, *, replicas: int | None = None) -> dict[str, Any]:
    """The Deployment child; ``replicas`` only when creating it (``None``: leave to KEDA)."""
    labels = {**naming.child_labels(p.pool_name), **naming.selector_labels(p.pool_name)}
    container: dict[str, Any] = {
        "name": "worker",
        "image": p.image,
        "command": worker_command(p),
        "env": worker_env(p),
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "securityContext": restricted_container_security(),
    }
    if p.resources:
        container["resources"] = p.resources
    spec: dict[str, Any] = {
        "selector": {"matchLabels": naming.selector_labels(p.pool_name)},
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "25%"}},
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "containers": [container],
                "terminationGracePeriodSeconds": p.termination_grace,
                "securityContext": restricted_pod_security(),
                "automountServiceAccountToken": False,
            },
        },
    }
    if p.priority_class:
        spec["template"]["spec"]["priorityClassName"] = p.priority_class
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": p.metadata(), "spec": spec}
