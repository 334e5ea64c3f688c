"""kopf wiring: every event funnels into one idempotent reconcile.

Handlers are registered on a fresh :class:`kopf.OperatorRegistry` built by
:func:`build_registry`, so the command and the tests (``kopf.testing.KopfRunner(...,
registry=...)``) run the same handlers against their own API wrapper and configuration.

* create / update / resume → :func:`~hyperpool.controller.reconcile.reconcile`; an invalid spec
  is reported in the status (``InvalidSpec``) and raised as :class:`kopf.PermanentError` (no
  retries until the spec changes); API faults worth retrying raise :class:`kopf.TemporaryError`;
* a deleted child, or one whose spec was edited, brings its pool's reconcile at once (raw watch
  events on the three child kinds, labelled as ours: no finalizer, no annotation on them);
* every ``interval`` seconds a repair loop lists the pools and runs the same reconcile: it
  recreates a deleted child, reverts an edited one and refreshes the status from the Deployment
  and the quota. In a steady state it writes nothing (server-side apply of unchanged children is
  a no-op, the status is written only when it differs). It never raises for a bad spec: the
  change handlers did.
* no finalizer: kopf adds one to every object that has a timer or daemon (so it can stop them
  before deletion), which would leave WorkerPools undeletable while the operator is down or
  uninstalled. Hence the repair loop is a plain background task started on operator startup, not
  a ``@kopf.timer``, and there is no deletion handler: ownerReferences let Kubernetes' garbage
  collector delete the children, operator or not.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Sequence
from typing import Any

import kopf

from hyperpool.controller import naming
from hyperpool.controller.api import ApiError, KubeApi
from hyperpool.controller.plan import ControllerConfig
from hyperpool.controller.reconcile import TransientError, reconcile

log = logging.getLogger(__name__)

RETRY_DELAY = 15.0
DEFAULT_INTERVAL = 30.0
ANNOTATION_PREFIX = naming.GROUP


def configure_settings(settings: kopf.OperatorSettings) -> None:
    """Startup settings, each with the reason it is not kopf's default."""
    # Handler progress lives in annotations only: kopf's default "smart" storage also writes
    # status.kopf.progress, i.e. extra PATCHes into the status we own and compare
    # (kopf#321, #331; kopf#1259 stops those status writes upstream).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX)
    # The last-handled spec (the diff base for update handlers) under our own domain.
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    # Only warnings and errors become Kubernetes Events: a timer every 30 s per pool would
    # otherwise post "Timer succeeded" events forever (kopf#1170, #188; kopf#1258 turned
    # logger posting off by default, this keeps explicit posting quiet too).
    settings.posting.level = logging.WARNING
    settings.posting.loggers = False
    # A watch can stall silently behind proxies/load balancers; have the server end watches
    # regularly and reconnect (kopf#585, #232, "API timeouts" in kopf's configuration docs).
    settings.watching.server_timeout = 600
    settings.watching.client_timeout = 660
    settings.watching.connect_timeout = 30
    # One operator replica (the Deployment uses the Recreate strategy); no KopfPeering CRD
    # needed, and no warning about its absence at every start.
    settings.peering.standalone = True
    # Blocking kubernetes-client calls run in kopf's thread pool; a few pools at once.
    settings.execution.max_workers = 8


def _reconcile(api: KubeApi, config: ControllerConfig, body: Any, *, strict: bool) -> None:
    try:
        outcome = reconcile(api, body, config=config)
    except TransientError as exc:
        raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from exc
    except ApiError as exc:  # permanent, e.g. forbidden to list ResourceQuotas
        raise kopf.TemporaryError(f"{exc} (check the operator's RBAC)", delay=60) from exc
    if strict and outcome.plan.invalid:
        raise kopf.PermanentError("; ".join(f.message for f in outcome.plan.findings))


# The children, watched so that a deleted or edited one is put back at once rather than by
# the next repair pass (a deleted Deployment once took 26 s to return).
CHILDREN = [("apps", "v1", "deployments"), ("keda.sh", "v1alpha1", "scaledobjects"),
            ("monitoring.coreos.com", "v1", "prometheusrules")]


def all_exact(namespaces: Sequence[str]) -> bool:
    """Names only, no kopf/fnmatch patterns."""
    return bool(namespaces) and not any(set(ns) & set("*?[!") for ns in namespaces)


def child_changed(event: dict[str, Any]) -> bool:
    """A child was deleted, or may have been edited. A Deployment says so by a generation its
    controller has not observed yet (status-only updates such as replica counts do not
    count); the other kinds carry no such mark here, so every change of theirs counts (a
    reconcile of an unchanged pool writes nothing)."""
    body = event.get("object") or {}
    if event.get("type") == "DELETED":
        return True
    if event.get("type") != "MODIFIED":
        return False
    observed = (body.get("status") or {}).get("observedGeneration")
    return observed is None or body["metadata"].get("generation") != observed


def owner_pool(api: KubeApi, child: dict[str, Any]) -> dict[str, Any] | None:
    meta = child["metadata"]
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == naming.KIND and ref.get("apiVersion") == naming.API_VERSION:
            pool = api.get(naming.API_VERSION, naming.KIND, meta["namespace"], ref["name"])
            if pool and not pool["metadata"].get("deletionTimestamp"):
                return pool
    return None


def repair_all(api: KubeApi, config: ControllerConfig, namespaces: Sequence[str]) -> int:
    """Reconcile every served pool once (the drift-repair pass); returns how many failed."""
    if all_exact(namespaces):
        pools = [p for ns in namespaces for p in api.list(naming.API_VERSION, naming.KIND, ns)]
    else:
        pools = [p for p in api.list(naming.API_VERSION, naming.KIND, None)
                 if not namespaces or any(fnmatch.fnmatchcase(p["metadata"]["namespace"], pat)
                                          for pat in namespaces)]
    return sum(not repair(api, config, pool) for pool in pools
               if not pool["metadata"].get("deletionTimestamp"))


def repair(api: KubeApi, config: ControllerConfig, pool: dict[str, Any]) -> bool:
    """One pool's reconcile outside kopf's change handlers (repair pass, a child's change);
    a failure is logged, and the next repair pass retries it."""
    try:
        reconcile(api, pool, config=config)
        return True
    except (TransientError, ApiError) as exc:
        log.warning("%s/%s: repair failed, next pass retries: %s",
                    pool["metadata"]["namespace"], pool["metadata"]["name"], exc)
        return False


async def _repair_loop(api: KubeApi, config: ControllerConfig, namespaces: Sequence[str],
                       interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(repair_all, api, config, namespaces)
        except ApiError as exc:  # listing failed: the next pass retries
            log.warning("repair pass failed: %s", exc)
        except Exception:  # a bug must not stop repairs for every pool
            log.exception("repair pass crashed")


def build_registry(api: KubeApi, config: ControllerConfig, *,
                   interval: float = DEFAULT_INTERVAL,
                   namespaces: Sequence[str] = (), login: bool = True) -> kopf.OperatorRegistry:
    """A registry with the controller's handlers bound to ``api`` and ``config``.

    ``namespaces`` (patterns as for kopf; empty: all) bounds the repair loop. ``login=False``
    leaves authentication to the caller (tests against an emulated API server).
    """
    registry = kopf.OperatorRegistry()
    resource = (naming.GROUP, naming.VERSION, naming.PLURAL)
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_settings(settings)
        # Exact namespaces need no cluster-wide namespace list, which a namespaced operator
        # (the chart's watchNamespaces RBAC) may not read: kopf would retry it 9 times with
        # Forbidden errors before falling back to these very names. Patterns need the list.
        if all_exact(namespaces):
            settings.scanning.disabled = True
        tasks.append(asyncio.create_task(_repair_loop(api, config, namespaces, interval)))

    # Raw events: no finalizer or progress annotation on the children (kopf adds those only
    # for change handlers), and nothing kept between events.
    for group, version, plural in CHILDREN:
        # `when`: kopf neither calls nor logs the handler for the events that change nothing
        # (status updates, our own no-op applies): 1,400 log lines for 200 new pools else.
        @kopf.on.event(group, version, plural, registry=registry,
                       labels={naming.MANAGED_BY: naming.MANAGED_BY_VALUE},
                       when=lambda event, **_: child_changed(event))
        def _child(body: Any, **_: Any) -> None:
            pool = owner_pool(api, dict(body))
            if pool is not None:
                repair(api, config, pool)

    # A fresh registry does not carry kopf's default login handlers (those are registered on
    # the global default registry only). kopf's own login_via_client loads the kubeconfig the
    # kubernetes client found when it was *imported* ($KUBECONFIG then, else ~/.kube/config),
    # so `--kubeconfig FILE` with KUBECONFIG unset never logged kopf in: it logs in with the
    # very credentials ``api`` uses instead.
    if login:
        @kopf.on.login(registry=registry)
        def _login(**_: Any) -> kopf.ConnectionInfo:
            return api.connection_info()

    @kopf.on.cleanup(registry=registry)
    async def _cleanup(**_: Any) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @kopf.on.resume(*resource, registry=registry)
    @kopf.on.create(*resource, registry=registry)
    @kopf.on.update(*resource, registry=registry)
    def workerpool_changed(body: Any, **_: Any) -> None:
        _reconcile(api, config, body, strict=True)

    return registry
