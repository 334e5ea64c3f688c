"""The one place that reads the environment.

hyperpool's own variables (``HYPERPOOL_*``) win; the names that existing HyperFlow deployments
already set (``RABBIT_HOSTNAME``, ``REDIS_URL``, ``QUEUE_NAME``, ``HF_VAR_NAMESPACE``) are
honoured next, so an executor image dropped into a HyperFlow cluster works unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_NAMESPACE = "default"


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``****`` (for every log line and error)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:****@", url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:****@{netloc[1]}"))


def broker_url_from_rabbit_hostname(hostname: str) -> str:
    """Translate HyperFlow's ``RABBIT_HOSTNAME`` (``host``, ``host:port`` or ``user:pass@host``).

    HyperFlow's executors connect with ``amqp://${RABBIT_HOSTNAME}``; guest/guest is RabbitMQ's
    default user, so a bare host name gets it too.
    """
    if "://" in hostname:
        return hostname
    if "@" not in hostname:
        hostname = f"guest:guest@{hostname}"
    return f"amqp://{hostname}//"


@dataclass(frozen=True)
class Settings:
    """Process-wide configuration; build it with :func:`load_settings`."""

    broker_url: str = DEFAULT_BROKER_URL
    redis_url: str = DEFAULT_REDIS_URL
    namespace: str = DEFAULT_NAMESPACE
    queue_name: str | None = None
    work_dir: str = field(default_factory=os.getcwd)
    management_url: str = "http://127.0.0.1:15672"
    management_user: str = "guest"
    management_password: str = "guest"
    rabbitmq_metrics_url: str = "http://127.0.0.1:15692"
    connect_timeout: float = 5.0
    delivery_limit: int = 5
    metrics_port: int | None = None


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name)
        if value:
            return value
    return None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read :class:`Settings` from ``env`` (default ``os.environ``)."""
    env = os.environ if env is None else env
    broker = env.get("HYPERPOOL_BROKER_URL")
    if not broker and env.get("RABBIT_HOSTNAME"):
        broker = broker_url_from_rabbit_hostname(env["RABBIT_HOSTNAME"])
    broker = broker or DEFAULT_BROKER_URL
    parts = urlsplit(broker)
    mgmt_default = f"http://{parts.hostname or '127.0.0.1'}:15672"
    metrics_port = env.get("HYPERPOOL_METRICS_PORT")
    return Settings(
        broker_url=broker,
        redis_url=_first(env, "HYPERPOOL_REDIS_URL", "REDIS_URL") or DEFAULT_REDIS_URL,
        namespace=_first(env, "HYPERPOOL_NAMESPACE", "HF_VAR_NAMESPACE") or DEFAULT_NAMESPACE,
        queue_name=_first(env, "HYPERPOOL_QUEUE", "QUEUE_NAME"),
        work_dir=_first(env, "HYPERPOOL_WORK_DIR", "HF_VAR_WORK_DIR") or os.getcwd(),
        management_url=env.get("HYPERPOOL_MANAGEMENT_URL", mgmt_default),
        management_user=env.get("HYPERPOOL_MANAGEMENT_USER", parts.username or "guest"),
        management_password=env.get("HYPERPOOL_MANAGEMENT_PASSWORD", parts.password or "guest"),
        rabbitmq_metrics_url=env.get("HYPERPOOL_RABBITMQ_METRICS_URL",
                                     f"http://{parts.hostname or '127.0.0.1'}:15692"),
        connect_timeout=float(env.get("HYPERPOOL_CONNECT_TIMEOUT", "5")),
        delivery_limit=int(env.get("HYPERPOOL_DELIVERY_LIMIT", "5")),
        metrics_port=int(metrics_port) if metrics_port else None,
    )
