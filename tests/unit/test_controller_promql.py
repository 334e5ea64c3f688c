"""The PrometheusRule computes what hyperpool.scaling.desired_replicas computes.

For each scenario (pools with queue depths, running replicas and requests; quotas; a second
namespace that must not leak in) the rules of every pool are written as rule files, the inputs as
series in a ``promtool test rules`` file, and the expected samples are the Python formula's
answers. Prometheus' own ``promtool`` evaluates the PromQL, so this checks the real semantics.
Needs ``promtool`` (Debian package ``prometheus``); it is not skipped silently — a missing
promtool fails the test.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperpool.controller.plan import ControllerConfig, plan
from hyperpool.controller.quota import pod_quota_requests, pool_budget, pools_usage
from hyperpool.controller.rules import DESIRED_RECORD
from hyperpool.quantities import parse_quantity
from hyperpool.scaling import PoolDemand, desired_replicas
from tests.unit.test_controller_support import make_pool

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
CONFIG = ControllerConfig(default_prometheus_url="http://prometheus:9090")


@dataclass
class Pool:
    name: str
    depth: int
    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)
    replicas: int = 0
    min: int = 0
    max: int = 50
    queue: str | None = None
    namespace: str = "ns"
    concurrency: int | None = None


@dataclass
class Scenario:
    pools: list[Pool]
    quotas: list[dict[str, dict[str, str]]]  # {"hard": {...}, "nonpool": {...}} per quota
    namespace: str = "ns"


def _manifest(p: Pool) -> dict:
    spec: dict = {"taskType": p.name, "image": "img", "minReplicaCount": p.min,
                  "maxReplicaCount": p.max,
                  "initialResources": {"requests": p.requests, "limits": p.limits}}
    if p.queue:
        spec["queueName"] = p.queue
    if p.concurrency:
        spec["concurrency"] = p.concurrency
    return make_pool(p.name, spec, namespace=p.namespace)


def _fmt(value: Decimal) -> str:
    return format(value.normalize(), "f")


def run_scenario(sc: Scenario, tmp: Path) -> None:
    """Write rules + series, compute expectations in Python, and let promtool compare."""
    plans = {(p.namespace, p.name): plan(_manifest(p), None, config=CONFIG) for p in sc.pools}
    rule_files, series = [], []
    for (ns, name), result in plans.items():
        rule = next(c for c in result.children if c["kind"] == "PrometheusRule")
        path = tmp / f"{ns}-{name}.yml"
        path.write_text(yaml.safe_dump(rule["spec"]))
        rule_files.append(path.name)
    for p in sc.pools:
        queue = plans[(p.namespace, p.name)].queue
        for instance in ("rabbit-0", "rabbit-1"):  # the same queue scraped twice: not doubled
            series.append({"series": f'rabbitmq_queue_messages{{vhost="/",queue="{queue}",'
                                     f'instance="{instance}",namespace="rabbitmq"}}',
                           "values": f"{p.depth}x40"})
        series.append({"series": f'kube_deployment_status_replicas{{namespace="{p.namespace}",'
                                 f'deployment="{p.name}",job="ksm"}}',
                       "values": f"{p.replicas}x40"})
    # Quota "used" = non-pool use + what the pools of the namespace run.
    ours = [p for p in sc.pools if p.namespace == sc.namespace]
    deployments = []
    for p in ours:
        dep = next(c for c in plans[(p.namespace, p.name)].children if c["kind"] == "Deployment")
        deployments.append({**dep, "status": {"replicas": p.replicas}})
    usage = pools_usage(deployments)
    quota_objects = []
    for i, q in enumerate(sc.quotas):
        used = {r: _fmt(parse_quantity(q["nonpool"].get(r, "0")) + usage.get(r, Decimal(0)))
                for r in q["hard"]}
        quota_objects.append({"status": {"hard": q["hard"], "used": used}})
        for kind, values in (("hard", q["hard"]), ("used", used)):
            for resource, amount in values.items():
                series.append({"series": f'kube_resourcequota{{namespace="{sc.namespace}",'
                                         f'resourcequota="q{i}",resource="{resource}",'
                                         f'type="{kind}",job="ksm"}}',
                               "values": f"{_fmt(parse_quantity(amount))}x40"})
    # A quota of another namespace, which must not constrain this one.
    series.append({"series": 'kube_resourcequota{namespace="elsewhere",resourcequota="q",'
                             'resource="requests.cpu",type="hard"}', "values": "0x40"})
    budget = pool_budget(quota_objects, usage) or {}
    demands = [PoolDemand(p.name, p.depth, p.max, p.min, pod_quota_requests(
        {"containers": [{"resources": {"requests": p.requests, "limits": p.limits}}]}),
        concurrency=p.concurrency or 1) for p in ours]
    expected = desired_replicas(demands, budget)
    others = [p for p in sc.pools if p.namespace != sc.namespace]
    exp_others = desired_replicas([PoolDemand(p.name, p.depth, p.max, p.min,
                                              concurrency=p.concurrency or 1)
                                   for p in others], {})
    samples = [{"labels": f'{DESIRED_RECORD}{{namespace="{sc.namespace}",pool="{n}"}}',
                "value": v} for n, v in expected.items()]
    samples += [{"labels": f'{DESIRED_RECORD}{{namespace="{p.namespace}",pool="{p.name}"}}',
                 "value": exp_others[p.name]} for p in others]
    test = {"rule_files": rule_files, "evaluation_interval": "15s", "tests": [{
        "interval": "15s", "input_series": series,
        "promql_expr_test": [{"expr": DESIRED_RECORD, "eval_time": "5m",
                              "exp_samples": samples}]}]}
    (tmp / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    proc = subprocess.run([PROMTOOL, "test", "rules", "test.yml"], cwd=tmp,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"expected {expected}\n{proc.stdout}\n{proc.stderr}"


CPU = {"cpu": "500m", "memory": "512Mi"}
SCENARIOS = {
    "two pools share cpu by depth": Scenario(
        [Pool("a", 30, CPU), Pool("b", 10, CPU)],
        [{"hard": {"requests.cpu": "4", "requests.memory": "16Gi"}, "nonpool": {}}]),
    "pools' own pods count back": Scenario(
        [Pool("a", 30, CPU, replicas=5), Pool("b", 10, CPU, replicas=2)],
        [{"hard": {"requests.cpu": "6", "pods": "20"},
          "nonpool": {"requests.cpu": "1500m", "pods": "3"}}]),
    "zero depth everywhere": Scenario(
        [Pool("a", 0, CPU), Pool("b", 0, CPU, min=1)],
        [{"hard": {"requests.cpu": "4"}, "nonpool": {}}]),
    "quota exhausted by other pods": Scenario(
        [Pool("a", 12, CPU, min=1), Pool("b", 3, CPU)],
        [{"hard": {"requests.cpu": "2", "cpu": "2"}, "nonpool": {"requests.cpu": "2500m",
                                                                  "cpu": "2500m"}}]),
    "max cap without quota": Scenario([Pool("a", 500, CPU, max=7), Pool("b", 3)], []),
    "memory bound with binary suffixes": Scenario(
        [Pool("a", 40, {"cpu": "100m", "memory": "512Mi"}),
         Pool("b", 40, {"cpu": "100m", "memory": "1536Mi"})],
        [{"hard": {"requests.memory": "5Gi", "requests.cpu": "100"},
          "nonpool": {"requests.memory": "1Gi"}}]),
    "limits and pod count quotas, two quotas": Scenario(
        [Pool("a", 9, {"cpu": "250m"}, {"cpu": "1", "memory": "1Gi"}),
         Pool("b", 1, {"cpu": "250m"}, {"cpu": "1", "memory": "1Gi"}, replicas=1)],
        [{"hard": {"limits.cpu": "5", "limits.memory": "64Gi"}, "nonpool": {"limits.cpu": "1"}},
         {"hard": {"pods": "4", "count/pods": "10"}, "nonpool": {"pods": "1"}}]),
    "queueName override and another namespace": Scenario(
        [Pool("a", 10, CPU, queue="shared-science-queue"), Pool("b", 30, CPU),
         Pool("a", 1000, CPU, namespace="other")],
        [{"hard": {"requests.cpu": "3"}, "nonpool": {}}]),
    "concurrency: a replica per 4 tasks, quota shared by depth": Scenario(
        [Pool("a", 30, CPU, concurrency=4), Pool("b", 10, CPU), Pool("c", 7, CPU, concurrency=3,
                                                                      max=2)],
        [{"hard": {"requests.cpu": "20"}, "nonpool": {}}]),
    "seed quantities": Scenario(
        [Pool("mproject", 100, {"cpu": "0.5", "memory": "524288000"},
              {"cpu": "0.5", "memory": "524288000"}, replicas=3)],
        [{"hard": {"requests.cpu": "10", "requests.memory": "4Gi", "limits.cpu": "10",
                   "limits.memory": "4Gi"}, "nonpool": {"requests.memory": "100Mi"}}]),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_rule_matches_python_formula(name, tmp_path):
    run_scenario(SCENARIOS[name], tmp_path)


_pool = st.builds(
    lambda i, depth, cpu_m, mem_mi, replicas, lo, hi, conc: Pool(
        f"p{i}", depth, {"cpu": f"{cpu_m}m", "memory": f"{mem_mi}Mi"}, replicas=replicas,
        min=min(lo, hi), max=max(lo, hi), concurrency=conc),
    st.integers(0, 0), st.integers(0, 60), st.sampled_from([100, 250, 333, 500, 1000, 1500]),
    st.sampled_from([64, 100, 512, 1000, 1536]), st.integers(0, 6), st.integers(0, 3),
    st.integers(0, 40), st.sampled_from([None, 1, 2, 3, 8]))


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pools=st.lists(_pool, min_size=1, max_size=4),
       cpu=st.integers(0, 12000), mem=st.integers(0, 16384), nonpool=st.integers(0, 4000))
def test_rule_matches_python_formula_random(pools, cpu, mem, nonpool, tmp_path_factory):
    for i, p in enumerate(pools):
        p.name = f"p{i}"
    quotas = [{"hard": {"requests.cpu": f"{cpu}m", "requests.memory": f"{mem}Mi"},
               "nonpool": {"requests.cpu": f"{nonpool}m"}}]
    run_scenario(Scenario(pools, quotas), tmp_path_factory.mktemp("promtool"))


def test_promtool_is_installed():
    assert Path(PROMTOOL).exists(), "install Debian's 'prometheus' package for promtool"
