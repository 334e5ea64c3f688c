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
    return result


def quota_max_replicas(
    max_replicas: int, requests: Mapping[str, Decimal], available: Mapping[str, Decimal]
) -> int:
    """The most replicas a pool can ever run: its max, capped by what the budget holds."""
    room = fit(requests, available)
    return max_replicas if room is None else min(max_replicas, room)
