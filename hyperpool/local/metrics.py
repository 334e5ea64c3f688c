"""Prometheus metrics of the local pools (``pools up --metrics-port``).

RabbitMQ's own endpoint (:15692) already exports queue depths; what only the supervisor knows is
how many workers each pool runs and wants, and how much of the budget they use. Exported from
the supervisor rather than from each worker: one port per machine instead of one per process,
and it is what docker-compose's Prometheus scrapes as "the pools". A private registry keeps
several supervisors in one process (tests) from colliding.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from hyperpool.quantities import parse_quantity

LABELS = ("pool", "queue", "task_type")


class PoolMetrics:
    """A supervisor listener mirroring each snapshot into gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        gauge = self._gauge
        self.replicas = gauge("hyperpool_pool_replicas", "Workers running (not draining).")
        self.draining = gauge("hyperpool_pool_draining", "Workers finishing their last task.")
        self.desired = gauge("hyperpool_pool_desired_replicas",
                             "Desired replicas from the scaling formula.")
        self.depth = gauge("hyperpool_pool_queue_depth",
                           "Ready + unacknowledged messages of the pool's queue.")
        self.budget = Gauge("hyperpool_local_budget", "Local budget for worker pools.",
                            ["resource"], registry=self.registry)
        self.used = Gauge("hyperpool_local_budget_used", "Budget held by workers.",
                          ["resource"], registry=self.registry)

    def _gauge(self, name: str, doc: str) -> Gauge:
        return Gauge(name, doc, LABELS, registry=self.registry)

    def __call__(self, snapshot: dict[str, Any]) -> None:
        for pool in snapshot["pools"]:
            labels = (pool["name"], pool["queue"], pool["task_type"])
            self.replicas.labels(*labels).set(pool["replicas"])
            self.draining.labels(*labels).set(pool["draining"])
            self.desired.labels(*labels).set(pool["desired"])
            if pool["depth"] is not None:
                self.depth.labels(*labels).set(pool["depth"])
        for resource in ("cpu", "memory"):
            self.budget.labels(resource).set(float(parse_quantity(snapshot["budget"][resource])))
            self.used.labels(resource).set(float(parse_quantity(snapshot["used"][resource])))

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - containers
        start_http_server(port, addr=addr, registry=self.registry)
