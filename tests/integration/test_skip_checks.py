"""When an executor skips a task, against the real Redis: exact checks wherever a duplicate can
exist, one cached cancel lookup per run otherwise."""

from __future__ import annotations

import time
import uuid

from hyperpool.executor.results import CancelCache, cancel_key, done_key, skip_reason


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
