"""The WorkerPool's status: one ``Ready`` condition, replica counts, and no needless writes.

Conditions follow the Kubernetes convention (``metav1.Condition``): one entry per ``type``,
replaced in place, ``lastTransitionTime`` moving only when ``status`` flips, ``observedGeneration``
saying which spec the verdict is about. Reasons of ``Ready``: ``Reconciled`` (True),
``QuotaLimited`` and ``NoResourceQuota`` (True: the pool works, within limits the user should
know about), ``InvalidSpec``, ``ChildrenFailed`` and ``PodsFailing`` (False: the pool's pods
cannot run, e.g. ``ImagePullBackOff`` or ``CrashLoopBackOff``; see
:mod:`hyperpool.controller.pod_health`).

The controller computes the whole status every time and writes only the keys that differ
(:func:`status_patch`), so a steady state costs reads but no writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

READY = "Ready"
RECONCILED = "Reconciled"
QUOTA_LIMITED = "QuotaLimited"
NO_RESOURCE_QUOTA = "NoResourceQuota"
INVALID_SPEC = "InvalidSpec"
CHILDREN_FAILED = "ChildrenFailed"
PODS_FAILING = "PodsFailing"

# When several verdicts apply, the user hears about the most serious one. PodsFailing ranks
# below ChildrenFailed: when a child could not be applied, the pods may run an outdated template
# (the fix may already be in the spec) or the pool cannot scale at all (no ScaledObject), so the
# controller's own failure is what to fix first; the pods are looked at again once it is.
# It ranks above QuotaLimited: a pool capped by its quota still works, one whose pods crash does
# not.
_SEVERITY = [INVALID_SPEC, CHILDREN_FAILED, PODS_FAILING, QUOTA_LIMITED, NO_RESOURCE_QUOTA,
             RECONCILED]
_FALSE = {INVALID_SPEC, CHILDREN_FAILED, PODS_FAILING}


@dataclass(frozen=True)
class Finding:
    """One reason the pool is (or is not) ready, with a message for humans."""

    reason: str
    message: str


def ready_condition(findings: Sequence[Finding]) -> dict[str, str]:
    """The ``Ready`` condition from the most serious finding (messages of equals joined)."""
    findings = list(findings) or [Finding(RECONCILED, "children are up to date")]
    worst = min(_SEVERITY.index(f.reason) for f in findings)
    reason = _SEVERITY[worst]
    message = "; ".join(f.message for f in findings if f.reason == reason)
    return {"type": READY, "status": "False" if reason in _FALSE else "True",
            "reason": reason, "message": message}


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(old: Sequence[Mapping[str, Any]] | None,
                     new: Sequence[Mapping[str, str]], *, generation: int,
                     now: str) -> list[dict[str, Any]]:
    """``new`` conditions, keeping each type's ``lastTransitionTime`` unless status flipped.

    Types the controller no longer reports (e.g. the HyperFlow operator's ``NotReady``) are dropped,
    so the list never grows.
    """
    previous = {c.get("type"): c for c in old or [] if isinstance(c, Mapping)}
    merged = []
    for cond in new:
        before = previous.get(cond["type"])
        since = now
        if before and before.get("status") == cond["status"] and before.get("lastTransitionTime"):
            since = before["lastTransitionTime"]
        merged.append({**cond, "observedGeneration": generation, "lastTransitionTime": since})
    return merged


def deployment_findings(deployment: Mapping[str, Any] | None) -> list[Finding]:
    """Mirror the Deployment's ``ReplicaFailure`` (e.g. pods rejected by the quota)."""
    findings = []
    for cond in ((deployment or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") != "ReplicaFailure" or cond.get("status") != "True":
            continue
        message = cond.get("message") or cond.get("reason") or "replica failure"
        reason = QUOTA_LIMITED if "exceeded quota" in message else CHILDREN_FAILED
        findings.append(Finding(reason, f"Deployment: {message}"))
    return findings


def build_status(old: Mapping[str, Any] | None, *, findings: Sequence[Finding],
                 generation: int, queue: str | None, deployment: Mapping[str, Any] | None,
                 scaler_max: int | None, now: str) -> dict[str, Any]:
    """The complete status the pool should have now."""
    old = old or {}
    dep_status = (deployment or {}).get("status") or {}
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge_conditions(old.get("conditions"), [ready_condition(findings)],
                                       generation=generation, now=now),
        "replicas": int(dep_status.get("replicas") or 0),
        "readyReplicas": int(dep_status.get("readyReplicas") or 0),
    }
    if queue is not None:
        status["queue"] = queue
    if scaler_max is not None:
        status["maxReplicas"] = scaler_max
    return status


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``new`` that differ from ``old`` (``{}``: nothing to write).

    Keys the controller no longer sets are removed (``None`` in a merge patch), except kopf's
    own bookkeeping.
    """
    old = old or {}
    patch = {key: value for key, value in new.items() if old.get(key) != value}
    for key in old:
        if key not in new and key != "kopf":
            patch[key] = None
    return patch
