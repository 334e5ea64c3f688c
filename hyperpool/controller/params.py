"""The typed parameters every child builder (and every template) is rendered from.

:class:`PoolParams` is computed once per reconcile from the WorkerPool and the namespace's
quota (:func:`hyperpool.controller.plan.plan`); builders never look at the raw manifest, so
they stay pure and unit-testable, and templates see exactly the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit

from hyperpool.controller import naming, rules
from hyperpool.controller.environment import (
    BROKER_USERINFO,
    REDIS_USERINFO,
    with_userinfo,
    worker_command,
    worker_env,
)
from hyperpool.settings import broker_url_from_rabbit_hostname
from hyperpool.workerpool_spec import BrokerCredentials, RedisCredentials

DEFAULT_TERMINATION_GRACE = 600
DEFAULT_POLLING_INTERVAL = 15
DEFAULT_FALLBACK_FAILURES = 3


@dataclass(frozen=True)
class PoolParams:
    """Everything the Deployment, PrometheusRule and ScaledObject of one pool depend on."""

    pool_name: str
    namespace: str
    uid: str
    name: str  # child name (≤ 54 characters), see naming.child_name
    task_type: str
    queue: str
    image: str
    prometheus_url: str
    rabbit_hostname: str | None = None
    redis_url: str | None = None
    min_replicas: int = 0  # as written in the spec
    max_replicas: int = 50  # as written in the spec
    scaler_min: int = 0  # what the ScaledObject gets (≤ scaler_max)
    scaler_max: int = 1  # min(spec max, quota), at least 1 (KEDA's schema minimum)
    paused: bool = False  # spec max 0: the pool is switched off
    resources: dict[str, dict[str, str]] = field(default_factory=dict)
    pod_requests: dict[str, Decimal] = field(default_factory=dict)  # quota charges per pod
    termination_grace: int = DEFAULT_TERMINATION_GRACE
    priority_class: str | None = None
    polling_interval: int = DEFAULT_POLLING_INTERVAL
    fallback_failures: int = DEFAULT_FALLBACK_FAILURES
    # beyond the HyperFlow operator's (see hyperpool.workerpool_spec.WorkerPoolSpec)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    affinity: dict[str, Any] = field(default_factory=dict)
    service_account: str | None = None  # the pods' serviceAccountName
    service_account_annotations: dict[str, str] | None = None  # not None: the controller's own
    image_pull_secrets: list[str] = field(default_factory=list)
    broker_credentials: BrokerCredentials | None = None
    redis_credentials: RedisCredentials | None = None
    extra_env: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)  # pod volumes, as written
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)  # worker container's
    concurrency: int | None = None
    extra_triggers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def broker_url(self) -> str | None:
        """The worker's broker URL; with a credentials Secret, ``$(VAR)`` references to it."""
        if not self.rabbit_hostname:
            return None
        if self.broker_credentials is None:
            return broker_url_from_rabbit_hostname(self.rabbit_hostname)
        if "://" in self.rabbit_hostname:
            return with_userinfo(self.rabbit_hostname, BROKER_USERINFO)
        return f"amqp://{BROKER_USERINFO}@{self.rabbit_hostname}//"

    @property
    def worker_redis_url(self) -> str | None:
        if not self.redis_url or self.redis_credentials is None:
            return self.redis_url
        return with_userinfo(self.redis_url, REDIS_USERINFO)

    @property
    def vhost(self) -> str:
        """The RabbitMQ virtual host the pool's queue lives in (``/`` unless the URL says)."""
        url = self.broker_url
        if not url:
            return "/"
        path = urlsplit(url).path
        return "/" if path in ("", "/", "//") else unquote(path[1:])

    @property
    def cooldown(self) -> int:
        """Seconds at zero depth before scaling to zero: never shorter than a warm shutdown."""
        return max(300, self.termination_grace)

    @property
    def fallback_replicas(self) -> int:
        """Replicas while Prometheus cannot be asked: keep at least one worker going."""
        return min(self.scaler_max, max(self.scaler_min, 1))

    def metadata(self) -> dict[str, Any]:
        """Name, namespace, labels and owner reference every child carries."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "labels": naming.child_labels(self.pool_name),
            "ownerReferences": [naming.owner_reference(self.pool_name, self.uid)],
        }

    def context(self) -> dict[str, Any]:
        """The documented template context (see hyperpool/controller/templates.py)."""
        return {
            "pool": {"name": self.pool_name, "namespace": self.namespace, "uid": self.uid},
            "name": self.name,
            "namespace": self.namespace,
            "task_type": self.task_type,
            "queue": self.queue,
            "vhost": self.vhost,
            "image": self.image,
            "rabbit_hostname": self.rabbit_hostname,
            "broker_url": self.broker_url,
            "redis_url": self.worker_redis_url,
            "prometheus_url": self.prometheus_url,
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "scaler_min": self.scaler_min,
            "scaler_max": self.scaler_max,
            "paused": self.paused,
            "resources": self.resources,
            "termination_grace": self.termination_grace,
            "priority_class": self.priority_class,
            "node_selector": self.node_selector,
            "tolerations": self.tolerations,
            "affinity": self.affinity,
            "service_account": self.service_account,
            "image_pull_secrets": [{"name": n} for n in self.image_pull_secrets],
            "volumes": self.volumes,
            "volume_mounts": self.volume_mounts,
            "concurrency": self.concurrency,
            "triggers": self.extra_triggers,
            "cooldown": self.cooldown,
            "polling_interval": self.polling_interval,
            "fallback_failures": self.fallback_failures,
            "fallback_replicas": self.fallback_replicas,
            "labels": naming.child_labels(self.pool_name),
            "selector": naming.selector_labels(self.pool_name),
            "env": worker_env(self),
            "command": worker_command(self),
            "record": rules.DESIRED_RECORD,
            "scaler_query": rules.scaler_query(self),
            "rules": rules.recording_rules(self),
        }
