"""Beyond-the-seed fields and namespaces on the real API server.

The server (not just a schema) accepts what every new field produces, quota admission knows
``requests.nvidia.com/gpu``, re-applies stay no-ops (canonical quantities, SA fields other
managers own), and two namespaces may hold pools of the same name without their children,
queues or recorded series colliding.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator

import pytest
import yaml

from hyperpool.controller import naming
from tests.kubernetes.conftest import INTERVAL, create_in, wait_for
from tests.unit.test_controller_fields import FULL_SPEC
from tests.unit.test_controller_support import seed_manifest_text

pytestmark = pytest.mark.kubernetes
CHILDREN = [("apps/v1", "Deployment"), ("keda.sh/v1alpha1", "ScaledObject"),
            ("monitoring.coreos.com/v1", "PrometheusRule")]
PASSWORD = f"pw-{uuid.uuid4().hex}"


def ready(api, namespace: str, name: str = "mproject", reason: str | None = None):
    pool = api.get(naming.API_VERSION, naming.KIND, namespace, name) or {}
    for cond in (pool.get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready" and (reason is None or cond["reason"] == reason) and \
                cond.get("observedGeneration") == pool["metadata"]["generation"]:
            return cond
    return None


def versions(api, namespace: str) -> dict[str, str]:
    kinds = [*CHILDREN, ("v1", "ServiceAccount"), (naming.API_VERSION, naming.KIND)]
    return {f"{kind}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
            for version, kind in kinds for o in api.list(version, kind, namespace)
            if kind != "ServiceAccount" or o["metadata"]["name"] != "default"}


def test_every_new_field_is_accepted_and_steady(api, namespace):
    create_in(api, namespace, {"apiVersion": "v1", "kind": "ResourceQuota",
                               "metadata": {"name": "gpus"},
                               "spec": {"hard": {"requests.nvidia.com/gpu": "2",
                                                 "requests.cpu": "64"}}})
    wait_for(lambda: (api.get("v1", "ResourceQuota", namespace, "gpus") or {})
             .get("status", {}).get("hard"), what="quota status")
    create_in(api, namespace, {"apiVersion": "v1", "kind": "Secret",
                               "metadata": {"name": "rabbitmq"},
                               "stringData": {"rabbitmq-password": PASSWORD}})
    pool = yaml.safe_load(seed_manifest_text())
    pool["spec"].update(copy.deepcopy(FULL_SPEC))
    create_in(api, namespace, pool)
    cond = wait_for(lambda: ready(api, namespace, reason="QuotaLimited"), what="QuotaLimited")
    assert cond["status"] == "True" and "holds 2 pods" in cond["message"]
    dep = api.get("apps/v1", "Deployment", namespace, "mproject")
    pod = dep["spec"]["template"]["spec"]
    for field in ("nodeSelector", "tolerations", "affinity", "priorityClassName",
                  "imagePullSecrets", "terminationGracePeriodSeconds", "volumes"):
        assert pod[field] == FULL_SPEC[field], field
    assert pod["serviceAccountName"] == "montage-worker"
    container = pod["containers"][0]
    assert container["volumeMounts"] == FULL_SPEC["volumeMounts"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["command"][-2:] == ["-c", "4"]
    so = api.get("keda.sh/v1alpha1", "ScaledObject", namespace, "mproject")
    assert so["spec"]["maxReplicaCount"] == 2
    assert [t["type"] for t in so["spec"]["triggers"]] == ["prometheus", "cron"]
    account = api.get("v1", "ServiceAccount", namespace, "montage-worker")
    assert account["metadata"]["annotations"] == FULL_SPEC["serviceAccount"]["annotations"]
    assert account["metadata"]["ownerReferences"][0]["kind"] == "WorkerPool"
    time.sleep(INTERVAL * 1.5)
    before = versions(api, namespace)
    time.sleep(INTERVAL * 3 + 1)
    assert versions(api, namespace) == before  # no writes in a steady state
    served = [api.get(v, k, namespace, "mproject") for v, k in CHILDREN]
    served.append(api.get(naming.API_VERSION, naming.KIND, namespace, "mproject"))
    assert PASSWORD not in json.dumps(served)
    # deleting the pool takes its own ServiceAccount along (ownerReferences)
    api.delete(naming.API_VERSION, naming.KIND, namespace, "mproject")
    wait_for(lambda: api.get("v1", "ServiceAccount", namespace, "montage-worker") is None,
             timeout=60, what="ServiceAccount garbage-collected")


@pytest.fixture
def second_namespace(api, operator) -> Iterator[str]:
    name = f"hp-{uuid.uuid4().hex[:8]}"
    api.request("POST", "/api/v1/namespaces",
                body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    api.delete("v1", "Namespace", None, name)


def test_same_pool_name_in_two_namespaces_never_collides(api, namespace, second_namespace):
    for ns in (namespace, second_namespace):
        create_in(api, ns, yaml.safe_load(seed_manifest_text()))
    for ns in (namespace, second_namespace):
        wait_for(lambda ns=ns: ready(api, ns), what=f"Ready in {ns}")
    seen_queries = set()
    for ns in (namespace, second_namespace):
        pool = api.get(naming.API_VERSION, naming.KIND, ns, "mproject")
        assert pool["status"]["queue"] == f"{ns}.mProject"
        children = {kind: api.get(version, kind, ns, "mproject") for version, kind in CHILDREN}
        for child in children.values():
            assert child["metadata"]["ownerReferences"][0]["uid"] == pool["metadata"]["uid"]
        container = children["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][-1] == f"{ns}.mProject"
        query = children["ScaledObject"]["spec"]["triggers"][0]["metadata"]["query"]
        assert f'namespace="{ns}"' in query
        seen_queries.add(query)
        for rule in children["PrometheusRule"]["spec"]["groups"][0]["rules"]:
            assert rule["labels"]["namespace"] == ns
    assert len(seen_queries) == 2
    api.delete(naming.API_VERSION, naming.KIND, namespace, "mproject")
    wait_for(lambda: api.get("apps/v1", "Deployment", namespace, "mproject") is None,
             timeout=60, what="first namespace's children collected")
    assert api.get("apps/v1", "Deployment", second_namespace, "mproject")
    assert ready(api, second_namespace)
