"""WorkerPool manifests -> the pools a local supervisor keeps.

Users describe pools once, as the ``hyperflow.agh.edu.pl/v1`` WorkerPool manifests they would
``kubectl apply``; the local runtime reads the very same files (one or many YAML documents,
or a ``kind: List``), so nothing is written twice. Every error names the file, the document and
the field, because a YAML stream of twenty pools with "validation error" and no position is
useless.

Fields that only mean something on Kubernetes (``image``, ``rabbitHostname``, ``redisUrl``,
``prometheusUrl``) are accepted and ignored locally: the workers run this Python and talk to the
broker and Redis the supervisor measures, otherwise the depth it scales on would be another
broker's. Requests follow Kubernetes: a missing request defaults to the limit, then to the
local default (:data:`~hyperpool.local.budget.DEFAULT_WORKER_REQUEST`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from hyperpool.errors import ConfigError
from hyperpool.local.budget import DEFAULT_WORKER_REQUEST, NOTHING, Resources
from hyperpool.models import validate
from hyperpool.routing import Routing, pool_queue
from hyperpool.workerpool_spec import WorkerPool, WorkerPoolSpec

log = logging.getLogger("hyperpool.local")

DEFAULT_MAX_REPLICAS = WorkerPoolSpec.model_fields["maxReplicaCount"].default


@dataclass(frozen=True)
class PoolConfig:
    """One local pool: which queue, how many workers, what one worker costs."""

    name: str
    task_type: str
    queue: str
    min_replicas: int
    max_replicas: int
    request: Resources
    source: str
    concurrency: int = 1  # tasks one worker runs at once (its slot threads)
    look_ahead: bool = True  # spec.lookAhead: a warm worker when the DAG says work is coming
    image: str | None = None  # spec.image: the container runtime's (processes ignore it)
    limits: Resources | None = None  # initialResources.limits, for containers


def _documents(path: Path) -> list[tuple[int, Any]]:
    """Parse every YAML document of ``path`` (1-based indexes; empty documents skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from None
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else None
        raise ConfigError(f"malformed YAML: {problem}", source=str(path), where=where) from None
    return [(index, doc) for index, doc in enumerate(docs, start=1) if doc is not None]


def _expand(path: Path, index: int, doc: Any) -> Iterable[tuple[str, Any]]:
    """Yield ``(where, manifest)`` for a document, flattening a ``kind: List``."""
    where = f"document {index}"
    if not isinstance(doc, dict):
        raise ConfigError(f"expected a WorkerPool mapping, got {type(doc).__name__}",
                          source=str(path), where=where)
    if doc.get("kind") == "List" and doc.get("apiVersion") == "v1":
        items = doc.get("items")
        if not isinstance(items, list):
            raise ConfigError("a List needs a list of 'items'", source=str(path), where=where)
        for item_index, item in enumerate(items):
            item_where = f"{where}: items[{item_index}]"
            if not isinstance(item, dict):
                raise ConfigError("expected a WorkerPool mapping", source=str(path),
                                  where=item_where)
            yield item_where, item
    else:
        yield where, doc


def load_manifests(paths: Sequence[Path]) -> list[tuple[str, WorkerPool]]:
    """Validate every WorkerPool in ``paths``; returns ``(source, pool)`` pairs in file order.

    ``source`` reads ``file: document N`` so later errors (duplicates) can point back at it.
    """
    pools: list[tuple[str, WorkerPool]] = []
    for path in paths:
        for index, doc in _documents(Path(path)):
            for where, manifest in _expand(Path(path), index, doc):
                pool = validate(WorkerPool, manifest, source=str(path), where=where)
                pools.append((f"{path}: {where}", pool))
    return pools


def _request(pool: WorkerPool, default: Resources) -> Resources:
    res = pool.spec.initialResources
    cpu = res.requests.cpu_cores
    memory = res.requests.memory_bytes
    cpu = cpu if cpu is not None else res.limits.cpu_cores
    memory = memory if memory is not None else res.limits.memory_bytes
    return Resources(default.cpu if cpu is None else Decimal(cpu),
                     default.memory if memory is None else Decimal(memory))


def _limits(pool: WorkerPool, request: Resources) -> Resources:
    """What one worker container may use: the stated limits, else its request."""
    limits = pool.spec.initialResources.limits
    cpu, memory = limits.cpu_cores, limits.memory_bytes
    return Resources(request.cpu if cpu is None else Decimal(cpu),
                     request.memory if memory is None else Decimal(memory))


def pool_config(source: str, pool: WorkerPool, namespace: str,
                default_request: Resources = DEFAULT_WORKER_REQUEST) -> PoolConfig:
    """The local pool of one validated manifest (queue in its namespace, else ``namespace``)."""
    spec = pool.spec
    try:
        queue = pool_queue(spec, pool.metadata.namespace or namespace)
    except ConfigError as exc:
        raise ConfigError(exc.message, source=source,
                          where="spec.queueName" if spec.queueName else "spec.taskType") from None
    request = _request(pool, default_request)
    return PoolConfig(
        name=pool.metadata.name,
        task_type=spec.taskType,
        queue=queue,
        min_replicas=spec.minReplicaCount,
        max_replicas=spec.maxReplicaCount,
        request=request,
        source=source,
        concurrency=spec.concurrency or 1,
        look_ahead=spec.lookAhead,
        image=spec.image,
        limits=_limits(pool, request),
    )


def _check_unique(pools: Sequence[PoolConfig]) -> None:
    names: dict[str, PoolConfig] = {}
    queues: dict[str, PoolConfig] = {}
    for pool in pools:
        for seen, key, what in ((names, pool.name, "pool name"), (queues, pool.queue, "queue")):
            if key in seen:
                raise ConfigError(
                    f"{what} {key!r} is also used by {seen[key].source}; two pools on one "
                    "queue would both count its backlog", source=pool.source)
            seen[key] = pool


def pools_from_manifests(paths: Sequence[Path], namespace: str,
                         default_request: Resources = DEFAULT_WORKER_REQUEST
                         ) -> list[PoolConfig]:
    """Every pool the manifest files define, checked for duplicate names and queues."""
    pools = [pool_config(source, pool, namespace, default_request)
             for source, pool in load_manifests(paths)]
    _check_unique(pools)
    return pools


def default_pool(task_type: str, queue: str,
                 default_request: Resources = DEFAULT_WORKER_REQUEST) -> PoolConfig:
    """The pool of a routed task type nobody wrote a manifest for."""
    return PoolConfig(name=task_type, task_type=task_type, queue=queue, min_replicas=0,
                      max_replicas=DEFAULT_MAX_REPLICAS, request=default_request,
                      source="executionModels (defaults)")


def pools_for_routing(routing: Routing, manifests: Sequence[PoolConfig],
                      default_request: Resources = DEFAULT_WORKER_REQUEST) -> list[PoolConfig]:
    """One pool per pooled task type of ``routing``; a manifest for the type sets its sizing.

    The queue always comes from the routing, because that is where the engine publishes; a
    manifest naming another queue gets a warning rather than a pool nobody feeds.
    """
    by_type = {pool.task_type: pool for pool in manifests}
    pools = []
    for task_type, queue in sorted(routing.queues.items()):
        manifest = by_type.get(task_type)
        if manifest is None:
            pools.append(default_pool(task_type, queue, default_request))
            continue
        if manifest.queue != queue:
            log.warning("%s: pool %s consumes %r but the engine publishes %s tasks to %r; "
                        "using %r", manifest.source, manifest.name, manifest.queue, task_type,
                        queue, queue)
        pools.append(replace(manifest, queue=queue))
    _check_unique(pools)
    return pools


def check_fit(pools: Sequence[PoolConfig], budget: Resources) -> list[str]:
    """The one fit rule of ``pools validate``, ``pools up`` and ``run``: refuse a pool of which
    not even one worker fits the budget (its tasks would wait forever); return a warning when
    the pools' minReplicaCount together exceed it (some then stay below their minimum)."""
    for pool in pools:
        if not pool.request.fits_in(budget):
            raise ConfigError(
                f"pool {pool.name!r}: one worker requests {pool.request.describe()} but the "
                f"local budget is {budget.describe()}; lower spec.initialResources.requests "
                "or raise --budget-cpu/--budget-memory", source=pool.source)
    floor = NOTHING
    for pool in pools:
        for _ in range(pool.min_replicas):
            floor = floor + pool.request
    if floor.fits_in(budget):
        return []
    return [f"the pools' minReplicaCount need {floor.describe()}, more than the budget "
            f"{budget.describe()}; some will stay below their minimum"]
