"""The operator in its own pod on the real node, installed by the chart, with nothing but its
ServiceAccount and RBAC: it reconciles the seed's example WorkerPool with this project's
executor image (the pool's pod runs, the pool is Ready) and unchanged (its image cannot be
pulled here, and the pool says so: Ready=False, PodsFailing, with the kubelet's reason).

KEDA cannot run here, so the test scales the unchanged pool's Deployment to one replica
through the scale subresource, as KEDA's HPA would.
"""

from __future__ import annotations

import uuid

import pytest
import yaml

from hyperpool.controller import naming
from tests.kubernetes.conftest import create_in, wait_for
from tests.kubernetes.helmtool import chart_with_dependencies, helm_binary
from tests.kubernetes.identity import kubectl
from tests.kubernetes.real_node import create_real_namespace, diagnose
from tests.kubernetes.test_chart import CHART, run
from tests.unit.test_controller_support import seed_manifest_text

pytestmark = pytest.mark.kubernetes
OPERATOR_IMAGE = "hyperpool/operator:0.1.0"
EXECUTOR_IMAGE = "hyperpool/executor-generic:0.1.0"


def ready_condition(api, namespace: str, name: str) -> dict:
    pool = api.get(naming.API_VERSION, naming.KIND, namespace, name) or {}
    return next((c for c in (pool.get("status") or {}).get("conditions") or []
                 if c["type"] == "Ready"), {})


def test_chart_installed_operator_runs_pools_and_reports_failing_pods(
        api, crds, kubeconfig, node_services, tmp_path_factory):
    helm = helm_binary()
    chart = chart_with_dependencies(CHART, tmp_path_factory.mktemp("chart"))
    system = create_real_namespace(api, "hc-real-sys")
    pools = create_real_namespace(api, "hc-real-pools")
    release = f"hp-{uuid.uuid4().hex[:6]}"
    try:
        create_in(api, pools, {"apiVersion": "v1", "kind": "ResourceQuota",
                               "metadata": {"name": "pools"},
                               "spec": {"hard": {"requests.cpu": "4", "requests.memory": "8Gi",
                                                 "limits.cpu": "4", "limits.memory": "8Gi"}}})
        out = run(helm, "install", release, str(chart), "--kubeconfig", kubeconfig,
                  "-n", system, "--set", f"image={OPERATOR_IMAGE}",
                  "--set", "imagePullPolicy=Never", "--set", f"watchNamespaces={{{pools}}}",
                  "--set", "operator.interval=3", "--wait", "--timeout", "180s")
        assert out.returncode == 0, out.stdout + out.stderr
        # --wait: the readiness probe (kopf's liveness endpoint) passed in a real container
        (pod,) = api.list("v1", "Pod", system)
        assert pod["spec"]["nodeName"] == "real-node-0"
        assert pod["spec"]["serviceAccountName"] == release

        # 1. the seed's pool with this project's executor image and the node's broker/Redis
        good = yaml.safe_load(seed_manifest_text())
        good["spec"].update(image=EXECUTOR_IMAGE, minReplicaCount=1,
                            rabbitHostname=node_services.rabbit_hostname,
                            redisUrl=node_services.redis_url)
        create_in(api, pools, good)
        waiting = "pool mproject Ready with its pod running"
        try:
            wait_for(lambda: ready_condition(api, pools, "mproject").get("status") == "True"
                     and (api.get("apps/v1", "Deployment", pools, "mproject") or {})
                     .get("status", {}).get("readyReplicas") == 1, timeout=180, what=waiting)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnose(api, kubeconfig, system, pools)}") from None

        # 2. the seed's pool unchanged: its image cannot be pulled here
        bad = yaml.safe_load(seed_manifest_text())
        bad["metadata"]["name"] = "unchanged"
        create_in(api, pools, bad)
        wait_for(lambda: api.get("apps/v1", "Deployment", pools, "unchanged"), timeout=60,
                 what="the unchanged pool's Deployment")
        api.request("PATCH", f"/apis/apps/v1/namespaces/{pools}/deployments/unchanged/scale",
                    body={"spec": {"replicas": 1}},
                    content_type="application/merge-patch+json")
        condition = wait_for(
            lambda: (c := ready_condition(api, pools, "unchanged")).get("reason")
            == "PodsFailing" and c, timeout=180, what="the unchanged pool PodsFailing")
        assert condition["status"] == "False"
        assert "kjanecki/montage2-amqp:latest" in condition["message"], condition
        assert any(r in condition["message"] for r in ("ImagePullBackOff", "ErrImagePull"))
        # the good pool is not affected
        assert ready_condition(api, pools, "mproject")["status"] == "True"

        logs = kubectl(kubeconfig, "-n", system, "logs", pod["metadata"]["name"])
        assert logs.returncode == 0, logs.stderr
        assert "Forbidden" not in logs.stdout and " 403" not in logs.stdout, logs.stdout[-3000:]
        out = run(helm, "uninstall", release, "--kubeconfig", kubeconfig, "-n", system)
        assert out.returncode == 0, out.stderr
    finally:
        for ns in (system, pools):
            api.delete("v1", "Namespace", None, ns)
