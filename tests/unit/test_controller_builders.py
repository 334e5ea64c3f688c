"""Pure builders: the CRD accepts the seed's manifest, children validate against their schemas."""

from __future__ import annotations

from decimal import Decimal

import jsonschema
import kubernetes_validate
import pytest
import yaml

from hyperpool.controller import naming
from hyperpool.controller.jobs import JobParams, build_job, job_name
from hyperpool.controller.plan import ControllerConfig, plan
from hyperpool.controller.quota import pool_budget, pools_usage
from hyperpool.controller.scaler import PAUSED_ANNOTATION
from hyperpool.quantities import QUANTITY_PATTERN
from tests.unit.test_controller_support import (
    OUR_CRD,
    REPO,
    crd_schema,
    design_document_manifest,
    load_crds,
    make_pool,
    schema_errors,
    seed_manifest_text,
    seed_pool,
)

K8S_VERSION = kubernetes_validate.utils.all_versions()[0]  # closest to the 1.20 target
CONFIG = ControllerConfig()
QUOTA = [{"status": {"hard": {"requests.cpu": "4", "requests.memory": "8Gi", "pods": "20"},
                     "used": {"requests.cpu": "1", "requests.memory": "1Gi", "pods": "2"}}}]


def children(pool: dict, quotas: list | None = QUOTA, config: ControllerConfig = CONFIG) -> dict:
    budget = None if quotas is None else pool_budget(quotas, {})
    result = plan(pool, budget, config=config)
    return {c["kind"]: c for c in result.children} | {"_plan": result}


def k8s_valid(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# -- the CRD ---------------------------------------------------------------------------------


def test_the_example_manifest_is_the_design_documents():
    """The tests' copy of the operator's example WorkerPool is the design document's, byte for
    byte (skipped without the reference data; CI always has it)."""
    assert seed_manifest_text() == design_document_manifest()


def test_seed_manifest_passes_the_crd_schema_unchanged():
    manifest = yaml.safe_load(seed_manifest_text())
    assert schema_errors("WorkerPool", manifest) == []


@pytest.mark.parametrize("patch, where", [
    ({"minReplicaCount": -1}, "minReplicaCount"),
    ({"maxReplicaCount": "5"}, "maxReplicaCount"),
    ({"initialResources": {"requests": {"memory": "1 GB"}}}, "memory"),
    ({"initialResources": {"requests": {"cpu": "-1"}}}, "cpu"),
    ({"taskType": ""}, "taskType"),
])
def test_crd_schema_rejects_bad_fields(patch, where):
    manifest = yaml.safe_load(seed_manifest_text())
    manifest["spec"].update(patch)
    errors = schema_errors("WorkerPool", manifest)
    assert errors and any(where in e for e in errors), errors


def test_crd_requires_task_type_and_image_and_allows_integer_quantities():
    manifest = yaml.safe_load(seed_manifest_text())
    del manifest["spec"]["image"]
    assert any("image" in e for e in schema_errors("WorkerPool", manifest))
    manifest = yaml.safe_load(seed_manifest_text())
    manifest["spec"]["initialResources"]["requests"] = {"cpu": 1, "memory": 524288000}
    assert schema_errors("WorkerPool", manifest) == []


def test_crd_shape():
    crd = load_crds(OUR_CRD)["WorkerPool"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["spec"]["group"] == naming.GROUP and crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["shortNames"] == ["wp"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1" and version["subresources"] == {"status": {}}
    spec = crd_schema("WorkerPool")["properties"]["spec"]
    assert spec["required"] == ["taskType", "image"]
    assert spec["properties"]["minReplicaCount"]["default"] == 0
    assert spec["properties"]["maxReplicaCount"]["default"] == 50
    cpu = spec["properties"]["initialResources"]["properties"]["requests"]["properties"]["cpu"]
    assert cpu["pattern"] == QUANTITY_PATTERN and cpu["x-kubernetes-int-or-string"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Replicas"] == ".status.replicas" and columns["Queue"] == ".status.queue"
    jsonschema.Draft7Validator.check_schema(crd_schema("WorkerPool"))


# -- children --------------------------------------------------------------------------------


def test_seed_pool_children_are_valid_and_owned():
    built = children(seed_pool())
    for kind in ("Deployment", "PrometheusRule", "ScaledObject"):
        obj = built[kind]
        assert obj["metadata"]["name"] == "mproject"
        assert obj["metadata"]["labels"] == {naming.MANAGED_BY: "hyperpool",
                                             naming.POOL_LABEL: "mproject"}
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {"apiVersion": "hyperflow.agh.edu.pl/v1", "kind": "WorkerPool",
                         "name": "mproject", "uid": "uid-1", "controller": True,
                         "blockOwnerDeletion": True}
    k8s_valid(built["Deployment"])
    assert schema_errors("PrometheusRule", built["PrometheusRule"]) == []
    assert schema_errors("ScaledObject", built["ScaledObject"]) == []


def test_deployment_runs_the_worker_safely_and_leaves_replicas_to_keda():
    dep = children(seed_pool())["Deployment"]
    assert "replicas" not in dep["spec"]
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["hyperpool", "worker", "--queue", "default.mProject"]
    assert container["image"] == "kjanecki/montage2-amqp:latest"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "HYPERPOOL_BROKER_URL": "amqp://guest:guest@rabbitmq.default//",
        "RABBIT_HOSTNAME": "rabbitmq.default",
        "HYPERPOOL_REDIS_URL": "redis://redis:6379", "REDIS_URL": "redis://redis:6379",
        "HYPERPOOL_QUEUE": "default.mProject", "QUEUE_NAME": "default.mProject",
        "HYPERPOOL_NAMESPACE": "default", "HF_VAR_NAMESPACE": "default",
        "HYPERPOOL_METRICS_PORT": "9100",
    }
    assert container["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    # the API server's canonical text of "0.5" / "524288000", so re-applies are no-ops
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "524288k"},
                                      "limits": {"cpu": "500m", "memory": "524288k"}}
    sec = container["securityContext"]
    assert sec["runAsNonRoot"] and not sec["allowPrivilegeEscalation"]
    assert sec["capabilities"] == {"drop": ["ALL"]}
    assert sec["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["terminationGracePeriodSeconds"] == 600
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_scaled_object_queries_the_pool_series_and_is_capped_by_quota():
    built = children(seed_pool())
    so = built["ScaledObject"]["spec"]
    # 4 - 1 cores left at 0.5 per pod -> 6 pods; the spec says 50.
    assert (so["minReplicaCount"], so["maxReplicaCount"]) == (0, 6)
    assert so["cooldownPeriod"] >= 600
    assert so["fallback"] == {"failureThreshold": 3, "replicas": 1}
    (trigger,) = so["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"] == {
        "serverAddress": "http://monitoring-prometheus.default:9090",
        "query": 'sum(hyperpool_workerpool_desired_replicas{namespace="default",pool="mproject"})',
        "threshold": "1", "ignoreNullValues": "false"}
    assert so["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "mproject"}
    assert [f.reason for f in built["_plan"].findings] == ["QuotaLimited"]


def test_no_resource_quota_keeps_spec_max_and_says_so():
    built = children(seed_pool(), quotas=None)
    assert built["ScaledObject"]["spec"]["maxReplicaCount"] == 50
    assert [f.reason for f in built["_plan"].findings] == ["NoResourceQuota"]


def test_quota_counts_pools_own_pods_back_into_the_budget():
    dep = children(seed_pool())["Deployment"]
    dep["status"] = {"replicas": 4}
    usage = pools_usage([dep])
    assert usage["requests.cpu"] == Decimal(2) and usage["pods"] == 4
    quota = [{"status": {"hard": {"requests.cpu": "4"}, "used": {"requests.cpu": "3"}}}]
    assert pool_budget(quota, usage) == {"requests.cpu": Decimal(3)}


@pytest.mark.parametrize("spec_min, spec_max, quota_cpu, expect", [
    (0, 0, "4", (0, 1, True)),       # switched off: paused, schema still valid (max >= 1)
    (5, 10, "1", (2, 2, False)),     # min above what the quota holds: min capped too
    (0, 10, "0", (0, 1, False)),     # quota exhausted: KEDA's minimum of 1
    (2, 3, "100", (2, 3, False)),
])
def test_scaler_bounds_stay_valid(spec_min, spec_max, quota_cpu, expect):
    pool = seed_pool()
    pool["spec"].update(minReplicaCount=spec_min, maxReplicaCount=spec_max)
    quota = [{"status": {"hard": {"requests.cpu": quota_cpu}, "used": {}}}]
    so = children(pool, quotas=quota)["ScaledObject"]
    paused = PAUSED_ANNOTATION in so["metadata"].get("annotations", {})
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"], paused) == expect
    assert schema_errors("ScaledObject", so) == []


def test_invalid_spec_is_reported_not_applied():
    pool = seed_pool()
    pool["spec"].update(minReplicaCount=7, maxReplicaCount=3)
    result = plan(pool, None, config=CONFIG)
    assert result.invalid and result.children == []
    assert "minReplicaCount (7) must not exceed maxReplicaCount (3)" in result.findings[0].message


def test_prometheus_url_falls_back_to_the_controller_default():
    pool = make_pool("p", {"taskType": "t", "image": "img"})
    assert plan(pool, None, config=CONFIG).invalid
    result = plan(pool, None, config=ControllerConfig(default_prometheus_url="http://prom:9090"))
    assert not result.invalid
    assert result.queue == "ns.t"


def test_queue_name_override_and_vhost_reach_rule_and_worker():
    pool = make_pool("p", {"taskType": "t", "image": "img", "queueName": "custom.q",
                           "rabbitHostname": "amqp://u:p@rabbit:5672/science",
                           "prometheusUrl": "http://prom:9090"})
    built = children(pool)
    assert built["Deployment"]["spec"]["template"]["spec"]["containers"][0]["command"][-1] \
        == "custom.q"
    depth = next(r for r in built["PrometheusRule"]["spec"]["groups"][0]["rules"]
                 if r["record"] == "hyperpool_workerpool_queue_depth")
    assert 'vhost="science",queue="custom.q"' in depth["expr"]


def test_long_pool_names_are_truncated_with_a_hash():
    long_a, long_b = "a" * 60 + "-one", "a" * 60 + "-two"
    assert naming.child_name("short") == "short"
    assert len(naming.child_name(long_a)) == naming.MAX_CHILD_NAME
    assert naming.child_name(long_a) != naming.child_name(long_b)
    assert naming.child_name(long_a) == naming.child_name(long_a)
    built = children(make_pool(long_a, {"taskType": "t", "image": "i",
                                        "prometheusUrl": "http://p"}))
    for kind in ("Deployment", "PrometheusRule", "ScaledObject"):
        assert len(built[kind]["metadata"]["name"]) <= 54
    k8s_valid(built["Deployment"])


def test_job_for_one_task_message():
    message = {"executable": "mProject", "args": ["a.fits"], "taskId": "wf:1:mProject:3",
               "name": "mProject", "customField": 1}
    job = build_job(message, JobParams(namespace="ns", image="img", reply_to="hf:done",
                                       attempt=2, resources={"requests": {"cpu": "500m"}}))
    k8s_valid(job)
    assert job["metadata"]["name"] == job_name("wf:1:mProject:3", 2)
    assert len(job["metadata"]["name"]) <= 63
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["ttlSecondsAfterFinished"] == 600
    command = spec["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["hyperpool", "execute", "--message-json"]
    assert yaml.safe_load(command[3]) == message
    assert command[4:] == ["--reply-to", "hf:done", "--attempt", "2"]
    assert job["metadata"]["labels"]["hyperflow.agh.edu.pl/task-id"] == "wf-1-mProject-3"



def test_the_podmonitors_pass_the_prometheus_operator_schema():
    """k8s/monitoring/'s PodMonitors against the real CRD schema, strictly (a key the API server
    would prune is an error); tests/unit/test_dashboard.py checks the keys it relies on where
    the reference CRDs are absent."""
    docs = [d for d in yaml.safe_load_all(
        (REPO / "k8s" / "monitoring" / "podmonitor.yaml").read_text()) if d]
    assert len(docs) == 2
    for doc in docs:
        assert schema_errors("PodMonitor", doc) == [], doc["metadata"]["name"]
