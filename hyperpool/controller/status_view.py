"""WorkerPools as ``hyperpool status --kubeconfig`` shows them: spec, replicas, conditions.

Read-only: one LIST of WorkerPools in the namespace (the operator keeps their status current,
including the Deployment's replicas and the Ready condition with its reason).
"""

from __future__ import annotations

from typing import Any

from hyperpool.controller import naming
from hyperpool.controller.api import ApiError, KubeApi
from hyperpool.errors import ServiceUnavailable


def cluster_pools(namespace: str, kubeconfig: str | None) -> list[dict[str, Any]]:
    """One row per WorkerPool of ``namespace``."""
    try:
        api = KubeApi.from_config(kubeconfig)
        pools = api.list(f"{naming.GROUP}/{naming.VERSION}", naming.KIND, namespace)
    except ApiError as exc:
        raise ServiceUnavailable(f"cannot list WorkerPools in {namespace!r}: {exc}") from None
    except Exception as exc:  # kubeconfig problems surface as assorted client errors
        raise ServiceUnavailable(f"cannot use the kubeconfig {kubeconfig or '$KUBECONFIG'}: "
                                 f"{exc}") from None
    rows = []
    for pool in pools:
        spec, status = pool.get("spec") or {}, pool.get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"),
                     {})
        rows.append({
            "name": pool["metadata"]["name"], "task_type": spec.get("taskType"),
            "queue": status.get("queue"), "min": spec.get("minReplicaCount"),
            "max": spec.get("maxReplicaCount"), "max_by_quota": status.get("maxReplicas"),
            "replicas": status.get("replicas"), "ready_replicas": status.get("readyReplicas"),
            "ready": ready.get("status"), "reason": ready.get("reason"),
            "message": ready.get("message"),
        })
    return rows
