"""Connections to RabbitMQ and Redis that fail fast with one clear line.

An unreachable service must never surface as a traceback or a silent hang: every connect has
a bounded timeout and failures become :class:`ServiceUnavailable` naming the URL (password
masked) and the advice that fits the failure: start the service when nothing listens, check
the password when the login is refused, the host when it does not resolve. A URL that is not
one of the service's URLs is a :class:`ConfigError` before any connection is tried.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

import amqp.exceptions
import redis
from kombu import Connection

from hyperpool.errors import ConfigError, ServiceUnavailable
from hyperpool.settings import DEFAULT_BROKER_URL, DEFAULT_REDIS_URL, Settings, mask_url

START_RABBITMQ = "start it with `rabbitmq-server -detached` (or `make services`)"
START_REDIS = "start it with `redis-server --daemonize yes` (or `make services`)"
BROKER_SCHEMES = ("amqp", "amqps", "pyamqp")
REDIS_SCHEMES = ("redis", "rediss", "unix")


def check_url(url: str, schemes: tuple[str, ...], *, what: str, setting: str,
              example: str) -> None:
    """Refuse a URL that is not one of ``what``'s (``notaurl``, ``http://...``) up front."""
    parts = urlsplit(url)
    if parts.scheme not in schemes or (parts.scheme != "unix" and not parts.hostname):
        raise ConfigError(
            f"{mask_url(url)!r} is not a {what} URL: expected "
            f"{' or '.join(f'{s}://' for s in schemes)}HOST..., e.g. {example}", source=setting)


def _unresolved(exc: BaseException) -> bool:
    return any(isinstance(e, socket.gaierror) for e in (exc, exc.__cause__, exc.__context__))


def broker_advice(exc: BaseException, url: str) -> str:
    """What to do about a failed RabbitMQ connection, by what failed."""
    if isinstance(exc, amqp.exceptions.AccessRefused):
        return ("the login was refused: check the user and password in the URL "
                "(RabbitMQ's guest user may only log in from localhost)")
    if isinstance(exc, amqp.exceptions.NotAllowed):
        return (f"the vhost {urlsplit(url).path[1:] or '/'!r} does not exist or the user may "
                "not use it: check the URL's path (`//` is the default vhost `/`)")
    if _unresolved(exc):
        return f"the host name {urlsplit(url).hostname!r} does not resolve: check the URL"
    return START_RABBITMQ


def redis_advice(exc: BaseException, url: str) -> str:
    """What to do about a failed Redis connection, by what failed."""
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in str(exc) or (
            "NOAUTH" in str(exc)):
        return "the login was refused: check the password (and user) in the URL"
    if _unresolved(exc):
        return f"the host name {urlsplit(url).hostname!r} does not resolve: check the URL"
    return START_REDIS


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
    check_url(settings.broker_url, BROKER_SCHEMES, what="RabbitMQ",
              setting="HYPERPOOL_BROKER_URL", example=DEFAULT_BROKER_URL)
    conn = broker_connection(settings)
    try:
        conn.ensure_connection(max_retries=1, timeout=settings.connect_timeout)
    except Exception as exc:  # kombu raises transport-specific errors
        raise ServiceUnavailable(
            f"cannot reach RabbitMQ at {mask_url(settings.broker_url)}: "
            f"{type(exc).__name__}: {exc}; {broker_advice(exc, settings.broker_url)}"
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
    check_url(settings.redis_url, REDIS_SCHEMES, what="Redis", setting="HYPERPOOL_REDIS_URL",
              example=DEFAULT_REDIS_URL)
    client = redis_client(settings)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise ServiceUnavailable(
            f"cannot reach Redis at {mask_url(settings.redis_url)}: {exc}; "
            f"{redis_advice(exc, settings.redis_url)}"
        ) from None
    return client
