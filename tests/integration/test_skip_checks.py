"""When an executor skips a task, against the real Redis: exact checks wherever a duplicate can
exist, one cached cancel lookup per run otherwise; and how reports keep the run's keys' TTLs."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from hyperpool.executor.results import (
    STREAM_TTL_SECONDS,
    CancelCache,
    TtlRefresher,
    cancel_key,
    done_key,
    report,
    skip_reason,
)
from hyperpool.models import TaskResult


def _run(redis_client):
    run_id = f"test-{uuid.uuid4().hex}"
    return run_id, [cancel_key(run_id), done_key(run_id)]


def test_done_set_is_checked_unless_the_message_is_vouched_fresh(redis_client):
    run_id, keys = _run(redis_client)
    try:
        redis_client.sadd(done_key(run_id), "t1")
        assert "already succeeded" in skip_reason(redis_client, run_id, "t1")
        assert skip_reason(redis_client, run_id, "t2") is None
        # A fresh first delivery cannot be a duplicate: no done-set lookup at all.
        assert skip_reason(redis_client, run_id, "t1", check_done=False,
                           cancels=CancelCache()) is None
    finally:
        redis_client.delete(*keys)


def test_cancel_is_seen_by_fresh_messages_within_the_cache_ttl(redis_client):
    run_id, keys = _run(redis_client)
    cache = CancelCache(ttl=0.3)
    try:
        assert skip_reason(redis_client, run_id, "t", check_done=False, cancels=cache) is None
        redis_client.set(cancel_key(run_id), b"1")
        assert "cancelled" in skip_reason(redis_client, run_id, "t")  # exact: at once
        deadline = time.monotonic() + 0.3 + 0.5
        while skip_reason(redis_client, run_id, "t", check_done=False, cancels=cache) is None:
            assert time.monotonic() < deadline, "cached cancel flag never refreshed"
            time.sleep(0.02)
        # A resumed run clears the flag; its messages are never fresh, so they see that at once.
        redis_client.delete(cancel_key(run_id))
        assert skip_reason(redis_client, run_id, "t") is None
    finally:
        redis_client.delete(*keys)


def test_cancel_cache_asks_redis_once_per_ttl(redis_client):
    run_id, keys = _run(redis_client)
    calls = []
    real_exists = redis_client.exists

    class Counting:
        def exists(self, *names):
            calls.append(names)
            return real_exists(*names)

    cache = CancelCache(ttl=60)
    try:
        for _ in range(100):
            assert not cache.cancelled(Counting(), run_id)  # type: ignore[arg-type]
        assert len(calls) == 1
    finally:
        redis_client.delete(*keys)


def test_reports_set_ttls_once_then_renew_them_after_the_interval(redis_client):
    run_id, keys = _run(redis_client)
    stream = f"hyperpool:run:{run_id}:results"
    ttls = TtlRefresher(every=0.3)
    ok = TaskResult(task_id="t1", attempt=1, exit_code=0, started=1.0, finished=2.0, worker="w")
    try:
        report(redis_client, stream, ok, run_id, ttls=ttls)
        assert redis_client.ttl(stream) > STREAM_TTL_SECONDS - 60
        assert redis_client.ttl(done_key(run_id)) > STREAM_TTL_SECONDS - 60
        # Within the interval a report carries no EXPIRE: a TTL removed meanwhile stays removed...
        redis_client.persist(stream)
        redis_client.persist(done_key(run_id))
        report(redis_client, stream, ok.model_copy(update={"task_id": "t2"}), run_id, ttls=ttls)
        assert redis_client.ttl(stream) == -1 and redis_client.ttl(done_key(run_id)) == -1
        # ...and the first report after it sets both again (Redis lost them: renewed).
        time.sleep(0.35)
        report(redis_client, stream, ok.model_copy(update={"task_id": "t3"}), run_id, ttls=ttls)
        assert redis_client.ttl(stream) > STREAM_TTL_SECONDS - 60
        assert redis_client.ttl(done_key(run_id)) > STREAM_TTL_SECONDS - 60
        assert redis_client.xlen(stream) == 3
        assert redis_client.smembers(done_key(run_id)) == {b"t1", b"t2", b"t3"}
    finally:
        redis_client.delete(*keys, stream)


def test_a_failed_report_leaves_its_ttls_due(redis_client):
    """The TTL counts as set only once Redis confirmed it, so a report retried after an
    outage still sets it."""
    run_id, keys = _run(redis_client)
    stream = f"hyperpool:run:{run_id}:results"
    ttls = TtlRefresher(every=60)
    ok = TaskResult(task_id="t1", attempt=1, exit_code=0, started=1.0, finished=2.0, worker="w")
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    try:
        with pytest.raises(redis.ConnectionError):
            report(dead, stream, ok, run_id, ttls=ttls)
        assert ttls.due(stream) and ttls.due(done_key(run_id))
        report(redis_client, stream, ok, run_id, ttls=ttls)
        assert redis_client.ttl(stream) > 0 and not ttls.due(stream)
    finally:
        redis_client.delete(*keys, stream)
