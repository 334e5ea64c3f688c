"""The Grafana dashboard's queries parse (promtool) and use only metrics that really exist."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from hyperpool.metrics import EXPORTED
from tests.conftest import REPO

DASHBOARD = REPO / "configs" / "grafana" / "hyperpool-dashboard.json"
CONFIGMAP = REPO / "k8s" / "monitoring" / "grafana-dashboard-configmap.yaml"
# Series recorded by the controller's PrometheusRule (hyperpool/controller/rules.py).
RECORDED = re.compile(r"^hyperpool_workerpool_[a-z_]+$")
# Names of the exporters the dashboard reads besides hyperpool's own metrics.
EXTERNAL = {"rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked",
            "kube_deployment_status_replicas"}
FUNCTIONS = {"sum", "by", "rate", "increase", "histogram_quantile", "le", "label_values"}


def expressions(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def concrete(expr: str) -> str:
    return (expr.replace("$__rate_interval", "5m").replace("$namespace", "default")
            .replace("$pool", "mProject"))


def metric_names(expr: str) -> set[str]:
    text = re.sub(r"\b(by|without)\s*\([^)]*\)", "", re.sub(r'"[^"]*"', '""', expr))
    names = set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*(?:\{|\[|\))", text))
    return {n for n in names if n not in FUNCTIONS and "_" in n}


def unknown_names(dashboard: dict) -> set[str]:
    bad = set()
    for expr in expressions(dashboard):
        for name in metric_names(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if not (base in EXPORTED or name in EXTERNAL or RECORDED.match(name)):
                bad.add(name)
    return bad


def promtool_check(exprs: list[str], tmp_path) -> subprocess.CompletedProcess[str]:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": concrete(e)} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                          text=True)


def test_every_query_parses(tmp_path):
    exprs = expressions(json.loads(DASHBOARD.read_text()))
    assert len(exprs) >= 15
    check = promtool_check(exprs, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_broken_query_is_caught(tmp_path):
    assert promtool_check(["sum by (queue (rate(x[5m])"], tmp_path).returncode != 0


def test_queries_use_only_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    assert unknown_names(dashboard) == set()
    used = {re.sub(r"_(bucket|sum|count)$", "", n) for e in expressions(dashboard)
            for n in metric_names(e)}
    assert {"hyperpool_tasks_total", "hyperpool_task_duration_seconds",
            "hyperpool_pool_desired_replicas", "hyperpool_engine_workflow_tasks"} <= used


def test_a_misspelt_metric_is_caught():
    dashboard = json.loads(DASHBOARD.read_text())
    dashboard["panels"][1]["targets"][0]["expr"] = "sum(hyperpool_task_total)"
    assert unknown_names(dashboard) == {"hyperpool_task_total"}


@pytest.mark.parametrize("panel_type", ["row", "timeseries"])
def test_dashboard_shape(panel_type):
    dashboard = json.loads(DASHBOARD.read_text())
    assert any(p["type"] == panel_type for p in dashboard["panels"])
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "namespace",
                                                                    "pool"}


def test_kubernetes_configmap_carries_the_same_dashboard():
    cm = yaml.safe_load(CONFIGMAP.read_text())
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["hyperpool-dashboard.json"]) == json.loads(DASHBOARD.read_text())
