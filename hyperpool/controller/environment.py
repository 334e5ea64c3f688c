"""The worker container's command line and environment, credentials by reference.

Broker and Redis passwords may live in Secrets (``spec.brokerCredentials``,
``spec.redisCredentials``). The controller never reads them — it has no access to Secrets at all
(see k8s/README.md) — it only writes ``valueFrom.secretKeyRef`` entries, and composes the URLs
with Kubernetes' dependent environment variables: ``$(HYPERPOOL_BROKER_PASSWORD)`` in a later
entry's ``value`` is expanded by the kubelet when the container starts. So the password appears
neither in the WorkerPool, nor in the Deployment, nor in any log; only inside the worker
process. The kubelet does not URL-escape the expanded values: a password with ``@``, ``/``, ``:``
or ``%`` must be URL-encoded in the Secret (generated passwords, e.g. the RabbitMQ chart's, are
alphanumeric).

User ``env`` entries come last and replace a built-in entry of the same name (a list with two
entries of one name would be rejected by server-side apply's merge key).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from hyperpool.controller.params import PoolParams

METRICS_PORT = 9100
BROKER_USER_VAR = "HYPERPOOL_BROKER_USERNAME"
BROKER_PASSWORD_VAR = "HYPERPOOL_BROKER_PASSWORD"
REDIS_PASSWORD_VAR = "HYPERPOOL_REDIS_PASSWORD"
BROKER_USERINFO = f"$({BROKER_USER_VAR}):$({BROKER_PASSWORD_VAR})"
REDIS_USERINFO = f":$({REDIS_PASSWORD_VAR})"


def with_userinfo(url: str, userinfo: str) -> str:
    """``url`` with ``userinfo@`` in front of its host (any userinfo already there replaced)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def has_userinfo(hostname_or_url: str) -> bool:
    """Whether a RabbitMQ hostname / URL or Redis URL already carries credentials."""
    rest = hostname_or_url.split("://", 1)[-1]
    return "@" in rest.split("/", 1)[0]


def worker_command(params: PoolParams) -> list[str]:
    command = ["hyperpool", "worker", "--queue", params.queue]
    if params.concurrency is not None:
        command += ["-c", str(params.concurrency)]
    return command


def _secret(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def credential_env(params: PoolParams) -> list[dict[str, Any]]:
    """The Secret-backed entries; they precede the URLs that reference them."""
    env: list[dict[str, Any]] = []
    broker = params.broker_credentials
    if broker is not None:
        if broker.username:
            env.append({"name": BROKER_USER_VAR, "value": broker.username})
        else:
            env.append(_secret(BROKER_USER_VAR, broker.secretName,
                               broker.usernameKey or "username"))
        env.append(_secret(BROKER_PASSWORD_VAR, broker.secretName, broker.passwordKey))
    redis = params.redis_credentials
    if redis is not None:
        env.append(_secret(REDIS_PASSWORD_VAR, redis.secretName, redis.passwordKey))
    return env


def rabbit_hostname_env(params: PoolParams) -> str | None:
    """HyperFlow's ``RABBIT_HOSTNAME`` (executors connect to ``amqp://$RABBIT_HOSTNAME``)."""
    host = params.rabbit_hostname
    if host and params.broker_credentials is not None and "://" not in host:
        return f"{BROKER_USERINFO}@{host}"
    return host


def worker_env(params: PoolParams) -> list[dict[str, Any]]:
    """hyperpool's own variables plus the HyperFlow names existing executor images read."""
    pairs: list[tuple[str, str | None]] = [
        ("HYPERPOOL_BROKER_URL", params.broker_url),
        ("RABBIT_HOSTNAME", rabbit_hostname_env(params)),
        ("HYPERPOOL_REDIS_URL", params.worker_redis_url),
        ("REDIS_URL", params.worker_redis_url),
        ("HYPERPOOL_QUEUE", params.queue),
        ("QUEUE_NAME", params.queue),
        ("HYPERPOOL_NAMESPACE", params.namespace),
        ("HF_VAR_NAMESPACE", params.namespace),
        # /metrics of the pod (all prefork children summed), scraped via k8s/monitoring.
        ("HYPERPOOL_METRICS_PORT", str(METRICS_PORT)),
    ]
    env = credential_env(params) + [{"name": n, "value": v} for n, v in pairs if v]
    overrides = {e["name"]: e for e in params.extra_env}
    env = [overrides.pop(e["name"], e) for e in env]
    return env + [e for e in params.extra_env if e["name"] in overrides]
