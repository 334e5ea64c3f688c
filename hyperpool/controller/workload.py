"""The pool's Deployment: ``hyperpool worker --queue <queue>`` in the pool's image.

Why it looks the way it does:

* ``terminationGracePeriodSeconds`` is long (600 s) because SIGTERM starts Celery's *warm*
  shutdown: the running task finishes before the pod exits (a scientific task can run minutes);
* the pod runs as non-root with every capability dropped and the runtime's seccomp profile
  (the restricted Pod Security profile), as nothing in a worker needs more;
* rolling updates never surge (``maxSurge: 0``): a pool sized to its quota has no room for extra
  pods, so surge pods would only fail admission;
* ``spec.replicas`` is passed only when the Deployment is created (see
  :mod:`hyperpool.controller.reconcile`); afterwards KEDA owns it;
* placement (``nodeSelector``, ``tolerations``, ``affinity``, ``priorityClassName``),
  ``imagePullSecrets``, ``volumes`` and the worker's ``volumeMounts`` (the workflow's shared
  work dir, usually a PVC) are passed through as written: the API server validates them. The
  pod has no volumes of its own, so no user volume can shadow one (see WorkerPoolSpec); the
  security contexts stay as they are whatever is mounted (a mount may be ``readOnly``);
* the service account token is never mounted: workers do not talk to the Kubernetes API, and
  workload identity does not need it (IRSA's webhook projects its own token, GKE answers from
  the metadata server). A pool-created ServiceAccount (:func:`build_service_account`) carries
  the identity annotations and is owned by the pool, so it goes away with it.
"""

from __future__ import annotations

from typing import Any

from hyperpool.controller import naming
from hyperpool.controller.environment import METRICS_PORT, worker_command, worker_env
from hyperpool.controller.params import PoolParams

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
    if p.volume_mounts:
        container["volumeMounts"] = list(p.volume_mounts)
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
    pod = spec["template"]["spec"]
    if p.priority_class:
        pod["priorityClassName"] = p.priority_class
    if p.service_account:
        pod["serviceAccountName"] = p.service_account
    if p.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in p.image_pull_secrets]
    if p.node_selector:
        pod["nodeSelector"] = dict(p.node_selector)
    if p.tolerations:
        pod["tolerations"] = list(p.tolerations)
    if p.affinity:
        pod["affinity"] = dict(p.affinity)
    if p.volumes:
        pod["volumes"] = list(p.volumes)
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": p.metadata(), "spec": spec}


def build_service_account(p: PoolParams) -> dict[str, Any] | None:
    """The pool's own ServiceAccount (``serviceAccount.create``), else ``None``."""
    if p.service_account_annotations is None or not p.service_account:
        return None
    meta = p.metadata()
    meta["name"] = p.service_account
    if p.service_account_annotations:
        meta["annotations"] = dict(p.service_account_annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta,
            "automountServiceAccountToken": False}
