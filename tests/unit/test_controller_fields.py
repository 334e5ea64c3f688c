"""WorkerPool fields beyond the seed: each one reaches the Deployment / ScaledObject.

Placement, service accounts (workload identity), credentials by Secret reference, extra env,
volumes and mounts (the shared work dir), GPU pools in the quota fit, concurrency, grace
period, extra KEDA triggers, image pull secrets.
Every child is validated as the existing builder tests do: built-in kinds with
kubernetes-validate, custom kinds against their CRD schemas (strict: no pruned fields).
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from hyperpool.controller.plan import ControllerConfig, plan
from hyperpool.controller.quota import container_quota_requests, pool_budget
from hyperpool.controller.reconcile import reconcile
from hyperpool.controller.templates import Templates
from hyperpool.controller.workload import restricted_container_security, restricted_pod_security
from hyperpool.errors import ConfigError
from hyperpool.models import validate
from hyperpool.workerpool_spec import WorkerPool, WorkerPoolSpec
from tests.unit.test_controller_reconcile import FakeApi
from tests.unit.test_controller_support import (
    crd_schema,
    schema_errors,
    seed_manifest_text,
    seed_pool,
)

K8S_VERSION = kubernetes_validate.utils.all_versions()[0]
SHIPPED = Path(__file__).resolve().parents[2] / "hyperpool" / "templates"
SECRET_PASSWORD = "s3cr3t-never-in-specs"  # lives only in the Secret, never in the spec
FULL_SPEC = {
    "nodeSelector": {"hyperflow.agh.edu.pl/node-type": "gpu"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]}]}]}}},
    "priorityClassName": "hyperflow-worker",
    "serviceAccount": {"name": "montage-worker", "create": True, "annotations": {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::0123456789:role/montage"}},
    "imagePullSecrets": [{"name": "registry"}],
    "brokerCredentials": {"secretName": "rabbitmq", "username": "user",
                          "passwordKey": "rabbitmq-password"},
    "redisCredentials": {"secretName": "redis", "passwordKey": "redis-password"},
    "env": [{"name": "HF_VAR_WORK_DIR", "value": "/work_dir"},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
    # no configMap/secret volumes here: the API server defaults their defaultMode, and
    # tests/kubernetes/test_fields_cluster.py compares what it serves with this
    "volumes": [{"name": "work-dir", "persistentVolumeClaim": {"claimName": "work-dir"}},
                {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}],
    "volumeMounts": [{"name": "work-dir", "mountPath": "/work_dir"},
                     {"name": "work-dir", "mountPath": "/inputs", "subPath": "inputs",
                      "readOnly": True},
                     {"name": "scratch", "mountPath": "/scratch"}],
    "concurrency": 4,
    "terminationGracePeriodSeconds": 1200,
    "triggers": [{"type": "cron", "name": "office-hours", "metadata": {
        "timezone": "Europe/Warsaw", "start": "0 8 * * *", "end": "0 18 * * *",
        "desiredReplicas": "2"}}],
    "initialResources": {"requests": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": 1},
                         "limits": {"cpu": "2", "memory": "2Gi", "nvidia.com/gpu": "1"}},
}
GPU_QUOTA = [{"status": {"hard": {"requests.cpu": "16", "requests.nvidia.com/gpu": "3"},
                         "used": {"requests.nvidia.com/gpu": "1"}}}]


def full_pool(**changes) -> dict:
    pool = seed_pool()
    pool["spec"].update(copy.deepcopy(FULL_SPEC), **changes)
    return pool


def kinds(pool: dict, quotas=GPU_QUOTA, templates: Templates | None = None) -> dict:
    config = ControllerConfig(templates=templates or Templates())
    result = plan(pool, pool_budget(quotas, {}), config=config)
    assert not result.invalid, result.findings
    return {c["kind"]: c for c in result.children} | {"_plan": result}


def test_full_spec_is_valid_for_the_crd_and_the_model():
    pool = full_pool()
    assert schema_errors("WorkerPool", pool | {"metadata": {"name": "mproject"}}) == []
    WorkerPoolSpec.model_validate(pool["spec"])
    # the CRD's trigger schema is KEDA's, so whatever the CRD admits KEDA admits
    ours = crd_schema("WorkerPool")["properties"]["spec"]["properties"]["triggers"]["items"]
    keda = crd_schema("ScaledObject")["properties"]["spec"]["properties"]["triggers"]["items"]
    assert set(ours["properties"]) == set(keda["properties"])


def test_every_field_reaches_the_deployment():
    built = kinds(full_pool())
    dep = built["Deployment"]
    kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == FULL_SPEC["nodeSelector"]
    assert pod["tolerations"] == FULL_SPEC["tolerations"]
    assert pod["affinity"] == FULL_SPEC["affinity"]
    assert pod["priorityClassName"] == "hyperflow-worker"
    assert pod["serviceAccountName"] == "montage-worker"
    assert pod["automountServiceAccountToken"] is False
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["terminationGracePeriodSeconds"] == 1200
    assert pod["volumes"] == FULL_SPEC["volumes"]
    (container,) = pod["containers"]
    assert container["volumeMounts"] == FULL_SPEC["volumeMounts"]
    # mounting the work dir loosens nothing: the restricted profile stays as it was
    assert pod["securityContext"] == restricted_pod_security()
    assert container["securityContext"] == restricted_container_security()
    assert container["command"][-2:] == ["-c", "4"]
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "2", "memory": "2Gi", "nvidia.com/gpu": "1"}}
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_VAR_WORK_DIR"] == {"name": "HF_VAR_WORK_DIR", "value": "/work_dir"}
    assert env["NODE"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert built["ScaledObject"]["spec"]["cooldownPeriod"] == 1200  # never below the grace


def test_credentials_are_secret_references_composed_by_the_kubelet():
    container = kinds(full_pool())["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    names = [e["name"] for e in container["env"]]
    env = {e["name"]: e for e in container["env"]}
    assert env["HYPERPOOL_BROKER_USERNAME"] == {"name": "HYPERPOOL_BROKER_USERNAME",
                                                "value": "user"}
    assert env["HYPERPOOL_BROKER_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "rabbitmq", "key": "rabbitmq-password"}}
    assert env["HYPERPOOL_REDIS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "redis", "key": "redis-password"}}
    assert env["HYPERPOOL_BROKER_URL"]["value"] == (
        "amqp://$(HYPERPOOL_BROKER_USERNAME):$(HYPERPOOL_BROKER_PASSWORD)@rabbitmq.default//")
    assert env["RABBIT_HOSTNAME"]["value"] == (
        "$(HYPERPOOL_BROKER_USERNAME):$(HYPERPOOL_BROKER_PASSWORD)@rabbitmq.default")
    assert env["REDIS_URL"]["value"] == "redis://:$(HYPERPOOL_REDIS_PASSWORD)@redis:6379"
    # dependent variables only expand when defined earlier in the list
    assert names.index("HYPERPOOL_BROKER_PASSWORD") < names.index("HYPERPOOL_BROKER_URL")
    assert names.index("HYPERPOOL_REDIS_PASSWORD") < names.index("REDIS_URL")
    # the vhost of the queue-depth series still comes from the URL
    assert kinds(full_pool())["_plan"].params.vhost == "/"


def test_no_secret_value_anywhere_in_the_children():
    built = kinds(full_pool())
    text = json.dumps([built[k] for k in ("Deployment", "ScaledObject", "PrometheusRule",
                                          "ServiceAccount")])
    assert SECRET_PASSWORD not in text and "guest:guest" not in text


def test_broker_url_with_credentials_key_and_amqp_url():
    pool = full_pool(rabbitHostname="amqp://rabbit:5672/science",
                     brokerCredentials={"secretName": "rmq"})
    container = kinds(pool)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["HYPERPOOL_BROKER_USERNAME"]["valueFrom"]["secretKeyRef"] == {
        "name": "rmq", "key": "username"}
    assert env["HYPERPOOL_BROKER_URL"]["value"] == (
        "amqp://$(HYPERPOOL_BROKER_USERNAME):$(HYPERPOOL_BROKER_PASSWORD)@rabbit:5672/science")
    assert kinds(pool)["_plan"].params.vhost == "science"


def test_extra_triggers_follow_the_queue_trigger():
    so = kinds(full_pool())["ScaledObject"]
    assert [t["type"] for t in so["spec"]["triggers"]] == ["prometheus", "cron"]
    assert so["spec"]["triggers"][1] == FULL_SPEC["triggers"][0]
    assert schema_errors("ScaledObject", so) == []


def test_pool_created_service_account_carries_identity_and_is_owned():
    built = kinds(full_pool())
    account = built["ServiceAccount"]
    kubernetes_validate.validate(account, K8S_VERSION, strict=True)
    assert account["metadata"]["name"] == "montage-worker"
    assert account["metadata"]["annotations"] == FULL_SPEC["serviceAccount"]["annotations"]
    assert account["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert account["automountServiceAccountToken"] is False
    assert [c["kind"] for c in built["_plan"].children][0] == "ServiceAccount"


def test_referenced_service_account_is_not_created():
    built = kinds(full_pool(serviceAccount={"name": "made-by-terraform"}))
    assert "ServiceAccount" not in built
    assert built["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"] \
        == "made-by-terraform"
    created = kinds(full_pool(serviceAccount={"create": True}))["ServiceAccount"]
    assert created["metadata"]["name"] == "mproject" and "annotations" not in created["metadata"]


def test_gpu_requests_count_in_the_quota_fit():
    # 3 GPUs hard, 1 used outside the pools: 2 pods of one GPU each, whatever the CPU allows
    built = kinds(full_pool())
    assert built["ScaledObject"]["spec"]["maxReplicaCount"] == 2
    assert "holds 2 pods" in built["_plan"].findings[0].message
    charges = container_quota_requests({"requests": {"nvidia.com/gpu": "1", "cpu": "1"}})
    assert charges["requests.nvidia.com/gpu"] == Decimal(1)
    assert "limits.nvidia.com/gpu" not in charges and "nvidia.com/gpu" not in charges
    rule = next(r for r in built["PrometheusRule"]["spec"]["groups"][0]["rules"]
                if r.get("labels", {}).get("resource") == "requests.nvidia.com/gpu")
    assert rule["expr"] == "vector(1)"


def test_shipped_templates_render_the_new_fields_like_the_built_ins():
    built = kinds(full_pool())
    templated = kinds(full_pool(), templates=Templates.from_directory(SHIPPED))
    for kind in ("ServiceAccount", "Deployment", "PrometheusRule", "ScaledObject"):
        assert templated[kind] == built[kind], kind


@pytest.mark.parametrize("volumes, mounts", [
    ([{"name": "cfg", "configMap": {"name": "on", "defaultMode": 0o444,
                                    "items": [{"key": "a: b", "path": "yes"}]}}],
     [{"name": "cfg", "mountPath": "/etc/wf #1", "readOnly": True}]),
    ([{"name": "nfs", "nfs": {"server": "10.0.0.1", "path": "/exports/work"}}],
     [{"name": "nfs", "mountPath": "/work_dir", "subPathExpr": "$(POD_NAME)"}]),
    ([{"name": "unused", "emptyDir": {}}], None),
])
def test_template_renders_volumes_exactly_as_the_builder(volumes, mounts):
    # YAML 1.1 booleans ("on", "yes"), ": " and " #" in strings must survive the template's toyaml
    pool = full_pool(volumes=volumes, volumeMounts=mounts)
    built = kinds(pool)["Deployment"]
    templated = kinds(pool, templates=Templates.from_directory(SHIPPED))["Deployment"]
    assert templated == built
    kubernetes_validate.validate(built, K8S_VERSION, strict=True)
    pod = built["spec"]["template"]["spec"]
    assert pod["volumes"] == volumes
    assert pod["containers"][0].get("volumeMounts") == mounts


def test_crd_requires_names_and_mount_paths():
    pool = full_pool(volumeMounts=[{"name": "work-dir"}], volumes=[{"emptyDir": {}}])
    errors = schema_errors("WorkerPool", pool | {"metadata": {"name": "mproject"}})
    assert any("mountPath" in e for e in errors) and any("'name'" in e for e in errors), errors


def test_a_local_manifest_gets_the_same_volume_messages():
    manifest = {"apiVersion": "hyperflow.agh.edu.pl/v1", "kind": "WorkerPool",
                "metadata": {"name": "p"}, "spec": {"taskType": "t", "volumeMounts": [
                    {"name": "work-dir"}]}}
    with pytest.raises(ConfigError, match=r"spec\.volumeMounts\[0\]: mountPath is required"):
        validate(WorkerPool, manifest, source="pools.yaml")


@pytest.mark.parametrize("changes, message", [
    ({"rabbitHostname": "user:pw@rabbit"}, "must not carry user:password"),
    ({"redisUrl": "redis://:pw@redis:6379"}, "redisUrl without a password"),
    ({"serviceAccount": {"name": "x", "annotations": {"a": "b"}}}, "annotations need create"),
    ({"serviceAccount": {}}, "name is required"),
    ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "unique"),
    ({"initialResources": {"requests": {"nvidia.com/gpu": "1"},
                           "limits": {"nvidia.com/gpu": "2"}}}, "must equal its limits"),
    ({"initialResources": {"requests": {"cpus": "1"}}}, "requests.cpus: unknown field"),
    ({"concurrency": 0}, "concurrency"),
    ({"triggers": [{"type": "cron"}]}, "metadata"),
    ({"volumeMounts": [{"name": "work-dir"}]}, "spec.volumeMounts[0]: mountPath is required"),
    ({"volumeMounts": [{"mountPath": "/w"}]}, "spec.volumeMounts[0]: name is required"),
    ({"volumeMounts": [{"name": "work-dir", "mountPath": 7}]}, "mountPath must be a string"),
    ({"volumeMounts": [{"name": "work", "mountPath": "/w"}]},
     "spec.volumeMounts[0]: name 'work' is not a volume of the pod: add a volume of that name "
     "to spec.volumes"),
    ({"volumes": None, "volumeMounts": [{"name": "work-dir", "mountPath": "/w"}]},
     "'work-dir' is not a volume of the pod"),
    ({"volumeMounts": [{"name": "work-dir", "mountPath": "/w"},
                       {"name": "scratch", "mountPath": "/w"}]},
     "spec.volumeMounts[1]: mountPath '/w' is given twice"),
    ({"volumes": [{"emptyDir": {}}]}, "spec.volumes[0]: name is required"),
    ({"volumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}],
      "volumeMounts": None}, "spec.volumes[1]: name 'a' is given twice"),
    ({"volumes": ["work-dir"]}, "spec.volumes.0: Input should be a valid dictionary"),
])
def test_incoherent_fields_are_invalid_spec(changes, message):
    result = plan(full_pool(**changes), None, config=ControllerConfig())
    assert result.invalid and result.children == []
    assert message in result.findings[0].message, result.findings[0].message


def test_user_env_replaces_a_built_in_entry():
    pool = full_pool(env=[{"name": "HYPERPOOL_METRICS_PORT", "value": "9200"}])
    container = kinds(pool)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    ports = [e for e in container["env"] if e["name"] == "HYPERPOOL_METRICS_PORT"]
    assert ports == [{"name": "HYPERPOOL_METRICS_PORT", "value": "9200"}]


def test_seed_manifest_children_are_unchanged_by_the_new_fields():
    built = kinds(seed_pool(), quotas=[])
    pod = built["Deployment"]["spec"]["template"]["spec"]
    assert not {"nodeSelector", "tolerations", "affinity", "serviceAccountName",
                "imagePullSecrets", "volumes"} & set(pod)
    assert "volumeMounts" not in pod["containers"][0]
    assert "ServiceAccount" not in built
    assert len(built["ScaledObject"]["spec"]["triggers"]) == 1


def test_reconcile_creates_the_account_but_never_adopts_a_foreign_one():
    api = FakeApi()
    pool = full_pool()
    outcome = reconcile(api, pool, config=ControllerConfig())
    assert ("ServiceAccount", "default", "montage-worker") in api.objects
    assert outcome.status["conditions"][0]["reason"] != "ChildrenFailed"
    other = FakeApi()
    other.objects[("ServiceAccount", "default", "montage-worker")] = {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "montage-worker", "namespace": "default",
                     "annotations": {"eks.amazonaws.com/role-arn": "theirs"}}}
    outcome = reconcile(other, full_pool(), config=ControllerConfig())
    cond = outcome.status["conditions"][0]
    assert (cond["reason"], cond["status"]) == ("ChildrenFailed", "False")
    assert "was not created by this pool" in cond["message"]
    live = other.objects[("ServiceAccount", "default", "montage-worker")]
    assert live["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "theirs"}
    assert ("Deployment", "default", "mproject") in other.objects


def test_spec_round_trips_through_yaml_as_a_user_writes_it():
    text = yaml.safe_dump({"spec": {"taskType": "t", **FULL_SPEC}})
    assert WorkerPoolSpec.model_validate(yaml.safe_load(text)["spec"]).concurrency == 4


@pytest.mark.parametrize("spec,errors", [
    ({"minReplicaCount": 60, "maxReplicaCount": 50},
     ["self.spec: minReplicaCount must not exceed maxReplicaCount"]),
    ({"minReplicaCount": 60}, ["self.spec: minReplicaCount must not exceed maxReplicaCount"]),
    ({"minReplicaCount": 50, "maxReplicaCount": 50}, []),
    ({}, []),  # the defaults, 0 and 50
])
def test_crd_rule_min_not_above_max_as_a_current_api_server_evaluates_it(spec, errors):
    pool = yaml.safe_load(seed_manifest_text())
    for key in ("minReplicaCount", "maxReplicaCount"):
        pool["spec"].pop(key)
    pool["spec"].update(spec)
    assert schema_errors("WorkerPool", pool) == errors
