"""The desired-replicas formula, pure, shared by the local runtime and the PrometheusRule.

For pool *i* in one namespace::

    desired_i = min(maxReplicas_i, ceil(depth_i / concurrency_i),
                    ceil(depth_i / sum(depths) * fit_i))

``depth`` is ready + unacknowledged messages (busy workers hold unacked messages, so ready
alone would scale a fully busy pool to zero). ``fit_i`` is how many pod-i requests fit in the
budget left to worker pools (ResourceQuota hard minus non-pool use on Kubernetes; cores and
memory of the machine locally). Pools thus share the budget in proportion to their backlog and
never get more workers than tasks waiting. ``minReplicas`` is a floor applied afterwards, as
KEDA does. ``concurrency`` is how many tasks one replica runs at once (a WorkerPool's
``concurrency``, 1 by default): a replica per task would leave the others' slots idle. The
cooldown before scaling to zero is stateful and lives in the callers.

**Look-ahead** (``upcoming``): the engine counts, per queue, tasks whose predecessors are all
dispatched — work that arrives when the running tasks finish. A pool with upcoming work and no
replica wanted for its backlog gets one warm replica, but only from the budget the backlog
shares above left over (largest upcoming count first), so it never takes a worker from work that
is waiting now; and it is only desired, so it never stops a busy worker either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction


@dataclass(frozen=True)
class PoolDemand:
    """One pool's backlog and per-replica resource requests (base units: cores, bytes)."""

    name: str
    depth: int
    max_replicas: int
    min_replicas: int = 0
    requests: Mapping[str, Decimal] = field(default_factory=dict)
    concurrency: int = 1
    upcoming: int = 0  # tasks about to arrive (0 when the pool's look-ahead is off)


def fit(requests: Mapping[str, Decimal], available: Mapping[str, Decimal]) -> int | None:
    """How many replicas with ``requests`` fit in ``available``; ``None`` when unconstrained.

    A resource the budget does not mention does not constrain; a request of zero does not
    either. A budget that is already negative (non-pool use above the hard limit) fits 0.
    """
    counts = []
    for resource, limit in available.items():
        need = requests.get(resource)
        if need is None or need <= 0:
            continue
        counts.append(max(0, math.floor(Fraction(limit) / Fraction(need))))
    return min(counts) if counts else None


def desired_replicas(
    pools: Sequence[PoolDemand], available: Mapping[str, Decimal]
) -> dict[str, int]:
    """Desired replicas for every pool of one namespace (see the module docstring)."""
    total = sum(max(0, p.depth) for p in pools)
    result: dict[str, int] = {}
    for pool in pools:
        depth = max(0, pool.depth)
        want = min(pool.max_replicas, -(-depth // max(1, pool.concurrency)))
        room = fit(pool.requests, available)
        if room is not None and total > 0:
            want = min(want, math.ceil(Fraction(depth, total) * room))
        result[pool.name] = max(pool.min_replicas, want)
    _warm_for_upcoming(pools, available, result)
    return result


def _warm_for_upcoming(pools: Sequence[PoolDemand], available: Mapping[str, Decimal],
                       result: dict[str, int]) -> None:
    """Give pools with upcoming work and nothing desired one replica from the leftover budget."""
    waiting = sorted((p for p in pools if p.upcoming > 0 and result[p.name] == 0
                      and p.max_replicas > 0), key=lambda p: -p.upcoming)
    if not waiting:
        return
    left = dict(available)
    for pool in pools:
        for resource, need in pool.requests.items():
            if resource in left:
                left[resource] -= need * result[pool.name]
    for pool in waiting:
        if fit(pool.requests, left) == 0:
            continue
        result[pool.name] = 1
        for resource, need in pool.requests.items():
            if resource in left:
                left[resource] -= need


def quota_max_replicas(
    max_replicas: int, requests: Mapping[str, Decimal], available: Mapping[str, Decimal]
) -> int:
    """The most replicas a pool can ever run: its max, capped by what the budget holds."""
    room = fit(requests, available)
    return max_replicas if room is None else min(max_replicas, room)
