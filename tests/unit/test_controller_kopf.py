"""The kopf wiring against kmock's emulated API server (kopf's own traffic) + the fake API layer.

kopf watches the WorkerPool on kmock; our handlers talk to :class:`FakeApi` (the project's API
wrapper layer). This checks what only a running operator shows: create and timer handlers both
reconcile, an invalid spec stops retries, and kopf's *own* writes stay minimal — one diff-base
annotation per spec change, no handler-progress status writes, no Kubernetes Events per timer run.
"""

from __future__ import annotations

import asyncio
import time

import kmock as kmocklib
import kopf
import pytest

from hyperpool.controller import naming
from hyperpool.controller.handlers import build_registry
from hyperpool.controller.plan import ControllerConfig
from tests.unit.test_controller_reconcile import FakeApi
from tests.unit.test_controller_support import seed_pool

RESOURCE = "hyperflow.agh.edu.pl/v1/workerpools"


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def run_operator(kmock, api: FakeApi, pool: dict, until, *, interval: float = 0.3):
    pool["metadata"]["resourceVersion"] = "1"
    api.pools = [pool]
    kmock.resources[RESOURCE] = kmocklib.ResourceInfo(
        kind="WorkerPool", namespaced=True,
        verbs={"list", "watch", "get", "patch"})
    # kopf's backbone: it waits until namespaces and CRDs are discoverable.
    kmock.resources["v1/namespaces"] = kmocklib.ResourceInfo(
        kind="Namespace", namespaced=False, verbs={"list", "watch"})
    kmock.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = \
        kmocklib.ResourceInfo(kind="CustomResourceDefinition", namespaced=False,
                              verbs={"list", "watch"})
    kmock.objects[RESOURCE, "default", pool["metadata"]["name"]] = pool
    registry = build_registry(api, ControllerConfig(), interval=interval, login=False)

    @kopf.on.login(registry=registry)
    def _login(**_):
        return kopf.ConnectionInfo(server=str(kmock.url), insecure=True)

    stop = asyncio.Event()
    task = asyncio.create_task(kopf.operator(registry=registry, standalone=True,
                                             clusterwide=True, stop_flag=stop))
    try:
        await _until(until)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


def _pool_patches(kmock) -> list:
    return [r for r in kmock._requests if r.method.upper() == "PATCH"]


@pytest.mark.asyncio
async def test_create_then_repair_passes_with_minimal_kopf_writes(kmock):
    api = FakeApi()
    applied = lambda: {c[1] for c in api.calls if c[0] == "apply"}  # noqa: E731
    lists = lambda: sum(1 for c in api.calls if c == ("list", "ResourceQuota"))  # noqa: E731
    await run_operator(kmock, api, seed_pool(),
                       lambda: applied() == {"Deployment", "PrometheusRule", "ScaledObject"}
                       and lists() >= 4)
    assert ("Deployment", "default", "mproject") in api.objects
    patches = _pool_patches(kmock)
    # kopf stores the diff base (kmock's emulator does not bump resourceVersion, so kopf may
    # store it twice); never a finalizer, handler progress or status, nothing per repair pass.
    assert 1 <= len(patches) <= 2, [(str(r.url), r.data) for r in patches]
    for patch in patches:
        assert set(patch.data) == {"metadata"} and set(patch.data["metadata"]) == {"annotations"}
        assert set(patch.data["metadata"]["annotations"]) <= {
            "hyperflow.agh.edu.pl/kopf-managed", "hyperflow.agh.edu.pl/last-handled-configuration"}
    handovers = [c for c in api.calls if c[:3] == ("apply", "Deployment",
                                                   naming.HANDOVER_MANAGER)]
    assert len(handovers) == 1  # created once; later passes only re-apply
    events = [r for r in kmock._requests if "/events" in str(r.url)]
    assert events == []


@pytest.mark.asyncio
async def test_invalid_spec_is_a_permanent_failure(kmock):
    api = FakeApi()
    pool = seed_pool()
    pool["spec"].update(minReplicaCount=3, maxReplicaCount=1)
    statuses = lambda: [c for c in api.calls if c[0] == "patch_status"]  # noqa: E731
    await run_operator(kmock, api, pool, lambda: len(statuses()) >= 1, interval=5)
    assert not [c for c in api.calls if c[0] == "apply"]
    # The permanent failure is posted as a Warning event (posting level WARNING).
    events = [r for r in kmock._requests if "/events" in str(r.url)]
    assert all((r.data or {}).get("type") == "Warning" for r in events)

