"""reconcile() against an in-memory fake of the API wrapper (the layer tests mock at)."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from hyperpool.controller import naming
from hyperpool.controller.api import ApiError
from hyperpool.controller.handlers import _reconcile, repair_all
from hyperpool.controller.plan import ControllerConfig
from hyperpool.controller.reconcile import TransientError, reconcile
from tests.unit.test_controller_support import seed_pool

CONFIG = ControllerConfig()


def _merge(base: Any, top: Any) -> Any:
    if isinstance(base, dict) and isinstance(top, dict):
        out = dict(base)
        for key, value in top.items():
            out[key] = _merge(base.get(key), value)
        return out
    return copy.deepcopy(top)


class FakeApi:
    """Just enough server-side apply: each manager's last config, merged; rv bumps on change."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.configs: dict[tuple[str, str, str], dict[str, dict]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.fail: dict[str, ApiError] = {}
        self.quotas: list[dict] = []
        self.pools: list[dict] = []
        self.rv = 0

    def _key(self, obj: dict) -> tuple[str, str, str]:
        return obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]

    def list(self, api_version, kind, namespace, *, label_selector=None):
        self.calls.append(("list", kind))
        if kind == "ResourceQuota":
            return copy.deepcopy(self.quotas)
        if kind == "WorkerPool":
            return [copy.deepcopy(p) for p in self.pools
                    if namespace in (None, p["metadata"]["namespace"])]
        return [copy.deepcopy(o) for (k, ns, _), o in self.objects.items()
                if k == kind and ns == namespace]

    def get(self, api_version, kind, namespace, name):
        self.calls.append(("get", kind, name))
        return copy.deepcopy(self.objects.get((kind, namespace, name)))

    def apply(self, obj, *, field_manager=naming.FIELD_MANAGER, force=True):
        if obj["kind"] in self.fail:
            raise self.fail[obj["kind"]]
        key = self._key(obj)
        self.calls.append(("apply", obj["kind"], field_manager, "replicas" in obj.get("spec", {})))
        configs = self.configs.setdefault(key, {})
        configs[field_manager] = copy.deepcopy(obj)
        old = self.objects.get(key)
        live: dict = {}
        for manager in sorted(configs, key=lambda m: m == naming.FIELD_MANAGER):
            live = _merge(live, configs[manager])
        live["status"] = (old or {}).get("status", {})
        meta = live["metadata"]
        if old is None or {**old, "metadata": {**old["metadata"], "resourceVersion": None}} \
                != {**live, "metadata": {**meta, "resourceVersion": None}}:
            self.rv += 1
            meta["resourceVersion"] = str(self.rv)
        else:
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        self.objects[key] = live
        return copy.deepcopy(live)

    def patch_status(self, api_version, kind, namespace, name, status):
        self.calls.append(("patch_status", name, tuple(sorted(status))))
        return {}

    def delete_child(self, kind: str, name: str = "mproject") -> None:
        del self.objects[(kind, "default", name)]
        del self.configs[(kind, "default", name)]

    def writes(self) -> list[tuple]:
        return [c for c in self.calls if c[0] in ("apply", "patch_status")]


def rvs(api: FakeApi) -> dict:
    return {k: o["metadata"]["resourceVersion"] for k, o in api.objects.items()}


def settle(api: FakeApi, pool: dict, **kw: Any):
    outcome = reconcile(api, pool, config=CONFIG, **kw)
    pool["status"] = outcome.status
    return outcome


def test_first_reconcile_creates_children_and_hands_replicas_to_keda():
    api, pool = FakeApi(), seed_pool()
    outcome = settle(api, pool, now="2024-01-01T00:00:00Z")
    deployment_applies = [c for c in api.calls if c[:2] == ("apply", "Deployment")]
    assert deployment_applies == [
        ("apply", "Deployment", naming.FIELD_MANAGER, True),
        ("apply", "Deployment", naming.HANDOVER_MANAGER, True),
        ("apply", "Deployment", naming.FIELD_MANAGER, False),
    ]
    key = ("Deployment", "default", "mproject")
    assert api.objects[key]["spec"]["replicas"] == 0
    assert "replicas" not in api.configs[key][naming.FIELD_MANAGER]["spec"]
    assert {k[0] for k in api.objects} == {"Deployment", "PrometheusRule", "ScaledObject"}
    (ready,) = outcome.status["conditions"]
    assert ready == {"type": "Ready", "status": "True", "reason": "NoResourceQuota",
                     "message": ready["message"], "observedGeneration": 1,
                     "lastTransitionTime": "2024-01-01T00:00:00Z"}
    assert outcome.status["queue"] == "default.mProject"
    assert outcome.written


def test_steady_state_writes_nothing():
    api, pool = FakeApi(), seed_pool()
    settle(api, pool)
    before, calls = rvs(api), len(api.calls)
    for _ in range(3):
        outcome = settle(api, pool, now="2030-01-01T00:00:00Z")
        assert outcome.written == {}
    assert rvs(api) == before
    assert not [c for c in api.calls[calls:] if c[0] == "patch_status"]
    assert not [c for c in api.calls[calls:] if c[:3] == ("apply", "Deployment",
                                                          naming.HANDOVER_MANAGER)]


def test_deleted_child_comes_back_and_edited_spec_updates_children():
    api, pool = FakeApi(), seed_pool()
    settle(api, pool)
    api.delete_child("ScaledObject")
    api.delete_child("Deployment")
    settle(api, pool)
    assert ("ScaledObject", "default", "mproject") in api.objects
    assert api.objects[("Deployment", "default", "mproject")]["spec"]["replicas"] == 0
    pool["spec"]["image"] = "other:2"
    pool["metadata"]["generation"] = 2
    outcome = settle(api, pool)
    container = api.objects[("Deployment", "default", "mproject")]["spec"]["template"]["spec"][
        "containers"][0]
    assert container["image"] == "other:2"
    assert outcome.status["observedGeneration"] == 2
    assert outcome.status["conditions"][0]["observedGeneration"] == 2


def test_invalid_spec_reports_and_raises_permanent_error_only_in_change_handlers():
    api, pool = FakeApi(), seed_pool()
    pool["spec"].update(minReplicaCount=5, maxReplicaCount=2)
    outcome = settle(api, pool)
    ready = outcome.status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "minReplicaCount (5)" in ready["message"]
    assert not [c for c in api.calls if c[0] == "apply"]
    with pytest.raises(kopf.PermanentError, match="minReplicaCount"):
        _reconcile(api, CONFIG, pool, strict=True)
    _reconcile(api, CONFIG, pool, strict=False)  # the timer reports, never raises


def test_quota_caps_and_replica_failure_is_mirrored():
    api, pool = FakeApi(), seed_pool()
    api.quotas = [{"status": {"hard": {"requests.cpu": "2"}, "used": {"requests.cpu": "0"}}}]
    outcome = settle(api, pool)
    assert api.objects[("ScaledObject", "default", "mproject")]["spec"]["maxReplicaCount"] == 4
    assert outcome.status["conditions"][0]["reason"] == "QuotaLimited"
    assert outcome.status["maxReplicas"] == 4
    dep = api.objects[("Deployment", "default", "mproject")]
    dep["status"] = {"replicas": 3, "readyReplicas": 2, "conditions": [{
        "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
        "message": 'pods "mproject-x" is forbidden: exceeded quota: q, requested: '
                   "requests.cpu=500m, used: requests.cpu=2, limited: requests.cpu=2"}]}
    outcome = settle(api, pool)
    assert (outcome.status["replicas"], outcome.status["readyReplicas"]) == (3, 2)
    assert "exceeded quota" in outcome.status["conditions"][0]["message"]


def test_missing_crd_is_children_failed_but_other_children_apply():
    api, pool = FakeApi(), seed_pool()
    api.fail["ScaledObject"] = ApiError(404, "the server could not find the requested resource")
    outcome = settle(api, pool, now="2024-01-01T00:00:00Z")
    ready = outcome.status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "ChildrenFailed")
    assert "is its CRD installed?" in ready["message"]
    assert ("Deployment", "default", "mproject") in api.objects
    del api.fail["ScaledObject"]
    outcome = settle(api, pool, now="2024-01-02T00:00:00Z")
    ready = outcome.status["conditions"][0]
    assert (ready["status"], ready["lastTransitionTime"]) == ("True", "2024-01-02T00:00:00Z")
    again = settle(api, pool, now="2024-01-03T00:00:00Z")
    assert again.status["conditions"][0]["lastTransitionTime"] == "2024-01-02T00:00:00Z"
    assert len(again.status["conditions"]) == 1


def test_transient_errors_become_temporary_errors():
    api, pool = FakeApi(), seed_pool()
    api.fail["PrometheusRule"] = ApiError(503, "etcd leader changed")
    with pytest.raises(TransientError):
        reconcile(api, pool, config=CONFIG)
    with pytest.raises(kopf.TemporaryError) as info:
        _reconcile(api, CONFIG, pool, strict=False)
    assert info.value.delay and "503" in str(info.value)


def test_stale_seed_conditions_are_replaced_not_appended():
    api, pool = FakeApi(), seed_pool()
    pool["status"] = {"conditions": [
        {"type": "Ready", "status": "True", "reason": "WorkerPoolReady",
         "lastTransitionTime": "2020-01-01T00:00:00Z"},
        {"type": "NotReady", "status": "False", "reason": "WorkerPoolInitializing"}]}
    outcome = settle(api, pool)
    assert [c["type"] for c in outcome.status["conditions"]] == ["Ready"]
    assert outcome.status["conditions"][0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"


def test_repair_pass_reconciles_served_pools_and_skips_deleted_ones():
    api = FakeApi()
    gone = seed_pool()
    gone["metadata"].update(name="gone", deletionTimestamp="2024-01-01T00:00:00Z")
    other = seed_pool(namespace="elsewhere")
    api.pools = [seed_pool(), gone, other]
    assert repair_all(api, CONFIG, ["default"]) == 0
    assert {k[1:] for k in api.objects} == {("default", "mproject")}
    assert repair_all(api, CONFIG, ["else*"]) == 0
    assert ("Deployment", "elsewhere", "mproject") in api.objects
    api.fail["ScaledObject"] = ApiError(500, "boom")
    assert repair_all(api, CONFIG, []) == 2  # both live pools failed, neither stopped the pass


def test_reconcile_is_measured():
    from prometheus_client import REGISTRY

    before = REGISTRY.get_sample_value("hyperpool_controller_reconcile_duration_seconds_count",
                                       {"namespace": "default"}) or 0
    reconcile(FakeApi(), seed_pool(), config=ControllerConfig())
    after = REGISTRY.get_sample_value("hyperpool_controller_reconcile_duration_seconds_count",
                                      {"namespace": "default"})
    assert after == before + 1


def test_other_pools_deployments_are_listed_only_against_a_quota():
    """Without a ResourceQuota no budget is computed, so a reconcile reads its own Deployment
    only (listing all pools' Deployments made a burst of N pools O(N^2))."""
    api, pool = FakeApi(), seed_pool()
    settle(api, pool)
    api.calls.clear()
    settle(api, pool)
    assert ("list", "Deployment") not in api.calls
    assert ("get", "Deployment", naming.child_name(pool["metadata"]["name"])) in api.calls
    api.quotas = [{"status": {"hard": {"requests.cpu": "8"}, "used": {"requests.cpu": "0"}}}]
    api.calls.clear()
    settle(api, pool)
    assert ("list", "Deployment") in api.calls
