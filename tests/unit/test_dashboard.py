"""The Grafana dashboard and PodMonitors: every query parses, names real series, returns data.

An empty panel is silent until the day someone needs it, so every query (targets, variables) is
(1) parsed by ``promtool check rules``; (2) checked by name (``hyperpool_*`` in
:data:`hyperpool.metrics.EXPORTED` or recorded by the controller's rule, others in
:data:`EXTERNAL`) and label (filters, groupings and legends use labels the series carry); (3)
evaluated by ``promtool test rules`` over synthetic scrapes with the real label sets (from the
metric objects, plus the controller's real rules): each must return data. The label sets are a
*local* scrape's, so a panel that needs Kubernetes' target labels fails here.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.utils import floatToGoString

from hyperpool import metrics
from hyperpool.controller import naming
from hyperpool.controller.plan import ControllerConfig, plan
from hyperpool.metrics import EXPORTED
from tests.conftest import REPO
from tests.unit.test_controller_promql import PROMTOOL
from tests.unit.test_controller_support import make_pool

DASHBOARD = REPO / "k8s" / "monitoring" / "grafana-dashboard.json"
COPY = REPO / "configs" / "grafana" / "hyperpool-dashboard.json"
CONFIGMAP = REPO / "k8s" / "monitoring" / "grafana-dashboard-configmap.yaml"
PODMONITORS = REPO / "k8s" / "monitoring" / "podmonitor.yaml"
OPERATOR = REPO / "k8s" / "operator" / "deployment.yaml"

# Names the dashboard may read from other exporters, with their labels:
# rabbitmq_prometheus per-object metrics (/metrics/per-object, or /metrics with
# prometheus.return_per_object_metrics = true) and kube-state-metrics.
EXTERNAL = {**{f"rabbitmq_queue_messages{s}": {"vhost", "queue"}
               for s in ("", "_ready", "_unacked")},
            "kube_deployment_status_replicas": {"namespace", "deployment"},
            "kube_resourcequota": {"namespace", "resourcequota", "resource", "type"}}
SCRAPE = {"job", "instance"}  # target labels every scrape adds, Kubernetes or not
# The test's world: namespace "default", WorkerPool "mproject" serving task type mProject.
CONCRETE = {"namespace": "default", "pool": "mproject", "task_type": "mProject",
            "workflow": "montage", "datasource": "prometheus", "__rate_interval": "1m",
            "__range": "10m", "__interval": "15s"}
VALUES = {"queue": ["default.mProject"], "task_type": ["mProject"], "namespace": ["default"],
          "pool": ["mproject"], "outcome": ["succeeded", "failed"], "model": ["pool", "job"],
          "workflow": ["montage"], "state": ["done", "running"], "direction": ["up", "down"],
          "resource": ["cpu", "memory"], "reason": ["transient"]}
AGGREGATIONS = {"sum", "min", "max", "avg", "count", "group", "topk", "bottomk", "quantile"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
TOKEN = re.compile(r'\s+|"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|\[[^\]]*\]|=~|!~|!=|==|>=|<='
                   r'|[A-Za-z_:][A-Za-z0-9_:]*|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[{}(),=<>+\-*/^%]')
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
CONFIG = ControllerConfig(default_prometheus_url="http://prometheus:9090")


# -- the dashboard's queries ------------------------------------------------------------------
def load() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panel_queries(dashboard: dict) -> list[tuple[str, str, str]]:
    """(panel title / refId, PromQL, legend) of every target, rows' nested panels included."""
    panels = [q for p in dashboard["panels"] for q in [p, *p.get("panels", [])]]
    return [(f"{p['title']} / {t['refId']}", t["expr"], t.get("legendFormat", ""))
            for p in panels for t in p.get("targets", [])]


def variable_queries(dashboard: dict) -> dict[str, str]:
    """Variable name -> the PromQL inside its ``query_result(...)`` or ``label_values(...)``."""
    out = {}
    for v in (v for v in dashboard["templating"]["list"] if v["type"] == "query"):
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        if m := re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query, re.S):
            query = f"query_result(count by ({m.group(2)}) ({m.group(1)}))"
        assert (m := re.fullmatch(r"query_result\((.*)\)", query, re.S)), v["name"]
        out[v["name"]] = m.group(1)
    return out


def all_queries(dashboard: dict) -> list[tuple[str, str]]:
    return ([(where, expr) for where, expr, _ in panel_queries(dashboard)]
            + [(f"variable {n}", e) for n, e in variable_queries(dashboard).items()])


def concrete(expr: str) -> str:
    """Grafana variables replaced by this test's values (``$1`` of label_replace kept)."""
    return VARIABLE.sub(lambda m: m.group(0) if (n := next(g for g in m.groups() if g)).isdigit()
                        else CONCRETE[n], expr)


# -- what the queries read ------------------------------------------------------------------
def own_series() -> dict[str, set[str]]:
    """Series name -> labels, from the metric objects of hyperpool.metrics themselves."""
    out: dict[str, set[str]] = {}
    for m in (m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)):
        labels = set(m._labelnames)
        if m._type == "histogram":
            out |= {f"{m._name}_bucket": labels | {"le"}, f"{m._name}_sum": labels,
                    f"{m._name}_count": labels}
        else:
            out[m._name + ("_total" if m._type == "counter" else "")] = labels
    return out


def pool_rule() -> dict:
    """The controller's real PrometheusRule for WorkerPool default/mproject (task mProject)."""
    spec = {"taskType": "mProject", "image": "img", "maxReplicaCount": 8, "initialResources": {
        "requests": {"cpu": "500m", "memory": "256Mi"}}}
    result = plan(make_pool("mproject", spec, namespace="default"), None, config=CONFIG)
    return next(c for c in result.children if c["kind"] == "PrometheusRule")


def recorded_series() -> dict[str, set[str]]:
    rules = pool_rule()["spec"]["groups"][0]["rules"]
    return {r["record"]: set().union(*(x.get("labels", {}) for x in rules
                                       if x["record"] == r["record"])) for r in rules}


def unknown_names(exprs: list[str]) -> set[str]:
    """Names that are neither exported, recorded by the controller, nor allow-listed."""
    known = EXPORTED | set(recorded_series()) | set(EXTERNAL)
    return {n for e in exprs for n in reads(concrete(e))[0]
            if n not in known and re.sub(r"_(bucket|sum|count)$", "", n) not in EXPORTED}


def reads(expr: str) -> tuple[dict[str, set[str]], set[str], set[str]]:
    """(series name -> labels it matches on, labels grouped by, labels label_replace writes)."""
    tokens = [t for t in TOKEN.findall(expr) if not t.isspace()]
    assert "".join(tokens) == re.sub(r"\s+", "", expr), f"cannot tokenize {expr!r}"
    selectors: dict[str, set[str]] = {}
    grouped, written = set(), set()
    calls: list[list] = []  # [function name, argument index] per open parenthesis
    i = 0
    while i < len(tokens):
        tok, nxt = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in GROUPING and nxt == "(":
            end = tokens.index(")", i)
            grouped |= {t for t in tokens[i + 2:end] if t != ","}
            i = end + 1
            continue
        if tok in AGGREGATIONS and nxt in ("by", "without"):
            i += 1  # `sum by (...) (...)`: the grouping clause comes first
            continue
        if re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", tok) and tok not in KEYWORDS | GROUPING:
            if nxt == "(":
                calls.append([tok, 0])
                i += 2
                continue
            labels = selectors.setdefault(tok, set())
            if nxt == "{":
                end = tokens.index("}", i)
                labels |= {t for j, t in enumerate(tokens[i + 2:end], i + 2)
                           if tokens[j - 1] in ("{", ",")}
                i = end
        elif tok == "(":
            calls.append(["", 0])
        elif tok == ")":
            calls.pop()
        elif tok == "," and calls:
            calls[-1][1] += 1
        elif tok[0] == '"' and calls and calls[-1][0] == "label_replace":
            (written if calls[-1][1] == 1 else grouped if calls[-1][1] == 3 else set()).add(
                tok[1:-1])
        i += 1
    return selectors, grouped - {"__name__"}, written


def label_problems(expr: str) -> list[str]:
    series = {**own_series(), **recorded_series(), **EXTERNAL}
    selectors, grouped, written = reads(concrete(expr))
    problems = [f"{name}{{{label}}}" for name, labels in selectors.items() if name in series
                for label in labels - series[name] - SCRAPE]
    available = set().union(*(series.get(n, set()) for n in selectors)) | SCRAPE | written
    return problems + [f"by/on ({label})" for label in grouped - available]


# -- tests: names and labels ------------------------------------------------------------------
def test_both_copies_and_the_configmap_hold_the_same_dashboard():
    assert COPY.read_bytes() == DASHBOARD.read_bytes()
    cm = yaml.safe_load(CONFIGMAP.read_text())
    kubernetes_validate.validate(cm, kubernetes_validate.utils.all_versions()[0], strict=True)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"  # the sidecar's default label
    assert cm["data"] == {"hyperpool-dashboard.json": DASHBOARD.read_text()}
    # client-side `kubectl apply` keeps a copy in an annotation limited to 256 KiB
    assert len(CONFIGMAP.read_bytes()) < 200_000


def test_queries_read_only_real_series_and_labels():
    assert {re.sub(r"_(bucket|sum|count)$", "", n) for n in own_series()} == EXPORTED
    queries = all_queries(load())
    exprs = [e for _, e in queries]
    assert unknown_names(exprs) == set()
    assert {where: p for where, e in queries if (p := label_problems(e))} == {}
    used = {re.sub(r"_(bucket|sum|count)$", "", n) for e in exprs for n in reads(concrete(e))[0]}
    assert {f"hyperpool_{n}" for n in (
        "tasks_total", "task_duration_seconds", "pool_desired_replicas", "pool_replicas",
        "workerpool_desired_replicas", "engine_workflow_tasks", "engine_tasks_dispatched_total",
        "engine_completion_latency_seconds", "engine_tasks_completed_total")} | {
        "kube_deployment_status_replicas", "rabbitmq_queue_messages_ready",
        "rabbitmq_queue_messages_unacked"} <= used


@pytest.mark.parametrize("wrong", [
    "sum(rate(hyperpool_task_total[5m]))",  # misspelt own metric
    "hyperpool_workerpool_replicas",  # not something the controller's rule records
    'rabbitmq_queue_messages_readyy{queue="x"}',  # not an exporter's name
    "kube_deployment_replicas",
])
def test_a_wrong_name_is_caught(wrong):
    assert unknown_names([f"sum by (queue) ({wrong})"]) == {reads(wrong)[0].popitem()[0]}


@pytest.mark.parametrize("wrong", [
    'hyperpool_tasks_total{namespace="default"}',  # only Kubernetes scrapes add namespace
    "sum by (pool) (hyperpool_tasks_total)",
    'rabbitmq_queue_messages{pool="mproject"}',
])
def test_a_wrong_label_is_caught(wrong):
    assert label_problems(wrong)


# -- tests: promtool ------------------------------------------------------------------------
def promtool(tmp_path: Path, name: str, doc: dict, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return subprocess.run([PROMTOOL, *args, name], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)


def check_rules(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    rules = [{"record": f"dashboard:expr_{i}", "expr": concrete(e)} for i, e in enumerate(exprs)]
    return promtool(tmp_path, "rules.yml", {"groups": [{"name": "dashboard", "rules": rules}]},
                    "check", "rules")


def test_every_query_parses_and_a_broken_one_does_not(tmp_path):
    exprs = [e for _, e in all_queries(load())]
    assert len(exprs) >= 30 and all("$" not in concrete(e).replace('"$1"', "") for e in exprs)
    check = check_rules(exprs, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check_rules(["sum by (queue (rate(x[5m])"], tmp_path).returncode != 0  # can fail


def input_series() -> list[dict[str, str]]:
    """Ten minutes of scrapes: every own series, RabbitMQ's and kube-state-metrics'."""
    out: dict[str, str] = {}
    for m in (m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)):
        for combo in itertools.product(*(VALUES[label] for label in m._labelnames)):
            sel = "".join(f'{k}="{v}",' for k, v in zip(m._labelnames, combo, strict=True))
            sel += 'job="hyperpool",instance="pools:9100"'
            if m._type == "histogram":
                bounds = [floatToGoString(b) for b in m._upper_bounds]
                out |= {f'{m._name}_bucket{{{sel},le="{b}"}}': f"0+{k}x40"
                        for k, b in enumerate(bounds)}
                out |= {f"{m._name}_count{{{sel}}}": f"0+{len(bounds) - 1}x40",
                        f"{m._name}_sum{{{sel}}}": "0+7x40"}
            else:
                counter = m._type == "counter"
                out[f"{m._name}{'_total' if counter else ''}{{{sel}}}"] = (
                    "0+1x40" if counter else "3x40")
    rabbit = 'job="rabbitmq",instance="rabbitmq:15692",vhost="/"'
    out |= {f'rabbitmq_queue_messages{suffix}{{{rabbit},queue="{queue}"}}': f"{value}x40"
            for queue in ("default.mProject", "default.mProject.dead")
            for suffix, value in (("_ready", 5), ("_unacked", 2), ("", 7))}
    ksm = 'job="kube-state-metrics",instance="ksm:8080",namespace="default"'
    out[f'kube_deployment_status_replicas{{{ksm},deployment="mproject"}}'] = "2x40"
    out |= {f'kube_resourcequota{{{ksm},resourcequota="q",resource="{r}",type="{kind}"}}':
            f"{value}x40" for r, hard, used in (("requests.cpu", 4, 1),
                                                 ("requests.memory", 2**33, 2**30))
            for kind, value in (("hard", hard), ("used", used))}
    return [{"series": k, "values": v} for k, v in out.items()]


def evaluate(checks: list[tuple[str, str]], tmp_path: Path) -> subprocess.CompletedProcess:
    """promtool test rules: each (PromQL, expected labels) must give exactly one 1-sample."""
    (tmp_path / "pool-rule.yml").write_text(yaml.safe_dump(pool_rule()["spec"]))
    tests = [{"expr": expr, "eval_time": "10m", "exp_samples": [{"labels": labels, "value": 1}]}
             for expr, labels in checks]
    return promtool(tmp_path, "test.yml", {
        "rule_files": ["pool-rule.yml"], "evaluation_interval": "15s", "tests": [{
            "interval": "15s", "input_series": input_series(), "promql_expr_test": tests}]},
        "test", "rules")


def test_every_query_returns_data_and_variables_the_expected_value(tmp_path):
    dashboard = load()
    checks = [(f"count({concrete(e)}) > bool 0", "{}") for _, e, _ in panel_queries(dashboard)]
    for _, expr, legend in panel_queries(dashboard):  # every series has each legend label
        checks += [(f'group by (ok) (label_replace(count by ({label}) ({concrete(expr)}), "ok", '
                    f'"1", "{label}", ".+"))', '{ok="1"}')
                   for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)]
    checks += [(f"({concrete(e)}) > bool 0", f'{{{name}="{CONCRETE[name]}"}}')
               for name, e in variable_queries(dashboard).items()]
    proc = evaluate(checks, tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_a_query_that_finds_nothing_is_caught(tmp_path):
    wrong = 'sum(rate(hyperpool_tasks_total{queue=~"default.mproject"}[1m]))'  # case matters
    assert evaluate([(f"count({wrong}) > bool 0", "{}")], tmp_path).returncode != 0


# -- tests: dashboard shape -----------------------------------------------------------------
def test_variables_and_panels_are_consistent():
    dashboard = load()
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names[:3] == ["datasource", "namespace", "pool"] and set(names) <= set(CONCRETE)
    text = json.dumps(dashboard["panels"]) + json.dumps(dashboard["templating"])
    used = {next(g for g in m.groups() if g) for m in VARIABLE.finditer(text)}
    assert used - {"1"} <= set(names) | {"__rate_interval", "__range", "__all"}
    assert set(names) <= used  # none is dead weight
    for i, v in enumerate(dashboard["templating"]["list"]):  # a variable uses earlier ones only
        refs = {next(g for g in m.groups() if g) for m in VARIABLE.finditer(json.dumps(v))}
        assert refs - {"1", "__all"} <= set(names[:i]), v["name"]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = [(x, y) for p in panels for g in [p["gridPos"]] for x in range(g["x"], g["x"] + g["w"])
             for y in range(g["y"], g["y"] + g["h"])]
    assert len(cells) == len(set(cells)) and max(x for x, _ in cells) < 24  # no overlaps
    assert all(len({t["refId"] for t in p.get("targets", [])}) == len(p.get("targets", []))
               for p in panels)


# -- tests: PodMonitors ---------------------------------------------------------------------
# The keys we use, as prometheus-operator's CRD spells them, so that this runs without the
# reference CRDs too (a misspelt key would be pruned by the API server, silently); with them,
# test_controller_builders checks the PodMonitors against the CRD's own schema.
KEYS = {"": {"apiVersion", "kind", "metadata", "spec"},
        "spec": {"selector", "namespaceSelector", "podMetricsEndpoints"},
        "selector": {"matchLabels"}, "namespaceSelector": {"any", "matchNames"},
        "endpoint": {"port", "path", "interval", "scrapeTimeout", "honorLabels", "relabelings"},
        "relabeling": {"sourceLabels", "targetLabel", "regex", "replacement", "action"}}
DURATION = re.compile(r"(0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?"
                      r"([0-9]+ms)?)")


def podmonitor_problems(doc: dict) -> list[str]:
    spec = doc.get("spec", {})
    parts = [("", doc), ("spec", spec), ("selector", spec.get("selector", {})),
             ("namespaceSelector", spec.get("namespaceSelector", {}))]
    for e in spec.get("podMetricsEndpoints") or [{}]:
        parts += [("endpoint", e)] + [("relabeling", r) for r in e.get("relabelings", [])]
    problems = [f"{w or 'top'}: {set(part) - KEYS[w]}" for w, part in parts if set(part) - KEYS[w]]
    problems += [f"endpoint: {e}" for w, e in parts if w == "endpoint" and (
        not isinstance(e.get("port"), str) or not DURATION.fullmatch(e.get("interval", "0")))]
    return problems + [what for what, bad in (
        ("not a PodMonitor", (doc.get("apiVersion"), doc.get("kind"))
         != ("monitoring.coreos.com/v1", "PodMonitor")),
        ("selects every pod", not spec.get("selector", {}).get("matchLabels"))) if bad]


def podmonitors() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(PODMONITORS.read_text()) if d]
    assert {d["metadata"]["name"]: podmonitor_problems(d) for d in docs} == {
        "hyperpool-pools": [], "hyperpool-operator": []}
    return {d["metadata"]["name"]: d for d in docs}


def selects(monitor: dict, pod_template: dict) -> bool:
    """Whether the PodMonitor scrapes pods of this template (labels and the port's name)."""
    ports = {p.get("name") for c in pod_template["spec"]["containers"]
             for p in c.get("ports", [])}
    spec = monitor["spec"]
    return (spec["selector"]["matchLabels"].items() <= pod_template["metadata"]["labels"].items()
            and all(e["port"] in ports for e in spec["podMetricsEndpoints"]))


def test_podmonitors_scrape_the_worker_pods_and_the_operator():
    monitors = podmonitors()
    pools, operator = monitors["hyperpool-pools"], monitors["hyperpool-operator"]
    result = plan(make_pool("mproject", {"taskType": "mProject", "image": "img"},
                            namespace="science"), None, config=CONFIG)
    deployment = next(c for c in result.children if c["kind"] == "Deployment")
    assert selects(pools, deployment["spec"]["template"])
    assert pools["spec"]["namespaceSelector"] == {"any": True}
    relabel = pools["spec"]["podMetricsEndpoints"][0]["relabelings"][0]
    pod_label = re.sub(r"[^a-zA-Z0-9_]", "_", naming.POOL_LABEL)
    assert relabel["sourceLabels"] == [f"__meta_kubernetes_pod_label_{pod_label}"]
    assert selects(operator, yaml.safe_load(OPERATOR.read_text())["spec"]["template"])
    # the operator's series carry the WorkerPool's namespace label: keep it, not the pod's
    assert operator["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True


def test_the_podmonitor_check_can_fail():
    bad = yaml.safe_load("""{apiVersion: monitoring.coreos.com/v1, kind: PodMonitor,
        metadata: {name: x}, spec: {selector: {matchLabels: {a: b}}, podMetricsEndpoints: [
        {port: metrics, interval: 15 s, relabelings: [{source_labels: [x]}]}]}}""")
    assert len(podmonitor_problems(bad)) == 2  # the interval and the relabeling's key
    assert not selects(bad, yaml.safe_load(
        "{metadata: {labels: {a: b}}, spec: {containers: [{ports: [{name: http}]}]}}"))
