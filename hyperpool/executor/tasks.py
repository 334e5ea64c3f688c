"""``hyperpool.run``: the one Celery task every pool executes.

It validates the HyperFlow job message, skips it if its workflow run was cancelled, runs the
command and appends the result to the run's completion stream. Failures that our code did not
expect dead-letter the message (see ``app.py``); an invalid message is reported to the engine
as failed and dead-lettered at once, because redelivering it cannot help.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import redis
from celery import Celery
from celery.exceptions import Reject
from pydantic import ValidationError

from hyperpool import metrics
from hyperpool.executor.results import CancelCache, patiently, report, skip_reason
from hyperpool.executor.runner import describe, run_message, worker_name
from hyperpool.models import TaskMessage, TaskResult, describe_validation_error
from hyperpool.services import redis_client
from hyperpool.settings import Settings, load_settings, mask_url

log = logging.getLogger("hyperpool.executor")
REDIS_RETRY_SECONDS = 120.0  # then the message is requeued
REDIS_CONNECTIONS = 8  # per pool process, shared by its slot threads

_redis: tuple[int, redis.Redis] | None = None
_cancels = CancelCache()


def _client(settings: Settings) -> redis.Redis:
    """One Redis client per process, shared by its slot threads (redis-py's connection pool
    is thread-safe); a forked process makes its own rather than share its parent's sockets.

    At most ``REDIS_CONNECTIONS`` connections: redis-py's default pool opens one for every
    thread that finds none free, so a fresh wide pool opened a connection (TCP, ``HELLO``,
    ``CLIENT SETINFO``) per slot when its first stage finished at once: 219 connections for
    the 469-task Montage DAG, on the path of every first result. A slot holds a connection
    for one short round trip, so a few serve them all.
    """
    global _redis
    if _redis is None or _redis[0] != os.getpid():
        _redis = (os.getpid(), redis_client(settings, max_connections=REDIS_CONNECTIONS))
    return _redis[1]


def _patiently(settings: Settings, task_id: str | None, what: str, call: Any) -> Any:
    """``call(client)``, riding out a Redis outage; requeue the message if it lasts.

    Without this, an exception dead-letters the message (a 2 s Redis restart once
    dead-lettered a whole pool's queue, message after message, at the cancel check).
    """
    try:
        return patiently(lambda: call(_client(settings)), REDIS_RETRY_SECONDS)
    except (redis.RedisError, OSError) as exc:
        log.error("task %s: cannot %s: Redis %s: %s; requeueing", task_id, what,
                  mask_url(settings.redis_url), exc)
        raise Reject(f"cannot {what}: {exc}", requeue=True) from None


def _report(settings: Settings, stream: str, result: TaskResult, run_id: str | None) -> None:
    """Deliver ``result``; if Redis stays down, requeue the message rather than lose it."""
    _patiently(settings, result.task_id, "report its result",
               lambda client: report(client, stream, result, run_id))


def delivery_count(request: Any) -> int:
    """How often the broker delivered this message before (quorum queues' x-delivery-count)."""
    headers = getattr(request, "headers", None) or {}
    value = headers.get("x-delivery-count", getattr(request, "x-delivery-count", 0)) or 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _poisoned(settings: Settings, message: Any, reply_to: str | None, attempt: int,
              run_id: str | None, deliveries: int) -> None:
    """Park a message that has killed its worker on every delivery (it is not run again)."""
    task_id = message.get("taskId") if isinstance(message, dict) else None
    problem = (f"poison message: delivered {deliveries} times and its worker died every time; "
               "moved to the dead-letter queue")
    log.error("task %s: %s", task_id, problem)
    if reply_to and task_id:
        now = time.time()
        _report(settings, reply_to, TaskResult(
            task_id=str(task_id), attempt=attempt, exit_code=-1, started=now, finished=now,
            worker=worker_name(), error=problem), run_id)
    raise Reject(problem, requeue=False)


def execute(settings: Settings, message: dict[str, Any], reply_to: str | None, attempt: int,
            run_id: str | None, deliveries: int = 0, queue: str = "",
            check_done: bool = True) -> dict[str, Any] | None:
    task_type = str(message.get("name") or "unknown") if isinstance(message, dict) else "unknown"
    if deliveries:
        metrics.REDELIVERIES.labels(queue, task_type).inc()
    try:
        outcome = _execute(settings, message, reply_to, attempt, run_id, deliveries, queue,
                           task_type, check_done or deliveries > 0 or attempt > 1)
    except Reject as exc:
        outcome = "poison" if "poison" in str(exc.reason) else "invalid"
        if exc.requeue:
            outcome = "requeued"
        metrics.TASKS.labels(queue, task_type, outcome).inc()
        raise
    metrics.TASKS.labels(queue, task_type, outcome).inc()
    return None


def _execute(settings: Settings, message: dict[str, Any], reply_to: str | None, attempt: int,
             run_id: str | None, deliveries: int, queue: str, task_type: str,
             check_done: bool) -> str:
    # The broker dead-letters by itself once x-delivery-limit is exceeded, but nobody would
    # tell the engine; so the last delivery the limit allows is reported and parked here.
    if deliveries >= max(1, settings.delivery_limit - 1):
        _poisoned(settings, message, reply_to, attempt, run_id, deliveries + 1)
    task_id = message.get("taskId") if isinstance(message, dict) else None
    try:
        msg = TaskMessage.model_validate(message)
    except ValidationError as exc:
        problem = describe_validation_error(exc)
        log.error("task %s: invalid task message (%s); dead-lettering", task_id, problem)
        if reply_to and task_id:
            now = time.time()
            _report(settings, reply_to, TaskResult(
                task_id=str(task_id), attempt=attempt, exit_code=-1, started=now, finished=now,
                worker=worker_name(), error=f"invalid task message: {problem}"), run_id)
        raise Reject(f"invalid task message: {problem}", requeue=False) from None
    reason = _patiently(settings, msg.taskId, "check its run's cancel flag and done-set",
                        lambda client: skip_reason(client, run_id, msg.taskId,
                                                   check_done=check_done, cancels=_cancels))
    if reason:
        log.info("task %s: skipped: %s", msg.taskId, reason)
        return "skipped"
    if log.isEnabledFor(logging.DEBUG):
        log.debug("task %s: %s", msg.taskId, describe(msg))
    in_progress = metrics.IN_PROGRESS.labels(queue, task_type)
    in_progress.inc()
    try:
        result = run_message(msg, default_work_dir=settings.work_dir, attempt=attempt)
    finally:
        in_progress.dec()
    metrics.TASK_DURATION.labels(queue, task_type).observe(result.seconds)
    if reply_to:
        _report(settings, reply_to, result, run_id)
    return "succeeded" if result.ok else "failed"


def register(app: Celery) -> None:
    """Register ``hyperpool.run`` on ``app`` (the worker's and the publisher's app)."""
    @app.task(name="hyperpool.run", ignore_result=True, bind=True)
    def run(self: Any, message: dict[str, Any], reply_to: str | None = None, attempt: int = 1,
            run_id: str | None = None, fresh: bool = False) -> dict[str, Any] | None:
        # ``fresh``: the engine vouches that this message cannot be a duplicate (first
        # publish of a first attempt by an engine that did not resume); messages without
        # it (older engines, other publishers) get the exact done-set check.
        settings: Settings = app.conf.get("hyperpool_settings") or load_settings()
        queue = (self.request.delivery_info or {}).get("routing_key") or ""
        return execute(settings, message, reply_to, attempt, run_id,
                       delivery_count(self.request), queue, check_done=not fresh)
