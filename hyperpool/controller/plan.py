"""From a WorkerPool and its namespace's quota to the children it should have: pure.

:func:`plan` decides everything (what to apply, which conditions hold) without touching the API,
so every decision is unit-testable; :mod:`hyperpool.controller.reconcile` only reads the inputs
and applies the result. What the CRD schema cannot check (``minReplicaCount`` ≤
``maxReplicaCount``, a missing Prometheus URL) ends up as an ``InvalidSpec`` finding here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from hyperpool.controller import naming, status
from hyperpool.controller.environment import has_userinfo
from hyperpool.controller.params import DEFAULT_TERMINATION_GRACE, PoolParams
from hyperpool.controller.quota import pod_quota_requests
from hyperpool.controller.rules import build_prometheus_rule
from hyperpool.controller.scaler import build_scaled_object
from hyperpool.controller.status import Finding
from hyperpool.controller.templates import TemplateError, Templates
from hyperpool.controller.workload import build_deployment, build_service_account
from hyperpool.errors import ConfigError
from hyperpool.models import describe_validation_error
from hyperpool.quantities import canonical_quantity, parse_quantity
from hyperpool.routing import pool_queue
from hyperpool.scaling import fit, quota_max_replicas
from hyperpool.workerpool_spec import WorkerPoolSpec, is_extended_resource


@dataclass(frozen=True)
class ControllerConfig:
    """Operator-wide knobs (``hyperpool controller`` options)."""

    templates: Templates = field(default_factory=Templates)
    default_prometheus_url: str | None = None
    termination_grace: int = DEFAULT_TERMINATION_GRACE


@dataclass
class Plan:
    """The desired state of one pool: children to apply (Deployment first) and findings."""

    params: PoolParams | None
    children: list[dict[str, Any]]
    findings: list[Finding]
    queue: str | None = None

    @property
    def invalid(self) -> bool:
        return any(f.reason == status.INVALID_SPEC for f in self.findings)


def _resources(spec: WorkerPoolSpec) -> dict[str, dict[str, str]]:
    result = {}
    for part in ("requests", "limits"):
        amounts = getattr(spec.initialResources, part).amounts()
        # Canonical text, so re-applying is a no-op for server-side apply (see quantities).
        values = {k: canonical_quantity(v) for k, v in amounts.items()}
        if values:
            result[part] = values
    return result


def spec_problems(spec: WorkerPoolSpec) -> list[str]:
    """What the model alone cannot say: coherence between fields (each an InvalidSpec)."""
    problems = []
    if spec.brokerCredentials and spec.rabbitHostname and has_userinfo(spec.rabbitHostname):
        problems.append("spec.rabbitHostname: must not carry user:password when "
                        "brokerCredentials is set")
    if spec.brokerCredentials and not spec.rabbitHostname:
        problems.append("spec.brokerCredentials: needs spec.rabbitHostname")
    if spec.redisCredentials and (not spec.redisUrl or has_userinfo(spec.redisUrl)):
        problems.append("spec.redisCredentials: needs spec.redisUrl without a password")
    names = [e.name for e in spec.env or []]
    if len(set(names)) != len(names):
        problems.append("spec.env: names must be unique")
    if any(e.value is not None and e.valueFrom is not None for e in spec.env or []):
        problems.append("spec.env: an entry has either value or valueFrom")
    requests = spec.initialResources.requests.amounts()
    limits = spec.initialResources.limits.amounts()
    for name in sorted(set(requests) | set(limits)):
        if is_extended_resource(name) and name in requests and name in limits and \
                parse_quantity(requests[name]) != parse_quantity(limits[name]):
            problems.append(f"spec.initialResources: {name} requests must equal its limits "
                            "(extended resources cannot be overcommitted)")
    return problems


def _service_account(spec: WorkerPoolSpec, child: str) -> tuple[str | None, dict | None]:
    """The pods' serviceAccountName, and the annotations when the controller creates it."""
    account = spec.serviceAccount
    if account is None:
        return None, None
    name = account.name or child
    return name, (dict(account.annotations) if account.create else None)


def _invalid(message: str) -> Plan:
    return Plan(None, [], [Finding(status.INVALID_SPEC, message)])


def plan(pool: Mapping[str, Any], budget: Mapping[str, Decimal] | None, *,
         config: ControllerConfig) -> Plan:
    """The children and findings of ``pool`` (a WorkerPool manifest).

    ``budget`` is what worker pools may use per quota resource
    (:func:`hyperpool.controller.quota.pool_budget`), ``None`` when the namespace has no
    ResourceQuota.
    """
    meta = pool["metadata"]
    raw = dict(pool.get("spec") or {})
    # Quantities may arrive as integers (int-or-string in the CRD); the model keeps them as text.
    try:
        spec = WorkerPoolSpec.model_validate(raw)
    except ValidationError as exc:
        return _invalid(describe_validation_error(exc, prefix="spec"))
    if not spec.image:
        return _invalid("spec.image: required")
    problems = spec_problems(spec)
    if problems:
        return _invalid("; ".join(problems))
    prometheus_url = spec.prometheusUrl or config.default_prometheus_url
    if not prometheus_url:
        return _invalid("spec.prometheusUrl: required (the controller has no default)")
    namespace = meta["namespace"]
    try:
        queue = pool_queue(spec, namespace)
    except ConfigError as exc:
        return _invalid(f"spec.{'queueName' if spec.queueName else 'taskType'}: {exc.message}")
    resources = _resources(spec)
    requests = pod_quota_requests({"containers": [{"resources": resources}]})
    child = naming.child_name(meta["name"])
    account, account_annotations = _service_account(spec, child)
    grace = spec.terminationGracePeriodSeconds
    params = PoolParams(
        pool_name=meta["name"], namespace=namespace, uid=meta.get("uid", ""),
        name=child, task_type=spec.taskType, queue=queue,
        image=spec.image, prometheus_url=prometheus_url, rabbit_hostname=spec.rabbitHostname,
        redis_url=spec.redisUrl, min_replicas=spec.minReplicaCount,
        max_replicas=spec.maxReplicaCount, resources=resources, pod_requests=requests,
        termination_grace=config.termination_grace if grace is None else grace,
        priority_class=spec.priorityClassName, node_selector=dict(spec.nodeSelector or {}),
        tolerations=list(spec.tolerations or []), affinity=dict(spec.affinity or {}),
        service_account=account, service_account_annotations=account_annotations,
        image_pull_secrets=[ref.name for ref in spec.imagePullSecrets or []],
        broker_credentials=spec.brokerCredentials, redis_credentials=spec.redisCredentials,
        extra_env=[e.model_dump(exclude_none=True) for e in spec.env or []],
        volumes=list(spec.volumes or []), volume_mounts=list(spec.volumeMounts or []),
        concurrency=spec.concurrency,
        extra_triggers=[t.model_dump(exclude_none=True) for t in spec.triggers or []],
    )
    findings: list[Finding] = []
    if budget is None:
        top = spec.maxReplicaCount
        findings.append(Finding(status.NO_RESOURCE_QUOTA, "no ResourceQuota in namespace "
                                f"{namespace}: maxReplicaCount {top} is not capped"))
    else:
        top = quota_max_replicas(spec.maxReplicaCount, requests, budget)
        room = fit(requests, budget)
        if top < spec.maxReplicaCount:
            findings.append(Finding(
                status.QUOTA_LIMITED, f"the quota holds {room} pods of this pool: "
                f"maxReplicaCount {spec.maxReplicaCount} capped to {top}"))
        if spec.minReplicaCount > top:
            findings.append(Finding(status.QUOTA_LIMITED, f"minReplicaCount "
                                    f"{spec.minReplicaCount} exceeds what the quota holds ({top})"))
    scaler_max = max(1, top)
    params = replace(params, scaler_max=scaler_max, paused=spec.maxReplicaCount == 0,
                     scaler_min=min(spec.minReplicaCount, top))
    try:
        children = render_children(params, config.templates)
    except TemplateError as exc:
        return Plan(params, [], [Finding(status.CHILDREN_FAILED, str(exc))], queue)
    return Plan(params, children, findings, queue)


def render_children(params: PoolParams, templates: Templates) -> list[dict[str, Any]]:
    """[ServiceAccount,] Deployment, PrometheusRule, ScaledObject: built-in or templated.

    The pool's own ServiceAccount (if any) comes first, so the Deployment's pods find it; it is
    not templated (its only content is the annotations the spec gives).
    """
    defaults = [
        ("Deployment", build_deployment(params)),
        ("PrometheusRule", build_prometheus_rule(params)),
        ("ScaledObject", build_scaled_object(params)),
    ]
    account = build_service_account(params)
    return [*([account] if account else []),
            *(templates.render(kind, params, default) for kind, default in defaults)]
