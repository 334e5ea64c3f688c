"""Controller restart mid-reconcile, with children deleted and edited while it was down."""

from __future__ import annotations

import copy
import time
import uuid

import pytest
import yaml
from kopf.testing import KopfRunner

from hyperpool.controller.handlers import build_registry
from hyperpool.controller.plan import ControllerConfig
from tests.kubernetes.conftest import INTERVAL, create_in, wait_for
from tests.unit.test_controller_support import seed_manifest_text

pytestmark = pytest.mark.kubernetes
KINDS = [("apps/v1", "Deployment"), ("monitoring.coreos.com/v1", "PrometheusRule"),
         ("keda.sh/v1alpha1", "ScaledObject")]
POOLS = ["mproject", "mdifffit", "mbackground"]


def operator_for(api, namespace: str) -> KopfRunner:
    registry = build_registry(api, ControllerConfig(), interval=INTERVAL, namespaces=[namespace])
    return KopfRunner(["run", "--standalone", "--namespace", namespace], registry=registry,
                      timeout=60)


def children(api, namespace):
    return {kind: sorted(o["metadata"]["name"] for o in api.list(version, kind, namespace))
            for version, kind in KINDS}


def converged(api, namespace) -> bool:
    if any(names != POOLS_SORTED for names in children(api, namespace).values()):
        return False
    scaled = api.get("keda.sh/v1alpha1", "ScaledObject", namespace, "mdifffit")
    if scaled["spec"]["maxReplicaCount"] != 50:
        return False
    pools = api.list("hyperflow.agh.edu.pl/v1", "WorkerPool", namespace)
    return all(any(c["type"] == "Ready" and c["status"] == "True"
                   for c in (p.get("status") or {}).get("conditions") or []) for p in pools)


POOLS_SORTED = sorted(POOLS)


def resource_versions(api, namespace) -> dict[str, str]:
    """Every child's and pool's resourceVersion: any write changes one."""
    kinds = [*KINDS, ("hyperflow.agh.edu.pl/v1", "WorkerPool")]
    return {f"{kind}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
            for version, kind in kinds for o in api.list(version, kind, namespace)}


def test_restart_mid_reconcile_and_drift_converge(api, crds, kubeconfig):
    namespace = f"hr-{uuid.uuid4().hex[:8]}"
    api.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": namespace}})
    try:
        seed = yaml.safe_load(seed_manifest_text())
        for name, task_type in zip(POOLS, ["mProject", "mDiffFit", "mBackground"], strict=True):
            manifest = copy.deepcopy(seed)
            manifest["metadata"]["name"] = name
            manifest["spec"]["taskType"] = task_type
            create_in(api, namespace, manifest)
        with operator_for(api, namespace):
            # stop as soon as the first child exists: mid-reconcile
            wait_for(lambda: any(children(api, namespace).values()), what="first child")
        first = children(api, namespace)
        # drift while no operator runs: a child deleted, another edited by hand
        if "mproject" in first["Deployment"]:
            api.delete("apps/v1", "Deployment", namespace, "mproject")
        if "mdifffit" in first["ScaledObject"]:
            api.request("PATCH", f"/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects/"
                        "mdifffit", body={"spec": {"maxReplicaCount": 7}},
                        content_type="application/merge-patch+json")
        with operator_for(api, namespace):
            wait_for(lambda: converged(api, namespace), timeout=60, what="convergence")
            time.sleep(INTERVAL * 1.5)
            before = resource_versions(api, namespace)
            time.sleep(INTERVAL * 3 + 1)
            assert resource_versions(api, namespace) == before  # no flapping
            assert converged(api, namespace)  # and no duplicates: exactly one child each
    finally:
        api.delete("v1", "Namespace", None, namespace)
