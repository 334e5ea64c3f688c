"""Prometheus metrics of the local pools, on the shared definitions in :mod:`hyperpool.metrics`.

RabbitMQ's endpoint (:15692) already exports queue depths; what only the supervisor knows is
how many workers each pool runs and wants, and how much budget is left. ``pools up
--metrics-port`` serves one ``/metrics`` for the whole machine: the supervisor shares a
prometheus-client multiprocess directory with its workers (they inherit
``PROMETHEUS_MULTIPROC_DIR``), so the workers' task counters and the pool gauges are scraped
from one port instead of one port per worker process. That directory must be chosen before
prometheus-client is first imported, hence the lazy imports here.
"""

from __future__ import annotations

from typing import Any

from hyperpool.quantities import parse_quantity


def share_with_workers() -> None:
    """Use one multiprocess metrics directory for the supervisor and every worker it starts."""
    from hyperpool.executor.worker import enable_multiprocess_metrics

    enable_multiprocess_metrics()


class PoolMetrics:
    """A supervisor listener mirroring each snapshot into the pool gauges."""

    def __init__(self) -> None:
        from hyperpool import metrics

        self.metrics = metrics
        self._targets: dict[str, int] = {}
        self._exits: dict[tuple[str, str], int] = {}

    def __call__(self, snapshot: dict[str, Any]) -> None:
        m, namespace = self.metrics, snapshot["namespace"]
        for pool in snapshot["pools"]:
            name = pool["name"]
            m.DESIRED_REPLICAS.labels(namespace, name).set(pool["desired"])
            m.ACTUAL_REPLICAS.labels(namespace, name).set(pool["replicas"])
            if pool["depth"] is not None:
                m.QUEUE_DEPTH.labels(namespace, name).set(pool["depth"])
            before = self._targets.get(name, 0)
            if pool["target"] != before:
                direction = "up" if pool["target"] > before else "down"
                m.SCALING_DECISIONS.labels(namespace, name, direction).inc()
            self._targets[name] = pool["target"]
            ooms = pool.get("oom_kills", 0)
            for reason, total in (("oom-killed", ooms), ("error", pool.get("restarts", 0) - ooms)):
                new = total - self._exits.get((name, reason), 0)
                if new > 0:
                    m.WORKER_EXITS.labels(namespace, name, reason).inc(new)
                self._exits[(name, reason)] = total
        for resource in ("cpu", "memory"):
            left = (parse_quantity(snapshot["budget"][resource])
                    - parse_quantity(snapshot["used"][resource]))
            m.BUDGET_HEADROOM.labels(namespace, resource).set(float(left))

    def serve(self, port: int) -> None:
        self.metrics.serve(port)

    def forget(self, pid: int) -> None:
        """Drop the live gauges of a worker process that exited."""
        self.metrics.mark_process_dead(pid)
