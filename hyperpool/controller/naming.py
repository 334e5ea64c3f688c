"""Names, labels and owner references every child of a WorkerPool carries.

Children are named after their pool (as in the HyperFlow operator), but KEDA names the HPA it
creates ``keda-hpa-<name>`` and the HPA/Deployment names end up in label values (≤ 63
characters) and pod names, so a child name is capped at :data:`MAX_CHILD_NAME` characters:
longer pool names are truncated and suffixed with a stable hash so two long names that share a
prefix never collide.
"""

from __future__ import annotations

import hashlib
from typing import Any

GROUP = "hyperflow.agh.edu.pl"
VERSION = "v1"
KIND = "WorkerPool"
PLURAL = "workerpools"
API_VERSION = f"{GROUP}/{VERSION}"

FIELD_MANAGER = "hyperpool-controller"
# Owns ``spec.replicas`` of a freshly created Deployment so the main manager never does (see
# :mod:`hyperpool.controller.reconcile`); KEDA's HPA takes it over from there.
HANDOVER_MANAGER = "hyperpool-controller-handover"

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "hyperpool"
POOL_LABEL = f"{GROUP}/pool"
COMPONENT_LABEL = "app.kubernetes.io/component"

MAX_CHILD_NAME = 54
_HASH_CHARS = 8


def child_name(pool_name: str) -> str:
    """The name of a pool's Deployment, PrometheusRule and ScaledObject (≤ 54 characters)."""
    if len(pool_name) <= MAX_CHILD_NAME:
        return pool_name
    digest = hashlib.sha256(pool_name.encode()).hexdigest()[:_HASH_CHARS]
    head = pool_name[: MAX_CHILD_NAME - _HASH_CHARS - 1].rstrip("-.")
    return f"{head}-{digest}"


def child_labels(pool_name: str) -> dict[str, str]:
    """Labels on every child (and the worker pods): who manages it, which pool it serves."""
    return {MANAGED_BY: MANAGED_BY_VALUE, POOL_LABEL: child_name(pool_name)}


def selector_labels(pool_name: str) -> dict[str, str]:
    """The Deployment's (immutable) selector: the pool label plus the worker component."""
    return {POOL_LABEL: child_name(pool_name), COMPONENT_LABEL: "worker"}


def owner_reference(pool_name: str, uid: str) -> dict[str, Any]:
    """A controller owner reference to a WorkerPool: deleting the pool deletes the child.

    ``blockOwnerDeletion`` makes foreground deletion of the pool wait for its children.
    """
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": pool_name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
