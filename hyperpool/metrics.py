"""Prometheus metric definitions, in one place so dashboards and code cannot drift.

The local supervisor serves one ``/metrics`` for itself and every worker process it starts, so
pool metrics use prometheus-client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` must be
set before anything imports this module — ``hyperpool worker`` sets it before importing
anything — and ``/metrics`` aggregates every process writing there.
Names follow Prometheus conventions (base units, ``_total`` counters); the tests check them
with ``promtool check metrics`` and check the dashboards against :data:`EXPORTED`.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# -- executor pools -------------------------------------------------------------------------
TASKS = Counter("hyperpool_tasks_total", "Tasks finished by executor pools, by outcome "
                "(succeeded, failed, skipped, invalid, poison).",
                ["queue", "task_type", "outcome"])
TASK_DURATION = Histogram("hyperpool_task_duration_seconds",
                          "Wall-clock run time of a task's command.", ["queue", "task_type"],
                          buckets=DURATION_BUCKETS)
IN_PROGRESS = Gauge("hyperpool_tasks_in_progress", "Tasks running right now.",
                    ["queue", "task_type"], multiprocess_mode="livesum")
REDELIVERIES = Counter("hyperpool_task_redeliveries_total",
                       "Task messages received again after a worker died or a connection "
                       "dropped.", ["queue", "task_type"])

# -- engine ---------------------------------------------------------------------------------
PUBLISHED = Counter("hyperpool_engine_tasks_dispatched_total",
                    "Tasks the engine handed to a pool queue or the job model.",
                    ["task_type", "model"])
UPCOMING = Gauge("hyperpool_engine_upcoming_tasks", "Tasks whose predecessors are all "
                 "dispatched, per pool queue (look-ahead demand).", ["queue"],
                 multiprocess_mode="livesum")
COMPLETED = Counter("hyperpool_engine_tasks_completed_total",
                    "Task completions the engine accepted, by outcome.",
                    ["task_type", "model", "outcome"])
WORKFLOW_TASKS = Gauge("hyperpool_engine_workflow_tasks", "Tasks of the current run by state.",
                       ["workflow", "state"], multiprocess_mode="livesum")
COMPLETION_LATENCY = Histogram("hyperpool_engine_completion_latency_seconds",
                               "From dispatch to the engine learning the result.", ["model"],
                               buckets=LATENCY_BUCKETS + (30, 60, 300, 3600))

# -- local supervisor and controller --------------------------------------------------------
DESIRED_REPLICAS = Gauge("hyperpool_pool_desired_replicas", "Replicas the scaling formula wants.",
                         ["namespace", "pool"], multiprocess_mode="livemax")
ACTUAL_REPLICAS = Gauge("hyperpool_pool_replicas", "Replicas running.", ["namespace", "pool"],
                        multiprocess_mode="livemax")
QUEUE_DEPTH = Gauge("hyperpool_pool_queue_messages", "Ready + unacknowledged messages of the "
                    "pool's queue (the scaling signal).", ["namespace", "pool"],
                    multiprocess_mode="livemax")
SCALING_DECISIONS = Counter("hyperpool_pool_scaling_decisions_total",
                            "Scale-ups and scale-downs decided.",
                            ["namespace", "pool", "direction"])
WORKER_EXITS = Counter("hyperpool_pool_worker_exits_total",
                       "Pool workers that exited on their own (not stopped by the supervisor), "
                       "by reason: error (a non-zero exit) or oom-killed.",
                       ["namespace", "pool", "reason"])
BUDGET_HEADROOM = Gauge("hyperpool_pool_budget_headroom", "Budget/quota left for pools, by "
                        "resource (cores, bytes).", ["namespace", "resource"],
                        multiprocess_mode="livemin")
RECONCILE_DURATION = Histogram("hyperpool_controller_reconcile_duration_seconds",
                               "Time to reconcile one WorkerPool.", ["namespace"],
                               buckets=LATENCY_BUCKETS)
RECONCILE_ERRORS = Counter("hyperpool_controller_reconcile_errors_total",
                           "Reconciles that failed, by reason.", ["namespace", "reason"])

EXPORTED = {
    "hyperpool_tasks_total", "hyperpool_task_duration_seconds", "hyperpool_tasks_in_progress",
    "hyperpool_task_redeliveries_total", "hyperpool_engine_tasks_dispatched_total",
    "hyperpool_engine_tasks_completed_total", "hyperpool_engine_workflow_tasks",
    "hyperpool_engine_upcoming_tasks",
    "hyperpool_engine_completion_latency_seconds", "hyperpool_pool_desired_replicas",
    "hyperpool_pool_replicas", "hyperpool_pool_queue_messages",
    "hyperpool_pool_scaling_decisions_total", "hyperpool_pool_budget_headroom",
    "hyperpool_pool_worker_exits_total",
    "hyperpool_controller_reconcile_duration_seconds",
    "hyperpool_controller_reconcile_errors_total",
}


def mark_process_dead(pid: int) -> None:
    """Drop an exited worker process's live gauges (its counters stay summed)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def serve(port: int, *, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``port``, aggregating all processes in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(port, addr=addr, registry=registry)
    else:
        start_http_server(port, addr=addr)
