"""The scaling signal is real up to KEDA: RabbitMQ -> Prometheus -> rules -> the trigger's query.

Debian's Prometheus server (a subprocess, 1 s scrapes) scrapes the machine's real RabbitMQ
(``/metrics/per-object`` on :15692), a real ``hyperpool worker``'s metrics port, and a static
exposition standing in for kube-state-metrics; it loads the ``spec.groups`` of each pool's
PrometheusRule, as the controller builds them (``plan()``), unchanged, one rule file per
PrometheusRule as prometheus-operator writes them. Each pool's ScaledObject trigger ``query`` is
then sent to ``/api/v1/query`` as KEDA's prometheus scaler sends it, and must equal
:func:`hyperpool.scaling.desired_replicas` over the same inputs, for a real backlog and, after the
drain, 0 (every pool here has ``minReplicaCount`` 0: KEDA scales to zero).

Scenario, namespace ``ns`` (the test's own) with one ResourceQuota, and a second namespace:

* ``ns/mproject``: the seed manifest, unchanged (0.5 CPU, 524288000 B); 6 messages ready; its
  Deployment reports 1 replica. Bound by its share: ceil(6 / 11 × fit 3) = 2.
* ``ns/mdifffit``: 100m / 128Mi, ``concurrency: 2``, max 4; 5 messages, one of which a consumer
  of the test holds unacknowledged; 2 replicas. Bound by ``ceil(depth / concurrency)`` (3) — with
  ready messages alone it would be 2, so the unacked term shows.
* ``<ns>-other/mproject``: the seed again, same pool name, 20 messages, no quota there. If its
  depth leaked into ``ns``'s total, ``ns/mproject`` would get 1, not 2.
* quota of ``ns``: hard 2 CPU, 4Gi, 10 pods; non-pool use 500m, 1Gi, 2 pods, so ``used`` = that
  plus the pools' replicas × requests. Without the replica term, mproject's fit would be 1, not 3.
  A quota of another namespace (hard ``requests.cpu`` 0) must not constrain ``ns``.

Labels set on the scrape jobs, and why:

* RabbitMQ is scraped twice (the same endpoint), as two ServiceMonitors would: job ``rabbitmq``
  with ``namespace=<ns>``, ``service=rabbitmq``, ``endpoint=prometheus``, ``pod=rabbitmq-0``
  (a ServiceMonitor in the pool's namespace: what a Prometheus enforcing a namespace label on the
  rules needs), and job ``rabbitmq-cluster`` with ``namespace=rabbitmq-system`` (a cluster-wide
  one). The rules select queues by ``vhost`` and ``queue`` only, and ``max by (vhost, queue)``
  must not count the duplicate: the test asserts both series exist and the depth is not doubled.
* kube-state-metrics: job ``kube-state-metrics``, ``namespace=monitoring`` (where it runs) with
  ``honor_labels: true`` as kube-prometheus' ServiceMonitor sets it, so the series keep their own
  ``namespace`` (the quota's / Deployment's), which the rules select on.
* the worker: the labels the PodMonitor ``k8s/monitoring/podmonitor.yaml`` gives a pod —
  ``job=hyperpool-system/hyperpool-pools``, ``namespace=<ns>``, ``pod``, ``container=worker``,
  ``endpoint=metrics`` and ``pool`` (its relabeling of the pod's pool label). The rules read no
  ``hyperpool_*`` worker series; the worker drains ``ns/mproject`` for real and the test checks
  its ``hyperpool_tasks_total`` arrived through Prometheus with those labels.

Not tested here (named, not hidden):

* ``kube_resourcequota`` and ``kube_deployment_status_replicas`` come from a static exposition,
  not from kube-state-metrics watching a real ResourceQuota and Deployment: their *names and
  labels* are the ones kube-state-metrics documents, their *values* are what the test says;
* the group's own ``interval: 15s`` is kept (so the test waits for it); the 1 s
  ``evaluation_interval`` applies to nothing;
* KEDA itself: ``threshold``/``AverageValue`` arithmetic, activation, ``cooldownPeriod`` before
  scaling to zero, ``fallback`` and ``maxReplicaCount`` clamping are computed here in Python from
  the ScaledObject (:func:`keda_replicas`), not by KEDA and an HPA; ``serverAddress`` of the seed
  pools names a cluster Service, so the query is sent to this server instead;
* prometheus-operator's ``enforcedNamespaceLabel`` rewriting of the rules.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from kombu import Consumer

from hyperpool.controller.plan import ControllerConfig, Plan, plan
from hyperpool.controller.quota import pod_quota_requests, pool_budget, pools_usage
from hyperpool.controller.rules import DEPTH_RECORD, FIT_RECORD
from hyperpool.executor.queues import dead_letter_queue_name, task_queue
from hyperpool.models import TaskMessage
from hyperpool.quantities import parse_quantity
from hyperpool.scaling import PoolDemand, desired_replicas, fit
from hyperpool.services import broker_connection
from tests.conftest import delete_queue, worker_pool_yaml
from tests.integration.private_services import free_port
from tests.integration.prometheus_server import (
    MAKE_SERVICES,
    PrometheusServer,
    ScrapeJob,
    StaticExposition,
    http_ok,
    prometheus_binary,
)
from tests.unit.test_controller_support import seed_pool

QUOTA_HARD = {"requests.cpu": "2", "requests.memory": "4Gi", "pods": "10"}
NON_POOL_USE = {"requests.cpu": "500m", "requests.memory": "1Gi", "pods": "2"}
MDIFFFIT_SPEC = """\
image: hyperpool/executor-generic:latest
concurrency: 2
maxReplicaCount: 4
initialResources:
  requests:
    cpu: 100m
    memory: 128Mi
"""
SETTLE_TIMEOUT = 150.0  # rule groups run every 15 s; a loaded 2-core machine needs slack
WORKER_JOB = "hyperpool-system/hyperpool-pools"


@dataclass
class Pool:
    """One WorkerPool of the scenario: its plan, the backlog published, its running replicas."""

    manifest: dict[str, Any]
    plan: Plan
    depth: int
    replicas: int
    held: int = 0  # of ``depth``, delivered to a consumer and not acknowledged

    @property
    def namespace(self) -> str:
        return self.manifest["metadata"]["namespace"]

    @property
    def name(self) -> str:
        return self.manifest["metadata"]["name"]

    @property
    def queue(self) -> str:
        assert self.plan.queue
        return self.plan.queue

    def child(self, kind: str) -> dict[str, Any]:
        return next(c for c in self.plan.children if c["kind"] == kind)

    @property
    def trigger(self) -> dict[str, str]:
        return self.child("ScaledObject")["spec"]["triggers"][0]["metadata"]

    def labels(self) -> str:
        return f'{{namespace="{self.namespace}",pool="{self.name}"}}'

    def requests(self) -> dict[str, Decimal]:
        resources = self.manifest["spec"].get("initialResources") or {}
        return pod_quota_requests({"containers": [{"resources": resources}]})


def _fmt(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _manifest(text_or_dict: str | dict[str, Any], namespace: str, uid: str) -> dict[str, Any]:
    pool = yaml.safe_load(text_or_dict) if isinstance(text_or_dict, str) else text_or_dict
    pool["metadata"].update(namespace=namespace, uid=uid, generation=1)
    return pool


@dataclass
class Scenario:
    """The pools, the quota objects of ``ns`` and the budget the controller would compute."""

    pools: list[Pool]
    quotas: list[dict[str, Any]]
    budget: dict[str, Decimal]

    def ours(self, namespace: str) -> list[Pool]:
        return [p for p in self.pools if p.namespace == namespace]

    def expected(self) -> dict[tuple[str, str], int]:
        """:func:`desired_replicas` per (namespace, pool), each namespace on its own."""
        out = {}
        for namespace in dict.fromkeys(p.namespace for p in self.pools):
            pools = self.ours(namespace)
            demands = [PoolDemand(p.name, p.depth, p.manifest["spec"].get("maxReplicaCount", 50),
                                  p.manifest["spec"].get("minReplicaCount", 0), p.requests(),
                                  concurrency=p.manifest["spec"].get("concurrency") or 1)
                       for p in pools]
            budget = self.budget if namespace == self.quotas[0]["metadata"]["namespace"] \
                else {}  # the other namespace has no ResourceQuota
            for name, value in desired_replicas(demands, budget).items():
                out[(namespace, name)] = value
        return out


def build_scenario(ns: str, other: str, prometheus_url: str) -> Scenario:
    """Plan the three pools as the controller does (with ``ns``'s budget) and derive the quota."""
    config = ControllerConfig(default_prometheus_url=prometheus_url)
    a = _manifest(seed_pool(), ns, "uid-a")
    b = _manifest(worker_pool_yaml("mdifffit", "mDiffFit", MDIFFFIT_SPEC), ns, "uid-b")
    c = _manifest(seed_pool(), other, "uid-c")
    # The budget needs the pools' usage, which needs their Deployments: plan without it first.
    draft = {"a": plan(a, None, config=config), "b": plan(b, None, config=config)}
    replicas = {"a": 1, "b": 2}
    deployments = [{**next(ch for ch in p.children if ch["kind"] == "Deployment"),
                    "status": {"replicas": replicas[k]}} for k, p in draft.items()]
    usage = pools_usage(deployments)
    used = {r: _fmt(parse_quantity(NON_POOL_USE.get(r, "0")) + usage.get(r, Decimal(0)))
            for r in QUOTA_HARD}
    quotas = [{"metadata": {"name": "compute", "namespace": ns},
               "status": {"hard": QUOTA_HARD, "used": used}}]
    budget = pool_budget(quotas, usage)
    assert budget is not None
    pools = [Pool(a, plan(a, budget, config=config), depth=6, replicas=1),
             Pool(b, plan(b, budget, config=config), depth=5, replicas=2, held=1),
             Pool(c, plan(c, None, config=config), depth=20, replicas=0)]
    for p in pools:
        assert not p.plan.invalid, p.plan.findings
    return Scenario(pools, quotas, budget)


def keda_replicas(value: float, scaled_object: dict[str, Any]) -> int:
    """What KEDA's HPA makes of one prometheus trigger value (AverageValue target)."""
    spec = scaled_object["spec"]
    threshold = float(spec["triggers"][0]["metadata"]["threshold"])
    activation = float(spec["triggers"][0]["metadata"].get("activationThreshold", 0))
    if value <= activation and spec["minReplicaCount"] == 0:
        return 0  # inactive: scaled to zero once cooldownPeriod has passed
    wanted = math.ceil(value / threshold)
    return max(spec["minReplicaCount"], min(spec["maxReplicaCount"], max(1, wanted)))


def single_value(result: list[dict[str, Any]]) -> float | str:
    """The one sample KEDA accepts; anything else is shown as text (and never matches)."""
    if len(result) != 1:
        return f"{len(result)} samples: {result}"
    value = float(result[0]["value"][1])
    return value if math.isfinite(value) else f"not finite: {value}"


def settle(server: PrometheusServer, want: dict[str, float], timeout: float) -> float:
    """Poll until every query gives its value, then check it holds for one more evaluation of
    every rule group (a match made of one stale sibling record would not). Returns seconds."""
    started = time.monotonic()
    deadline = started + timeout
    got: dict[str, float | str] = {}
    while time.monotonic() < deadline:
        got = {expr: single_value(server.query(expr)) for expr in want}
        if got == want:
            moment = time.time()
            elapsed = time.monotonic() - started
            server.wait_evaluated_after(moment, timeout=60)
            again = {expr: single_value(server.query(expr)) for expr in want}
            assert again == want, f"changed after another evaluation: {again}"
            return elapsed
        time.sleep(0.5)
    wrong = {e: (got.get(e), v) for e, v in want.items() if got.get(e) != v}
    raise AssertionError(f"not settled within {timeout}s (query: (got, want)): {wrong}\n"
                         f"{server.log_tail(10)}")


@pytest.fixture
def other_namespace(namespace: str) -> Iterator[str]:
    """A second namespace whose queues the ``namespace`` fixture would not clean up."""
    other = f"{namespace}-other"
    yield other
    for queue in (f"{other}.mProject",):
        delete_queue(queue)
        delete_queue(dead_letter_queue_name(queue))


@pytest.fixture
def kube_state_metrics() -> Iterator[StaticExposition]:
    exposition = StaticExposition()
    yield exposition
    exposition.close()


def serve_kube_state(ksm: StaticExposition, sc: Scenario) -> None:
    """The series kube-state-metrics would export for the scenario's quota and Deployments."""
    for quota in sc.quotas:
        meta, status = quota["metadata"], quota["status"]
        for kind in ("hard", "used"):
            for resource, amount in status[kind].items():
                ksm.set("kube_resourcequota", {"namespace": meta["namespace"],
                                               "resourcequota": meta["name"],
                                               "resource": resource, "type": kind},
                        float(parse_quantity(amount)))
    for kind in ("hard", "used"):  # another namespace's quota, exhausted
        ksm.set("kube_resourcequota", {"namespace": "quota-elsewhere", "resourcequota": "q",
                                       "resource": "requests.cpu", "type": kind}, 0.0)
    for p in sc.pools:
        ksm.set("kube_deployment_status_replicas",
                {"namespace": p.namespace, "deployment": p.plan.params.name}, p.replicas)


def scrape_jobs(settings: Any, ns: str, ksm: StaticExposition, worker_port: int,
                worker: Pool) -> list[ScrapeJob]:
    rabbit = settings.rabbitmq_metrics_url.split("://", 1)[-1].rstrip("/")
    deployment = worker.plan.params.name
    return [
        ScrapeJob("rabbitmq", [rabbit], metrics_path="/metrics/per-object",
                  labels={"namespace": ns, "service": "rabbitmq", "endpoint": "prometheus",
                          "pod": "rabbitmq-0"}),
        ScrapeJob("rabbitmq-cluster", [rabbit], metrics_path="/metrics/per-object",
                  labels={"namespace": "rabbitmq-system", "service": "rabbitmq",
                          "endpoint": "prometheus", "pod": "rabbitmq-0"}),
        ScrapeJob("kube-state-metrics", [ksm.target], honor_labels=True,
                  labels={"namespace": "monitoring", "service": "kube-state-metrics"}),
        ScrapeJob(WORKER_JOB, [f"127.0.0.1:{worker_port}"],
                  labels={"job": WORKER_JOB, "namespace": ns, "pod": f"{deployment}-0",
                          "container": "worker", "endpoint": "metrics", "pool": deployment}),
    ]


@pytest.mark.timeout(600)  # two settles of up to SETTLE_TIMEOUT (+60 s) each; ~75 s when idle
def test_trigger_query_returns_the_formula_for_a_real_backlog_and_zero_after_drain(
        settings, namespace, other_namespace, stream, start_worker, kube_state_metrics,
        tmp_path: Path):
    prometheus_binary()
    if not http_ok(f"{settings.rabbitmq_metrics_url}/metrics/per-object"):
        pytest.fail(f"RabbitMQ's rabbitmq_prometheus plugin does not answer "
                    f"{settings.rabbitmq_metrics_url}/metrics/per-object: {MAKE_SERVICES}")
    port, worker_port = free_port(), free_port()
    sc = build_scenario(namespace, other_namespace, f"http://127.0.0.1:{port}")
    mproject, mdifffit, elsewhere = sc.pools
    serve_kube_state(kube_state_metrics, sc)
    rules = {f"{p.namespace}-{p.name}-{p.manifest['metadata']['uid']}.yaml":
             p.child("PrometheusRule")["spec"]["groups"] for p in sc.pools}
    server = PrometheusServer(tmp_path / "prometheus", scrape_jobs(
        settings, namespace, kube_state_metrics, worker_port, mproject), rules, port=port)
    started = time.monotonic()
    server.start()
    consumer_conn = None
    try:
        server.wait_targets_up({"rabbitmq", "rabbitmq-cluster", "kube-state-metrics"}, 60)
        assert mdifffit.trigger["serverAddress"] == server.url  # the controller's default

        # -- the backlog: real task messages, no worker; one of mdifffit's held unacked -----
        for p in sc.pools:
            stream.publisher.publish_many(
                [(p.queue, TaskMessage.model_validate(
                    {"taskId": f"{p.name}-{i}", "name": p.name, "executable": "true"}), 1)
                 for i in range(p.depth)], reply_to=stream.name)
        consumer_conn = broker_connection(settings)
        held: list[Any] = []
        consumer = Consumer(consumer_conn.channel(),
                            [task_queue(mdifffit.queue, delivery_limit=settings.delivery_limit)],
                            callbacks=[lambda body, message: held.append(message)],
                            prefetch_count=1)
        consumer.consume()
        consumer_conn.drain_events(timeout=10)
        assert len(held) == mdifffit.held

        expected = sc.expected()
        assert expected == {(namespace, "mproject"): 2, (namespace, "mdifffit"): 3,
                            (other_namespace, "mproject"): 20}, expected
        want: dict[str, float] = {}
        for p in sc.pools:
            want[p.trigger["query"]] = expected[(p.namespace, p.name)]
            want[f"sum({DEPTH_RECORD}{p.labels()})"] = p.depth
        for p in (mproject, mdifffit):
            room = fit(p.requests(), sc.budget)
            assert room is not None
            want[f"sum({FIT_RECORD}{p.labels()})"] = room
        # Both RabbitMQ jobs' series are there, and still the depth is not doubled.
        want[f'count(rabbitmq_queue_messages{{queue="{mproject.queue}"}})'] = 2
        want[f'max(rabbitmq_queue_messages_unacked{{queue="{mdifffit.queue}"}})'] = 1
        backlog_s = settle(server, want, SETTLE_TIMEOUT)
        for p in sc.pools:
            value = single_value(server.query(p.trigger["query"]))
            assert isinstance(value, float)
            assert keda_replicas(value, p.child("ScaledObject")) == expected[(p.namespace,
                                                                                p.name)]

        # -- the drain: a real worker runs mproject's tasks; the others are taken away --------
        start_worker(mproject.queue, HYPERPOOL_METRICS_PORT=str(worker_port))
        for message in held:
            message.ack()
        consumer.cancel()
        with broker_connection(settings) as conn:
            for p in (mdifffit, elsewhere):
                conn.default_channel.queue_purge(p.queue)
        for p in sc.pools:
            p.depth = 0
        expected = sc.expected()
        assert set(expected.values()) == {0}
        want = {}
        for p in sc.pools:
            want[p.trigger["query"]] = 0
            want[f"sum({DEPTH_RECORD}{p.labels()})"] = 0
        want[f'sum(hyperpool_tasks_total{{job="{WORKER_JOB}",namespace="{namespace}",'
             f'pool="{mproject.plan.params.name}",queue="{mproject.queue}",'
             f'outcome="succeeded"}})'] = 6
        drain_s = settle(server, want, SETTLE_TIMEOUT)
        for p in sc.pools:
            value = single_value(server.query(p.trigger["query"]))
            assert value == 0.0 and keda_replicas(value, p.child("ScaledObject")) == 0
        failing = [(g["name"], r["name"], r["lastError"])
                   for g in server.api("rules")["groups"] for r in g["rules"]
                   if r["health"] != "ok"]
        assert not failing, failing
        print(f"backlog settled in {backlog_s:.1f}s, drain in {drain_s:.1f}s, "
              f"total {time.monotonic() - started:.1f}s")
    finally:
        if consumer_conn is not None:
            consumer_conn.release()
        server.stop()
