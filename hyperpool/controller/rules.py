"""The PrometheusRule that turns queue depth and quota into a pool's desired replicas.

It evaluates :func:`hyperpool.scaling.desired_replicas` in PromQL, per pool::

    min(max, ceil(depth / concurrency), ceil(depth * fit / sum(depths of this namespace's pools))),
    floored at min

Every pool records its own inputs under the labels ``{namespace, pool}``, and the namespace-wide
terms are sums over *those recorded series*, selected by ``namespace``. That is how "the queues of
this namespace only" is expressed: a queue counts because a WorkerPool of the namespace records
it, whatever its name (``<namespace>.<taskType>`` or a ``queueName`` override), and no rule has to
be rewritten when a sibling pool comes or goes (a regex over sibling queue names would). Rules of
one group run in order, so a pool's own inputs are fresh; siblings' may be one interval old.

Inputs:

* depth: ``rabbitmq_queue_messages`` (rabbitmq_prometheus per-object metrics, ready + unacked),
  ``max by (vhost, queue)`` so duplicate scrapes do not double it, 0 when the queue is absent;
* quota: kube-state-metrics ``kube_resourcequota{type="hard"|"used"}`` of the namespace;
* pools' own use: the pod charges the controller knows (:mod:`~hyperpool.controller.quota`)
  times ``kube_deployment_status_replicas`` of the pool's Deployment. The budget left to pools
  is ``min over quotas (hard - used) + sum of pools' use``, i.e. ``hard - non-pool use``.

Arithmetic is done in integer units (millicores for CPU names, bytes, pods) so that ``floor`` and
``ceil`` see exact values, as the Python formula's Fractions do; depth × fit is multiplied before
dividing by the total for the same reason.

Caveats (documented, not hidden): two pools consuming the *same* queue count its depth twice;
if prometheus-operator enforces a namespace label, ``rabbitmq_queue_messages`` must be scraped
into the pool's namespace or the rule excluded from enforcement.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from hyperpool.controller.quota import CPU_RESOURCES

if TYPE_CHECKING:
    from hyperpool.controller.params import PoolParams

DESIRED_RECORD = "hyperpool_workerpool_desired_replicas"
DEPTH_RECORD = "hyperpool_workerpool_queue_depth"
REQUEST_RECORD = "hyperpool_workerpool_pod_request"
USAGE_RECORD = "hyperpool_workerpool_resource_usage"
FIT_RECORD = "hyperpool_workerpool_fit"
GROUP_NAME = "hyperpool.workerpool"
EVALUATION_INTERVAL = "15s"

_CPU_REGEX = "|".join(CPU_RESOURCES).replace(".", "\\\\.")


def _sel(**labels: str) -> str:
    """A PromQL label selector; values are quoted (JSON escapes are valid PromQL escapes)."""
    parts = []
    for key, value in labels.items():
        op = "=~" if key.endswith("_re") else "!~" if key.endswith("_nre") else "="
        name = key.removesuffix("_re").removesuffix("_nre")
        quoted = f'"{value}"' if op != "=" else json.dumps(value, ensure_ascii=False)
        parts.append(f"{name}{op}{quoted}")
    return "{" + ",".join(parts) + "}"


def units(resource: str, amount: Decimal) -> int:
    """A per-pod charge in the rule's integer units (CPU in millicores), rounded up."""
    scale = 1000 if resource in CPU_RESOURCES else 1
    return math.ceil(amount * scale)


def _quota(namespace: str, kind: str) -> str:
    """``kube_resourcequota`` of one type in integer units, one series per quota and resource."""
    by = "max by (resourcequota, resource, type)"
    cpu = _sel(namespace=namespace, type=kind, resource_re=_CPU_REGEX)
    rest = _sel(namespace=namespace, type=kind, resource_nre=_CPU_REGEX)
    return (f"(round({by} (kube_resourcequota{cpu}) * 1000)"
            f" or round({by} (kube_resourcequota{rest})))")


def recording_rules(p: PoolParams) -> list[dict[str, Any]]:
    """The ordered rules of the pool's group (inputs first, the desired replicas last)."""
    own = {"namespace": p.namespace, "pool": p.pool_name}
    own_sel = _sel(**own)
    ns_sel = _sel(namespace=p.namespace)
    rules: list[dict[str, Any]] = []
    for resource, amount in sorted(p.pod_requests.items()):
        if amount > 0:
            rules.append({"record": REQUEST_RECORD, "expr": f"vector({units(resource, amount)})",
                          "labels": {**own, "resource": resource}})
    replicas = f"kube_deployment_status_replicas{_sel(namespace=p.namespace, deployment=p.name)}"
    rules.append({
        "record": USAGE_RECORD,
        "expr": f"{REQUEST_RECORD}{own_sel} * on() group_left() (sum({replicas}) or vector(0))",
        "labels": dict(own),
    })
    depth_sel = _sel(vhost=p.vhost, queue=p.queue)
    rules.append({
        "record": DEPTH_RECORD,
        "expr": f"sum(max by (vhost, queue) (rabbitmq_queue_messages{depth_sel})) or vector(0)",
        "labels": {**own, "queue": p.queue},
    })
    left = (f"min by (resource) ({_quota(p.namespace, 'hard')}"
            f" - ignoring(type) {_quota(p.namespace, 'used')})")
    budget = f"({left} + on(resource) sum by (resource) ({USAGE_RECORD}{ns_sel}))"
    rules.append({
        "record": FIT_RECORD,
        "expr": (f"min(clamp_min(floor({budget} / on(resource) {REQUEST_RECORD}{own_sel}), 0))"),
        "labels": dict(own),
    })
    depth = f"sum({DEPTH_RECORD}{own_sel})"
    total = f"(sum({DEPTH_RECORD}{ns_sel}) > 0)"
    share = f"ceil({depth} * sum({FIT_RECORD}{own_sel}) / {total})"
    # Replicas running ``concurrency`` tasks each: one per ``concurrency`` messages.
    needed = (f"ceil({depth} / {p.concurrency})" if p.concurrency and p.concurrency > 1
              else depth)
    capped = f"clamp_max({needed}, {p.max_replicas})"
    rules.append({
        "record": DESIRED_RECORD,
        "expr": f"clamp_min(({share} < {capped}) or {capped}, {p.min_replicas})",
        "labels": dict(own),
    })
    return rules


def scaler_query(p: PoolParams) -> str:
    """What KEDA asks Prometheus: this pool's recorded desired replicas (empty = error)."""
    return f"sum({DESIRED_RECORD}{_sel(namespace=p.namespace, pool=p.pool_name)})"


def build_prometheus_rule(p: PoolParams) -> dict[str, Any]:
    """The PrometheusRule child (monitoring.coreos.com/v1) of one pool."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": p.metadata(),
        "spec": {"groups": [{"name": GROUP_NAME, "interval": EVALUATION_INTERVAL,
                             "rules": recording_rules(p)}]},
    }

