"""Local pools inside ``hyperpool run``: the zero-setup default.

A user with a workflow and an executionModels file should not need a second terminal running
``hyperpool pools up``: the engine wraps its run in :func:`local_pools`, which supervises one
pool per pooled task type (sized by a WorkerPool manifest for that type when given, else by the
defaults), with the workflow's work dir as the workers' cwd and ``HYPERPOOL_WORK_DIR``.

Queues that another live supervisor already scales (``pools up`` in another terminal or
container, found through its Redis state) are left to it: two autoscalers on one queue would
each count the whole backlog and start twice the workers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

from hyperpool.demand import UpcomingReader
from hyperpool.local.budget import local_budget, worker_request
from hyperpool.local.manifests import pools_for_routing, pools_from_manifests
from hyperpool.local.metrics import PoolMetrics
from hyperpool.local.state import StatePublisher, served_queues
from hyperpool.local.supervisor import (
    DEFAULT_COOLDOWN,
    DEFAULT_INTERVAL,
    Supervisor,
    SupervisorOptions,
)
from hyperpool.routing import Routing
from hyperpool.services import check_redis
from hyperpool.settings import Settings

log = logging.getLogger("hyperpool.local")

Quantity = str | Decimal | int | float
INTERRUPTED_DRAIN_SECONDS = 10.0


@contextlib.contextmanager
def local_pools(
    settings: Settings,
    routing: Routing,
    work_dir: Path,
    manifests: Sequence[Path] | None = None,
    *,
    budget_cpu: Quantity | None = None,
    budget_memory: Quantity | None = None,
    worker_cpu: Quantity | None = None,
    worker_memory: Quantity | None = None,
    cooldown: float = DEFAULT_COOLDOWN,
    interval: float = DEFAULT_INTERVAL,
    log_dir: Path | None = None,
    interrupted_drain_timeout: float | None = INTERRUPTED_DRAIN_SECONDS,
    runtime: Any = None,
) -> Iterator[Supervisor | None]:
    """Run autoscaled local pools for the pooled task types of ``routing`` while in the block.

    Yields the running :class:`Supervisor`, or ``None`` when there is nothing to supervise
    (no pooled task types, or all their queues are served elsewhere). Worker logs go to
    ``log_dir`` (default ``<work_dir>/logs-hf/pools``), never to the engine's terminal.

    On leaving the block every worker gets a warm shutdown and is waited for: running tasks
    finish. If the block raised (Ctrl-C), workers still running after
    ``interrupted_drain_timeout`` seconds are killed — their messages are redelivered and
    skipped, as the engine has cancelled the run.

    ``runtime``: ``None`` for worker processes, or a callable that, given the pools, returns
    the runtime that starts their workers (``hyperpool.local.cli.container_runtime``; it
    checks its images then, before any worker starts).

    Raises :class:`~hyperpool.errors.ConfigError` for invalid manifests or a pool whose single
    worker exceeds the budget, :class:`~hyperpool.errors.ServiceUnavailable` when RabbitMQ or
    Redis is down.
    """
    if not routing.queues:
        yield None
        return
    work_dir = Path(work_dir).resolve()
    default_request = worker_request(worker_cpu, worker_memory)
    defined = pools_from_manifests(list(manifests or []), routing.namespace, default_request)
    pools = pools_for_routing(routing, defined, default_request)
    client = check_redis(settings)
    try:
        elsewhere = served_queues(client)
    except (redis.RedisError, OSError):
        elsewhere = {}
    for pool in [p for p in pools if p.queue in elsewhere]:
        log.info("queue %s is scaled by supervisor %s; not starting a local pool for it",
                 pool.queue, elsewhere[pool.queue])
        pools.remove(pool)
    if not pools:
        yield None
        return
    options = SupervisorOptions(
        budget=local_budget(budget_cpu, budget_memory), work_dir=work_dir, cooldown=cooldown,
        interval=interval, log_dir=log_dir or work_dir / "logs-hf" / "pools",
        runtime=runtime(pools) if runtime is not None else None)
    supervisor = Supervisor(settings, pools, options,
                            listeners=[StatePublisher(client), PoolMetrics()],
                            upcoming=UpcomingReader(client, [p.queue for p in pools]))
    supervisor.start()
    log.info("local pools: %s (budget %s)", ", ".join(p.name for p in pools),
             options.budget.describe())
    try:
        yield supervisor
    except BaseException:
        supervisor.stop(drain_timeout=interrupted_drain_timeout)
        raise
    supervisor.stop()
