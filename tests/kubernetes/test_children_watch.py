"""Children are watched: a deleted or edited child is put back at once, not by the repair pass.

The operator here repairs only every hour, so whatever comes back within the test's bound came
from the watch on Deployments, ScaledObjects and PrometheusRules (a deleted Deployment once
waited 26 s for the repair timer).
"""

from __future__ import annotations

import uuid

import pytest
from kopf.testing import KopfRunner

from hyperpool.controller.handlers import build_registry
from hyperpool.controller.plan import ControllerConfig
from tests.kubernetes.conftest import create_in, wait_for
from tests.unit.test_controller_support import seed_pool

pytestmark = pytest.mark.kubernetes
NO_REPAIR_PASS = 3600.0


def test_a_deleted_or_edited_child_is_put_back_at_once(api, crds):
    namespace = f"hw-{uuid.uuid4().hex[:8]}"
    api.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": namespace}})
    registry = build_registry(api, ControllerConfig(), interval=NO_REPAIR_PASS,
                              namespaces=[namespace])
    runner = KopfRunner(["run", "--standalone", "--namespace", namespace], registry=registry,
                        timeout=60)
    try:
        with runner:
            pool = seed_pool(namespace=namespace)
            for key in ("uid", "generation"):
                pool["metadata"].pop(key)
            create_in(api, namespace, pool)
            wait_for(lambda: api.get("apps/v1", "Deployment", namespace, "mproject"),
                     what="the Deployment")
            first = api.get("apps/v1", "Deployment", namespace, "mproject")["metadata"]["uid"]
            api.delete("apps/v1", "Deployment", namespace, "mproject")
            wait_for(lambda: (api.get("apps/v1", "Deployment", namespace, "mproject") or {})
                     .get("metadata", {}).get("uid") not in (None, first), timeout=20,
                     what="the deleted Deployment back")
            scaled = wait_for(lambda: api.get("keda.sh/v1alpha1", "ScaledObject", namespace,
                                              "mproject"), what="the ScaledObject")
            want = scaled["spec"]["maxReplicaCount"]
            api.request("PATCH", f"/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects/"
                        "mproject", body={"spec": {"maxReplicaCount": want + 7}},
                        content_type="application/merge-patch+json")
            wait_for(lambda: api.get("keda.sh/v1alpha1", "ScaledObject", namespace,
                                     "mproject")["spec"]["maxReplicaCount"] == want,
                     timeout=20, what="the edited ScaledObject reverted")
            rule = api.get("monitoring.coreos.com/v1", "PrometheusRule", namespace, "mproject")
            api.delete("monitoring.coreos.com/v1", "PrometheusRule", namespace, "mproject")
            wait_for(lambda: (api.get("monitoring.coreos.com/v1", "PrometheusRule", namespace,
                                      "mproject") or {}).get("metadata", {}).get("uid")
                     not in (None, rule["metadata"]["uid"]), timeout=20,
                     what="the deleted PrometheusRule back")
        assert runner.exception is None, runner.output[-4000:]
        # no finalizer or kopf annotation was put on a child
        for version, kind in [("apps/v1", "Deployment"), ("keda.sh/v1alpha1", "ScaledObject")]:
            meta = api.get(version, kind, namespace, "mproject")["metadata"]
            assert not meta.get("finalizers"), (kind, meta.get("finalizers"))
            assert not any(k.startswith("kopf.") for k in meta.get("annotations") or {})
    finally:
        api.delete("v1", "Namespace", None, namespace)
