"""Connections to RabbitMQ and Redis that fail fast with one clear line.

An unreachable service must never surface as a traceback or a silent hang: every connect has
a bounded timeout and failures become :class:`ServiceUnavailable` naming the URL (password
masked) and how to start the service.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu import Connection

from hyperpool.errors import ServiceUnavailable
from hyperpool.settings import Settings, mask_url

START_RABBITMQ = "start it with `rabbitmq-server -detached` (or `make services`)"
START_REDIS = "start it with `redis-server --daemonize yes` (or `make services`)"


def broker_connection(settings: Settings) -> Connection:
    """A kombu connection with bounded connect timeout and publisher confirms."""
    return Connection(
        settings.broker_url,
        connect_timeout=settings.connect_timeout,
        transport_options={"confirm_publish": True},
        heartbeat=0,
    )


def check_broker(settings: Settings) -> None:
    """Raise :class:`ServiceUnavailable` unless RabbitMQ accepts a connection now."""
    conn = broker_connection(settings)
    try:
        conn.ensure_connection(max_retries=1, timeout=settings.connect_timeout)
    except Exception as exc:  # kombu raises transport-specific errors
        raise ServiceUnavailable(
            f"cannot reach RabbitMQ at {mask_url(settings.broker_url)}: "
            f"{type(exc).__name__}: {exc}; {START_RABBITMQ}"
        ) from None
    finally:
        conn.release()


def redis_client(settings: Settings, *, max_connections: int | None = None) -> redis.Redis:
    """A Redis client with bounded connect timeout (commands may block longer, e.g. XREAD).

    ``max_connections``: share at most this many connections between the client's threads
    (a thread waits for a free one) instead of opening one per thread that needs one.
    """
    options: dict[str, Any] = {"socket_connect_timeout": settings.connect_timeout,
                               "health_check_interval": 30, "decode_responses": False}
    if max_connections is None:
        return redis.Redis.from_url(settings.redis_url, **options)
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=max_connections, timeout=None, **options)
    return redis.Redis(connection_pool=pool)


def check_redis(settings: Settings) -> redis.Redis:
    """Return a connected client or raise :class:`ServiceUnavailable`."""
    client = redis_client(settings)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise ServiceUnavailable(
            f"cannot reach Redis at {mask_url(settings.redis_url)}: {exc}; {START_REDIS}"
        ) from None
    return client
