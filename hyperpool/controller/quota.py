"""What a worker pod costs in ResourceQuota terms, and the budget left to worker pools.

A ResourceQuota counts a pod against several resource names at once: ``requests.cpu`` and its
alias ``cpu``, ``requests.memory``/``memory``, ``limits.*``, ``requests.nvidia.com/gpu`` (and
other extended resources) and the pod count itself. A
container without a request is charged its limit (Kubernetes defaults requests to limits). So
``fit`` (:func:`hyperpool.scaling.fit`) is asked with *all* of these names and the quota
decides which ones constrain.

The budget left to worker pools is ``hard - used`` plus what the pools themselves use (pools
share the budget; counting their own pods as "used" would shrink a pool as it grows). With
several quotas in a namespace each one binds, so the smallest remainder wins. Quota scopes
(``BestEffort``, priority classes) are not modelled: a scoped quota is treated as unscoped,
which can only make the budget smaller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from hyperpool.quantities import parse_quantity

# Quota resource names priced per pod; the PrometheusRule records the same names.
CPU_RESOURCES = ("requests.cpu", "cpu", "limits.cpu")
COUNT_RESOURCES = ("pods", "count/pods")


def _amount(value: Any) -> Decimal | None:
    return None if value is None else parse_quantity(value)


# Names a quota charges as ``requests.X``, ``X`` and ``limits.X``; every other resource a pod
# requests (extended resources such as ``nvidia.com/gpu``, hugepages) only as ``requests.X``,
# the one quota name Kubernetes allows for them.
OVERCOMMITTABLE = ("cpu", "memory", "ephemeral-storage")


def container_quota_requests(resources: Mapping[str, Any] | None) -> dict[str, Decimal]:
    """Quota charges of one container's ``resources`` (base units: cores, bytes, devices)."""
    resources = resources or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    charges: dict[str, Decimal] = {}
    for kind in [*dict.fromkeys([*OVERCOMMITTABLE, *requests, *limits])]:
        limit = _amount(limits.get(kind))
        request = _amount(requests.get(kind))
        if request is None:
            request = limit
        if request is not None:
            charges[f"requests.{kind}"] = request
            if kind in OVERCOMMITTABLE:
                charges[kind] = request
        if limit is not None and kind in OVERCOMMITTABLE:
            charges[f"limits.{kind}"] = limit
    return charges


def pod_quota_requests(pod_spec: Mapping[str, Any]) -> dict[str, Decimal]:
    """Quota charges of one pod: its containers' charges summed, plus one pod.

    Init containers run before the main ones and are ignored (their requests only matter when
    larger than the sum of the main containers', which worker pods do not do).
    """
    total: dict[str, Decimal] = {name: Decimal(1) for name in COUNT_RESOURCES}
    for container in pod_spec.get("containers") or []:
        for name, amount in container_quota_requests(container.get("resources")).items():
            total[name] = total.get(name, Decimal(0)) + amount
    return total


def pools_usage(deployments: Iterable[Mapping[str, Any]]) -> dict[str, Decimal]:
    """What the pools' current pods are charged: ``status.replicas`` × per-pod charges."""
    usage: dict[str, Decimal] = {}
    for deployment in deployments:
        replicas = int((deployment.get("status") or {}).get("replicas") or 0)
        if not replicas:
            continue
        pod_spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
        for name, amount in pod_quota_requests(pod_spec).items():
            usage[name] = usage.get(name, Decimal(0)) + replicas * amount
    return usage


def pool_budget(
    quotas: Iterable[Mapping[str, Any]], usage: Mapping[str, Decimal]
) -> dict[str, Decimal] | None:
    """Per resource, what worker pools may use in total; ``None`` without any ResourceQuota.

    ``quotas`` are ResourceQuota objects as returned by the API (``status.hard``/``used``).
    """
    budget: dict[str, Decimal] = {}
    seen = False
    for quota in quotas:
        seen = True
        status = quota.get("status") or {}
        hard = status.get("hard") or (quota.get("spec") or {}).get("hard") or {}
        used = status.get("used") or {}
        for name, limit in hard.items():
            left = parse_quantity(limit) - parse_quantity(used.get(name, 0))
            left += usage.get(name, Decimal(0))
            budget[name] = min(budget.get(name, left), left)
    return budget if seen else None
