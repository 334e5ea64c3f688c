"""One idempotent reconcile: read inputs, :func:`~hyperpool.controller.plan.plan`, apply, report.

Every handler (create, update, resume, the drift-repair timer) calls :func:`reconcile`; running it
twice changes nothing the second time. Children are server-side applied under one field manager
with ``force`` (the controller is the authority on what it manages); unchanged children are
no-ops for the API server (resourceVersion unchanged), and the status is written only when it
differs.

``spec.replicas`` belongs to KEDA once the Deployment exists. With server-side apply, *omitting*
a field the manager owns deletes it (and the Deployment would snap back to 1 replica), so the
manager must never own it: a new Deployment is created with ``replicas: minReplicaCount``, a
second manager (``hyperpool-controller-handover``) then applies just that field, and the main
manager re-applies without it, leaving the handover manager as the only owner. This is the
ownership transfer the Kubernetes server-side-apply documentation describes for handing
``replicas`` to an HPA. Later applies never mention ``replicas``.

The status also says whether the pool's pods can run (:mod:`~hyperpool.controller.pod_health`):
one LIST of the Deployment's pods by its selector, made only when the Deployment wants pods
(``spec.replicas > 0``), so a pool scaled to zero costs no extra request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hyperpool import metrics
from hyperpool.controller import naming, pod_health, status
from hyperpool.controller.api import ApiError, KubeApi
from hyperpool.controller.plan import ControllerConfig, Plan, plan
from hyperpool.controller.quota import pool_budget, pools_usage
from hyperpool.controller.status import Finding

log = logging.getLogger(__name__)
POOL_SELECTOR = f"{naming.MANAGED_BY}={naming.MANAGED_BY_VALUE}"


class TransientError(Exception):
    """The API failed in a way worth retrying soon (handlers map it to kopf.TemporaryError)."""


@dataclass
class Outcome:
    plan: Plan
    status: dict[str, Any]
    written: dict[str, Any]  # the status patch sent ({} when nothing changed)
    applied: list[dict[str, Any]]


def _create_deployment(api: KubeApi, deployment: dict[str, Any], replicas: int) -> dict[str, Any]:
    """Create with ``replicas`` and hand the field to the handover manager (module docstring)."""
    meta = deployment["metadata"]
    first = {**deployment, "spec": {**deployment["spec"], "replicas": replicas}}
    api.apply(first)
    api.apply({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
               "spec": {"replicas": replicas}}, field_manager=naming.HANDOVER_MANAGER)
    return api.apply(deployment)


def foreign_service_account(api: KubeApi, account: Mapping[str, Any], uid: str) -> str | None:
    """Why an existing ServiceAccount must not be applied over, or ``None`` when it is ours.

    The controller never adopts a ServiceAccount it did not create: applying would rewrite its
    annotations (a cloud identity someone else chose) and make the pool's deletion delete it.
    """
    meta = account["metadata"]
    live = api.get("v1", "ServiceAccount", meta["namespace"], meta["name"])
    if live is None or any(ref.get("uid") == uid
                           for ref in live["metadata"].get("ownerReferences") or []):
        return None
    return (f"ServiceAccount {meta['name']} exists and was not created by this pool: reference "
            "it with serviceAccount.create: false")


def apply_children(api: KubeApi, result: Plan, *,
                   live_deployment: Mapping[str, Any] | None) -> tuple[list[dict], list[Finding]]:
    """Apply every child; permanent failures become findings, transient ones raise."""
    applied: list[dict[str, Any]] = []
    findings: list[Finding] = []
    for child in result.children:
        try:
            if child["kind"] == "ServiceAccount":
                assert result.params is not None
                problem = foreign_service_account(api, child, result.params.uid)
                if problem:
                    findings.append(Finding(status.CHILDREN_FAILED, problem))
                    continue
            if child["kind"] == "Deployment" and live_deployment is None:
                assert result.params is not None
                applied.append(_create_deployment(api, child, result.params.scaler_min))
            else:
                applied.append(api.apply(child))
        except ApiError as exc:
            if exc.transient:
                raise TransientError(f"applying {child['kind']}: {exc}") from exc
            hint = " (is its CRD installed?)" if exc.status == 404 else ""
            findings.append(Finding(status.CHILDREN_FAILED,
                                    f"{child['kind']} {child['metadata']['name']}: {exc}{hint}"))
    return applied, findings


def read_pod_findings(api: KubeApi, deployment: Mapping[str, Any] | None, namespace: str,
                      pool_name: str) -> list[Finding]:
    """``PodsFailing`` when the Deployment's pods cannot run; no request while it wants none.

    The pods are selected by the live Deployment's own ``matchLabels`` (immutable, and what its
    ReplicaSets select), falling back to the labels the controller puts there. Without the
    right to list pods (an operator upgraded before its RBAC) this is logged and skipped: that
    is the operator's misconfiguration, not the pool's.
    """
    spec = (deployment or {}).get("spec") or {}
    if deployment is None or int(spec.get("replicas", 1) or 0) <= 0:
        return []
    labels = (spec.get("selector") or {}).get("matchLabels") or naming.selector_labels(pool_name)
    selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
    try:
        pods = api.list("v1", "Pod", namespace, label_selector=selector)
    except ApiError as exc:
        if exc.transient:
            raise TransientError(f"listing pods: {exc}") from exc
        log.warning("%s/%s: cannot list pods, their health is not reported: %s",
                    namespace, pool_name, exc)
        return []
    return pod_health.pod_findings(pods)


def reconcile(api: KubeApi, pool: Mapping[str, Any], *, config: ControllerConfig,
              now: str | None = None) -> Outcome:
    """Bring ``pool``'s children and status in line with its spec (see the module docstring)."""
    namespace = pool["metadata"]["namespace"]
    started = time.monotonic()
    try:
        outcome = _reconcile(api, pool, config=config, now=now)
    except TransientError:
        metrics.RECONCILE_ERRORS.labels(namespace, "transient").inc()
        raise
    except Exception:
        metrics.RECONCILE_ERRORS.labels(namespace, "error").inc()
        raise
    finally:
        metrics.RECONCILE_DURATION.labels(namespace).observe(time.monotonic() - started)
    replicas = outcome.status.get("replicas")
    if isinstance(replicas, int):
        metrics.ACTUAL_REPLICAS.labels(namespace, pool["metadata"]["name"]).set(replicas)
    return outcome


def _reconcile(api: KubeApi, pool: Mapping[str, Any], *, config: ControllerConfig,
               now: str | None = None) -> Outcome:
    meta = pool["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        quotas = api.list("v1", "ResourceQuota", namespace)
        # The namespace's other pools only matter against a quota. Listing their Deployments
        # for every reconcile made a burst of N new pools parse N x N Deployments (200 pools
        # in one namespace: 217 ms of controller CPU per pool, most of it this list).
        deployments = (api.list("apps/v1", "Deployment", namespace,
                                label_selector=POOL_SELECTOR) if quotas else [])
    except ApiError as exc:
        if exc.transient:
            raise TransientError(f"reading quota and pools: {exc}") from exc
        raise
    budget = pool_budget(quotas, pools_usage(deployments))
    result = plan(pool, budget, config=config)
    child = naming.child_name(name)
    live = next((d for d in deployments if d["metadata"]["name"] == child), None)
    if live is None and (result.children or not quotas):
        # A Deployment of that name without our label (adopted or edited by hand) still counts;
        # without a quota nothing was listed, and an invalid pool's old Deployment still
        # reports its replicas.
        live = api.get("apps/v1", "Deployment", namespace, child)
    applied, findings = apply_children(api, result, live_deployment=live)
    deployment = next((o for o in applied if o.get("kind") == "Deployment"), live)
    findings = result.findings + findings + status.deployment_findings(deployment)
    if not result.invalid:  # InvalidSpec outranks PodsFailing: spare the request
        findings += read_pod_findings(api, deployment, namespace, name)
    new_status = status.build_status(
        pool.get("status"), findings=findings, generation=int(meta.get("generation") or 0),
        queue=result.queue, deployment=deployment,
        scaler_max=result.params.scaler_max if result.params else None,
        now=now or status.now_rfc3339())
    patch = status.status_patch(pool.get("status"), new_status)
    if patch:
        try:
            api.patch_status(naming.API_VERSION, naming.KIND, namespace, name, patch)
        except ApiError as exc:
            if exc.status == 404:  # the pool was deleted meanwhile: nothing left to report on
                return Outcome(result, new_status, {}, applied)
            if exc.transient:
                raise TransientError(f"writing status: {exc}") from exc
            raise
        log.info("%s/%s: status %s", namespace, name, sorted(patch))
    return Outcome(result, new_status, patch, applied)
