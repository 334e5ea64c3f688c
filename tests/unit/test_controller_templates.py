"""User templates (the seed's ConfigMap) replace built-ins; identity is still enforced."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperpool.controller import naming
from hyperpool.controller.plan import ControllerConfig, plan
from hyperpool.controller.quota import pool_budget
from hyperpool.controller.templates import TEMPLATE_FILES, TemplateError, Templates
from tests.unit.test_controller_support import schema_errors, seed_pool

SHIPPED = Path(__file__).resolve().parents[2] / "hyperpool" / "templates"
QUOTA = [{"status": {"hard": {"requests.cpu": "2"}, "used": {}}}]


def kinds(result) -> dict:
    return {c["kind"]: c for c in result.children}


@pytest.mark.parametrize("paused", [False, True])
def test_shipped_templates_render_exactly_the_built_in_children(paused):
    pool = seed_pool()
    if paused:
        pool["spec"]["maxReplicaCount"] = 0
    budget = pool_budget(QUOTA, {})
    built = kinds(plan(pool, budget, config=ControllerConfig()))
    templated = kinds(plan(pool, budget, config=ControllerConfig(
        templates=Templates.from_directory(SHIPPED))))
    assert set(TEMPLATE_FILES) == set(templated)
    for kind in TEMPLATE_FILES:
        assert templated[kind] == built[kind], kind


def test_override_is_used_but_identity_is_enforced(tmp_path):
    (tmp_path / "deployment.yml").write_text("""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: something-else
  namespace: kube-system
  labels: {team: astro, hyperflow.agh.edu.pl/pool: wrong}
spec:
  replicas: 9
  selector: {matchLabels: {app: mine}}
  template:
    metadata: {labels: {app: mine}}
    spec:
      nodeSelector: {pool: {{ task_type | lower }}}
      containers:
      - name: worker
        image: "{{ image }}-gpu"
        args: ["--queue", "{{ queue }}"]
        env: {{ env | toyaml }}
        volumeMounts: [{name: work, mountPath: /work_dir}]
      volumes: [{name: work, persistentVolumeClaim: {claimName: nfs}}]
""")
    templates = Templates.from_directory(tmp_path)
    result = plan(seed_pool(), None, config=ControllerConfig(templates=templates))
    dep = kinds(result)["Deployment"]
    meta = dep["metadata"]
    assert (meta["name"], meta["namespace"]) == ("mproject", "default")
    assert meta["labels"] == {"team": "astro", naming.MANAGED_BY: "hyperpool",
                              naming.POOL_LABEL: "mproject"}
    assert meta["ownerReferences"][0]["uid"] == "uid-1"
    assert "replicas" not in dep["spec"]
    assert dep["spec"]["selector"]["matchLabels"] == naming.selector_labels("mproject")
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["app"] == "mine"
    assert pod["spec"]["nodeSelector"] == {"pool": "mproject"}
    assert pod["spec"]["containers"][0]["image"] == "kjanecki/montage2-amqp:latest-gpu"
    # the other two children keep their built-ins
    assert kinds(result)["ScaledObject"]["spec"]["triggers"][0]["type"] == "prometheus"


def test_scaledobject_override_cannot_escape_the_quota(tmp_path):
    (tmp_path / "scaledobject.yml").write_text("""
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec:
  scaleTargetRef: {name: other}
  minReplicaCount: 10
  maxReplicaCount: 1000
  triggers: [{type: prometheus, metadata: {serverAddress: "{{ prometheus_url }}",
              query: {{ scaler_query | tojson }}, threshold: "2"}}]
""")
    config = ControllerConfig(templates=Templates.from_directory(tmp_path))
    so = kinds(plan(seed_pool(), pool_budget(QUOTA, {}), config=config))["ScaledObject"]
    assert so["spec"]["scaleTargetRef"]["name"] == "mproject"
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (4, 4)
    assert schema_errors("ScaledObject", so) == []


@pytest.mark.parametrize("text, message", [
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: {{ nmae }}}\n", "nmae"),
    ("apiVersion: v1\nkind: ConfigMap\n", "expected apps/v1 Deployment"),
    ("- just\n- a list\n", "expected a mapping"),
    ("a: [unclosed\n", "not YAML"),
])
def test_broken_templates_become_children_failed(tmp_path, text, message):
    (tmp_path / "deployment.yml").write_text(text)
    config = ControllerConfig(templates=Templates.from_directory(tmp_path))
    result = plan(seed_pool(), None, config=config)
    assert result.children == []
    assert result.findings[0].reason == "ChildrenFailed"
    assert message in result.findings[0].message
    assert "deployment.yml" in result.findings[0].message


def test_template_syntax_errors_fail_at_startup(tmp_path):
    (tmp_path / "scaledobject.yml").write_text("{% if %}")
    with pytest.raises(TemplateError, match="scaledobject.yml:1"):
        Templates.from_directory(tmp_path)
