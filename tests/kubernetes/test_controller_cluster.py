"""The controller against a real kube-apiserver + controller-manager (v1.20.2).

What a unit test cannot show: the API server accepts the CRD and the seed's manifest, server-
side apply really is a no-op on unchanged children, the field manager really does not own
``spec.replicas``, the garbage collector deletes children via ownerReferences, and the quota
admission really rejects pods beyond the quota (mirrored as QuotaLimited).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
import yaml

from hyperpool.controller import naming
from hyperpool.controller.api import KubeApi, resource_path
from tests.kubernetes.conftest import INTERVAL, create_in, wait_for
from tests.unit.test_controller_support import schema_errors, seed_manifest_text

pytestmark = pytest.mark.kubernetes

CHILDREN = [("apps/v1", "Deployment"), ("monitoring.coreos.com/v1", "PrometheusRule"),
            ("keda.sh/v1alpha1", "ScaledObject")]
POOL = ("hyperflow.agh.edu.pl/v1", "WorkerPool")


def pool_of(api: KubeApi, ns: str, name: str = "mproject") -> dict[str, Any]:
    return api.get(*POOL, ns, name) or {}


def ready(api: KubeApi, ns: str, name: str = "mproject", reason: str | None = None) -> Any:
    pool = pool_of(api, ns, name)
    status = pool.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond["type"] == "Ready" and cond.get("observedGeneration") == \
                pool["metadata"]["generation"] and (reason is None or cond["reason"] == reason):
            return cond
    return None


def children(api: KubeApi, ns: str, name: str = "mproject") -> dict[str, dict | None]:
    return {kind: api.get(version, kind, ns, name) for version, kind in CHILDREN}


def resource_versions(api: KubeApi, ns: str) -> dict[str, str]:
    found = {kind: (obj or {}).get("metadata", {}).get("resourceVersion")
             for kind, obj in children(api, ns).items()}
    found["WorkerPool"] = pool_of(api, ns)["metadata"]["resourceVersion"]
    return found


def as_applied(obj: dict[str, Any]) -> dict[str, Any]:
    """A served object without what the server adds, to validate against the CRD schema."""
    obj = copy.deepcopy(obj)
    obj.pop("status", None)
    obj["metadata"] = {"name": obj["metadata"]["name"]}
    return obj


def test_seed_manifest_gets_valid_children_and_ready(api, namespace):
    manifest = yaml.safe_load(seed_manifest_text())  # exactly the seed's text
    created = create_in(api, namespace, manifest)
    assert created["spec"]["minReplicaCount"] == 0 and created["spec"]["maxReplicaCount"] == 50
    found = wait_for(lambda: all((c := children(api, namespace)).values()) and c,
                     what="three children")
    cond = wait_for(lambda: ready(api, namespace), what="Ready condition")
    assert (cond["status"], cond["reason"]) == ("True", "NoResourceQuota")
    pool = pool_of(api, namespace)
    assert pool["status"]["queue"] == f"{namespace}.mProject"
    for obj in found.values():
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["uid"] == pool["metadata"]["uid"] and owner["controller"]
        assert obj["metadata"]["labels"][naming.POOL_LABEL] == "mproject"
    assert schema_errors("ScaledObject", as_applied(found["ScaledObject"])) == []
    assert schema_errors("PrometheusRule", as_applied(found["PrometheusRule"])) == []
    dep = found["Deployment"]
    assert dep["spec"]["replicas"] == 0
    owners = {m["manager"]: m for m in dep["metadata"]["managedFields"]}
    ours = owners[naming.FIELD_MANAGER]
    assert ours["operation"] == "Apply"
    assert "f:replicas" not in ours["fieldsV1"]["f:spec"]
    assert "f:replicas" in owners[naming.HANDOVER_MANAGER]["fieldsV1"]["f:spec"]


def test_steady_state_makes_no_writes(api, namespace):
    create_in(api, namespace, yaml.safe_load(seed_manifest_text()))
    wait_for(lambda: ready(api, namespace), what="Ready")
    time.sleep(INTERVAL * 1.5)  # let the first timer runs settle
    before = resource_versions(api, namespace)
    time.sleep(INTERVAL * 3 + 1)
    assert resource_versions(api, namespace) == before


def test_quota_caps_max_and_pods_beyond_it_are_reported(api, namespace):
    create_in(api, namespace, {"apiVersion": "v1", "kind": "ResourceQuota",
                               "metadata": {"name": "compute"},
                               "spec": {"hard": {"requests.cpu": "1", "limits.cpu": "1",
                                                 "pods": "10"}}})
    wait_for(lambda: (api.get("v1", "ResourceQuota", namespace, "compute") or {})
             .get("status", {}).get("hard"), what="quota status")
    create_in(api, namespace, yaml.safe_load(seed_manifest_text()))
    cond = wait_for(lambda: ready(api, namespace, reason="QuotaLimited"), what="QuotaLimited")
    assert "capped to 2" in cond["message"]
    so = wait_for(lambda: api.get("keda.sh/v1alpha1", "ScaledObject", namespace, "mproject"))
    assert so["spec"]["maxReplicaCount"] == 2
    # Play KEDA's HPA: scale beyond the quota through the scale subresource.
    api.request("PATCH", resource_path("apps/v1", "Deployment", namespace, "mproject", "scale"),
                body={"spec": {"replicas": 4}}, content_type="application/merge-patch+json")
    cond = wait_for(lambda: (c := ready(api, namespace, reason="QuotaLimited"))
                    and "exceeded quota" in c["message"] and c, timeout=60,
                    what="exceeded quota mirrored")
    assert cond["status"] == "True"
    # The controller never takes replicas back from the autoscaler.
    time.sleep(INTERVAL * 2)
    assert api.get("apps/v1", "Deployment", namespace, "mproject")["spec"]["replicas"] == 4


def test_spec_edits_reach_the_children(api, namespace):
    create_in(api, namespace, yaml.safe_load(seed_manifest_text()))
    wait_for(lambda: ready(api, namespace), what="Ready")
    api.request("PATCH", resource_path(*POOL, namespace, "mproject"),
                body={"spec": {"image": "example/other:2", "maxReplicaCount": 7,
                               "queueName": "custom"}},
                content_type="application/merge-patch+json")

    def updated() -> bool:
        found = children(api, namespace)
        container = found["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        return (container["image"] == "example/other:2" and container["command"][-1] == "custom"
                and found["ScaledObject"]["spec"]["maxReplicaCount"] == 7)

    wait_for(updated, what="children updated")
    assert wait_for(lambda: ready(api, namespace))["observedGeneration"] == 2


def test_deleted_children_come_back(api, namespace):
    create_in(api, namespace, yaml.safe_load(seed_manifest_text()))
    wait_for(lambda: ready(api, namespace), what="Ready")
    for version, kind in CHILDREN:
        api.delete(version, kind, namespace, "mproject")
    wait_for(lambda: all(children(api, namespace).values()), timeout=INTERVAL * 5 + 10,
             what="children recreated")
    assert api.get("apps/v1", "Deployment", namespace, "mproject")["spec"]["replicas"] == 0


def test_deleting_the_pool_garbage_collects_children(api, namespace):
    create_in(api, namespace, yaml.safe_load(seed_manifest_text()))
    wait_for(lambda: all(children(api, namespace).values()), what="children")
    api.delete(*POOL, namespace, "mproject")
    wait_for(lambda: not any(children(api, namespace).values()), timeout=60,
             what="garbage collection")


def test_min_above_max_is_invalid_spec(api, namespace):
    manifest = yaml.safe_load(seed_manifest_text())
    manifest["spec"].update(minReplicaCount=5, maxReplicaCount=2)
    create_in(api, namespace, manifest)
    cond = wait_for(lambda: ready(api, namespace, reason="InvalidSpec"), what="InvalidSpec")
    assert cond["status"] == "False" and "minReplicaCount (5)" in cond["message"]
    assert not any(children(api, namespace).values())
