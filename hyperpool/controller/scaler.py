"""The pool's KEDA ScaledObject: Prometheus' recorded desired replicas drive the Deployment.

KEDA's Prometheus scaler with ``threshold: "1"`` (an AverageValue target) makes the HPA run
exactly the recorded number of replicas. ``ignoreNullValues: "false"`` turns a missing series
(rule not loaded, Prometheus lost its data) into a scaler error, so ``fallback`` applies instead
of silently scaling to zero. ``maxReplicaCount`` is the spec's maximum capped by what the
namespace quota can hold (pods beyond it would only fail admission); KEDA's schema wants it ≥ 1,
so a pool whose spec max is 0 is *paused* at zero replicas with KEDA's annotation instead.
``cooldownPeriod`` is never shorter than the warm-shutdown grace period.

Extra triggers from the spec (``spec.triggers``: a cron schedule, a second queue) come after the
queue trigger; KEDA's HPA then runs the *largest* of the triggers' demands, still within
``maxReplicaCount``, so no trigger can push a pool past what the quota holds.
"""

from __future__ import annotations

from typing import Any

from hyperpool.controller import rules
from hyperpool.controller.params import PoolParams

PAUSED_ANNOTATION = "autoscaling.keda.sh/paused-replicas"


def build_scaled_object(p: PoolParams) -> dict[str, Any]:
    """The ScaledObject child (keda.sh/v1alpha1) of one pool."""
    metadata = p.metadata()
    if p.paused:
        metadata["annotations"] = {PAUSED_ANNOTATION: "0"}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": p.name},
            "minReplicaCount": p.scaler_min,
            "maxReplicaCount": p.scaler_max,
            "pollingInterval": p.polling_interval,
            "cooldownPeriod": p.cooldown,
            "fallback": {"failureThreshold": p.fallback_failures,
                         "replicas": p.fallback_replicas},
            "triggers": [{
                "type": "prometheus",
                "name": "desired-replicas",
                "metadata": {
                    "serverAddress": p.prometheus_url,
                    "query": rules.scaler_query(p),
                    "threshold": "1",
                    "ignoreNullValues": "false",
                },
            }, *p.extra_triggers],
        },
    }
