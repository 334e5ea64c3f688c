"""The job model's executor: one message, one process (``hyperpool execute``).

Locally the engine starts one such process per task; on Kubernetes a ``batch/v1`` Job runs
the same command. The result goes to the run's completion stream exactly like a pool
worker's, so the engine cannot tell the models apart.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import TypeVar

import redis
from pydantic import ValidationError

from hyperpool.errors import ConfigError, ServiceUnavailable
from hyperpool.executor.results import patiently, report, skip_reason
from hyperpool.executor.runner import run_message
from hyperpool.models import TaskMessage, describe_validation_error
from hyperpool.services import check_redis, redis_client
from hyperpool.settings import Settings

PATIENCE = 120.0  # seconds a job waits for Redis to come back
T = TypeVar("T")


def parse_message(text: str, *, source: str = "task message") -> TaskMessage:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                          source=source) from None
    try:
        return TaskMessage.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc), source=source) from None


def _redis_when_back(settings: Settings) -> redis.Redis:
    """Connect to Redis, waiting out a restart (a job started mid-restart must not fail)."""
    client = redis_client(settings)
    with contextlib.suppress(redis.RedisError, OSError):
        patiently(client.ping, PATIENCE)
        return client
    return check_redis(settings)  # a last try: raises naming the URL and how to start Redis


def _patiently(call: Callable[[], T], what: str) -> T:
    """``call()``, waiting out a Redis restart; a job fails if Redis stays away."""
    try:
        return patiently(call, PATIENCE)
    except (redis.RedisError, OSError):
        raise ServiceUnavailable(f"cannot {what}: Redis unreachable") from None


def execute_once(settings: Settings, text: str, *, reply_to: str | None, attempt: int = 1,
                 model: str = "job", run_id: str | None = None) -> int:
    """Run the message; report to ``reply_to`` if given; return the command's exit code."""
    message = parse_message(text)
    client = _redis_when_back(settings) if reply_to else None
    if client is not None:
        reason = _patiently(lambda: skip_reason(client, run_id, message.taskId),
                            "check the run's cancel flag")
        if reason:
            print(f"hyperpool execute: task {message.taskId} skipped: {reason}", flush=True)
            return 0
    result = run_message(message, default_work_dir=settings.work_dir, attempt=attempt,
                         model=model, new_session=False)
    if client is not None and reply_to:
        _patiently(lambda: report(client, reply_to, result, run_id), "report the result")
    if result.error:
        print(f"hyperpool execute: {result.error}", flush=True)
    return result.exit_code
