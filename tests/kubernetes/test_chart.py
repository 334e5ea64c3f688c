"""The Helm chart (k8s/chart): lint, render, validate, install on the real API server.

The installed release serves a *list* of namespaces: its RBAC is a Role per namespace, and the
real ``hyperpool controller`` runs as the release's ServiceAccount (its token, nothing else)
and reconciles same-named pools in two namespaces without collisions, leaving a third namespace
alone. A broker password kept in a Secret never shows up in children, status or logs.
"""

from __future__ import annotations

import filecmp
import json
import subprocess
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from hyperpool.controller import naming
from tests.conftest import REPO
from tests.kubernetes.conftest import create_in, wait_for
from tests.kubernetes.helmtool import STUB_MARKER, chart_with_dependencies, helm_binary
from tests.kubernetes.identity import can_i, run_controller, service_account_kubeconfig
from tests.unit.test_controller_support import seed_manifest_text

pytestmark = pytest.mark.kubernetes
CHART = REPO / "k8s" / "chart"
K8S_VERSION = kubernetes_validate.utils.all_versions()[0]
ADDONS = ["kube-prometheus-stack", "prometheus-adapter", "rabbitmq",
          "prometheus-rabbitmq-exporter", "keda"]
PASSWORD = f"pw-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


@pytest.fixture(scope="module")
def chart(tmp_path_factory) -> Path:
    return chart_with_dependencies(CHART, tmp_path_factory.mktemp("chart"))


def run(helm: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=300)


def template(helm: Path, chart: Path, *sets: str) -> list[dict]:
    args = [a for s in sets for a in ("--set", s)]
    out = run(helm, "template", "wpo", str(chart), "-n", "hyperpool-system", *args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_chart_files_are_the_repository_files():
    assert filecmp.cmp(CHART / "crds" / "workerpools.hyperflow.agh.edu.pl.yaml",
                       REPO / "k8s" / "crds" / "workerpools.hyperflow.agh.edu.pl.yaml",
                       shallow=False)
    for path in (REPO / "hyperpool" / "templates").glob("*.yml"):
        assert filecmp.cmp(CHART / "files" / path.name, path, shallow=False), path.name


def test_chart_lints_and_needs_its_dependencies_declared(helm, chart):
    out = run(helm, "lint", str(chart), "--strict")
    assert out.returncode == 0, out.stdout + out.stderr
    bare = run(helm, "template", "wpo", str(CHART))  # no `helm dependency build`: helm says so
    assert bare.returncode != 0 and "helm dependency build" in bare.stderr


def test_default_render_is_cluster_wide_valid_and_without_addons(helm, chart):
    docs = template(helm, chart)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert not [d for d in docs if d["metadata"]["name"].startswith(STUB_MARKER)]
    assert sorted(d["kind"] for d in docs) == ["ClusterRole", "ClusterRoleBinding", "ConfigMap",
                                               "Deployment", "ServiceAccount"]
    (dep,) = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:3] == ["hyperpool", "controller", "--all-namespaces"]
    assert "--templates=/templates" in container["command"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    (cm,) = by_kind(docs, "ConfigMap")
    for name, text in cm["data"].items():
        assert text == (REPO / "hyperpool" / "templates" / name).read_text(encoding="utf-8")
    rules = by_kind(docs, "ClusterRole")[0]["rules"]
    assert not any("secrets" in r["resources"] or "delete" in r["verbs"] for r in rules)


@pytest.mark.parametrize("addon", ADDONS)
def test_each_addon_is_a_conditional_dependency(helm, chart, addon):
    names = {d["metadata"]["name"] for d in template(helm, chart, f"{addon}.enabled=true")}
    assert names & {f"{STUB_MARKER}-{a}" for a in ADDONS} == {f"{STUB_MARKER}-{addon}"}


def test_values_reach_the_operator(helm, chart):
    docs = template(helm, chart, "watchNamespaces={ns-a,ns-b}", "nodeSelector.pool=system",
                    "tolerations[0].key=dedicated", "tolerations[0].operator=Exists",
                    "resources.limits.memory=300Mi", "image=example/hyperpool:9",
                    "operator.prometheusUrl=http://prom:9090", "workerPriorityClass.create=true")
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    (dep,) = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    (container,) = pod["containers"]
    assert container["image"] == "example/hyperpool:9"
    assert container["resources"]["limits"]["memory"] == "300Mi"
    assert "--namespace=ns-a" in container["command"] and "--namespace=ns-b" in container["command"]
    assert "--all-namespaces" not in container["command"]
    assert "--prometheus-url=http://prom:9090" in container["command"]
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "Role")) == ["ns-a", "ns-b"]
    assert len(by_kind(docs, "RoleBinding")) == 2
    (cluster_role,) = by_kind(docs, "ClusterRole")  # nothing cluster-wide but reading CRDs
    assert cluster_role["rules"] == [{"apiGroups": ["apiextensions.k8s.io"],
                                      "resources": ["customresourcedefinitions"],
                                      "verbs": ["list", "watch"]}]
    assert by_kind(docs, "PriorityClass")[0]["metadata"]["name"] == "hyperflow-worker"


def test_rbac_create_false_uses_an_existing_account(helm, chart):
    out = run(helm, "template", "wpo", str(chart), "--set", "rbac.create=false")
    assert out.returncode != 0 and "rbac.serviceAccountName" in out.stderr
    docs = template(helm, chart, "rbac.create=false", "rbac.serviceAccountName=mine")
    assert not {"ServiceAccount", "ClusterRole", "Role"} & {d["kind"] for d in docs}
    assert by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["serviceAccountName"] \
        == "mine"


def _pool(name: str, namespace: str, **spec) -> dict:
    pool = yaml.safe_load(seed_manifest_text())
    pool["metadata"]["name"] = name
    pool["spec"].update(spec)
    return pool


def _ready(api, namespace: str, name: str) -> bool:
    pool = api.get(naming.API_VERSION, naming.KIND, namespace, name) or {}
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pool.get("status") or {}).get("conditions") or [])


def test_install_namespaced_operator_as_its_service_account(api, crds, kubeconfig, helm, chart,
                                                             tmp_path):
    tag = uuid.uuid4().hex[:6]
    system, ns_a, ns_b, ns_c = (f"hc-{tag}-{s}" for s in ("sys", "a", "b", "c"))
    for ns in (system, ns_a, ns_b, ns_c):
        api.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": ns}})
    release = f"hp-{tag}"
    try:
        out = run(helm, "install", release, str(chart), "--kubeconfig", kubeconfig, "-n", system,
                  "--set", f"watchNamespaces={{{ns_a},{ns_b}}}")
        assert out.returncode == 0, out.stdout + out.stderr
        assert api.get("apps/v1", "Deployment", system, release)
        # scheduled to the hollow node and Running (no real container runs there, so its
        # probes never pass: `helm install --wait` would wait for readiness in vain)
        wait_for(lambda: any(p["status"].get("phase") == "Running"
                             for p in api.list("v1", "Pod", system)), timeout=60,
                 what="operator pod Running")

        sa_config = service_account_kubeconfig(api, kubeconfig, system, release,
                                               tmp_path / "operator.kubeconfig")
        config = str(sa_config)
        for ns in (ns_a, ns_b):
            for verb, resource in [("watch", "workerpools.hyperflow.agh.edu.pl"),
                                   ("patch", "workerpools.hyperflow.agh.edu.pl/status"),
                                   ("create", "deployments.apps"), ("patch", "deployments.apps"),
                                   ("patch", "scaledobjects.keda.sh"), ("list", "resourcequotas"),
                                   ("create", "serviceaccounts")]:
                assert can_i(config, verb, resource, ns), (verb, resource, ns)
        for verb, resource, ns in [
                ("get", "secrets", ns_a), ("list", "secrets", ns_a), ("create", "pods", ns_a),
                ("create", "pods/exec", ns_a), ("patch", "deployments.apps/scale", ns_a),
                ("delete", "deployments.apps", ns_a),
                ("delete", "workerpools.hyperflow.agh.edu.pl", ns_a),
                ("create", "rolebindings.rbac.authorization.k8s.io", ns_a),
                ("update", "resourcequotas", ns_a),
                ("list", "workerpools.hyperflow.agh.edu.pl", ns_c),
                ("create", "deployments.apps", ns_c), ("get", "secrets", system),
                ("list", "workerpools.hyperflow.agh.edu.pl", None),
                ("list", "deployments.apps", None), ("list", "nodes", None),
                ("create", "clusterroles.rbac.authorization.k8s.io", None),
                ("create", "namespaces", None)]:
            assert not can_i(config, verb, resource, ns), (verb, resource, ns)

        create_in(api, ns_a, {"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": "rabbitmq"},
                              "stringData": {"rabbitmq-password": PASSWORD}})
        credentials = {"secretName": "rabbitmq", "username": "user",
                       "passwordKey": "rabbitmq-password"}
        create_in(api, ns_a, _pool("mproject", ns_a, brokerCredentials=credentials))
        create_in(api, ns_b, _pool("mproject", ns_b))
        create_in(api, ns_c, _pool("mproject", ns_c))
        log = tmp_path / "controller.log"
        with run_controller(sa_config, log, "-n", ns_a, "-n", ns_b) as proc:
            wait_for(lambda: (_ready(api, ns_a, "mproject") and _ready(api, ns_b, "mproject"))
                     or proc.poll() is not None, timeout=60, what="both pools Ready")
            assert proc.poll() is None, log.read_text()
        text = log.read_text()
        assert "Forbidden" not in text and "403" not in text, text[-3000:]

        found = {}
        for ns in (ns_a, ns_b):
            pool = api.get(naming.API_VERSION, naming.KIND, ns, "mproject")
            assert pool["status"]["queue"] == f"{ns}.mProject"
            found[ns] = {kind: api.get(version, kind, ns, "mproject") for version, kind in [
                ("apps/v1", "Deployment"), ("keda.sh/v1alpha1", "ScaledObject"),
                ("monitoring.coreos.com/v1", "PrometheusRule")]}
            query = found[ns]["ScaledObject"]["spec"]["triggers"][0]["metadata"]["query"]
            assert f'namespace="{ns}"' in query
            for rule in found[ns]["PrometheusRule"]["spec"]["groups"][0]["rules"]:
                assert rule["labels"]["namespace"] == ns
        env = {e["name"]: e for e in found[ns_a]["Deployment"]["spec"]["template"]["spec"]
               ["containers"][0]["env"]}
        assert env["HYPERPOOL_BROKER_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "rabbitmq"
        # the namespace nobody serves is left alone
        assert not (api.get(naming.API_VERSION, naming.KIND, ns_c, "mproject")
                    .get("status") or {}).get("conditions")
        assert api.get("apps/v1", "Deployment", ns_c, "mproject") is None
        # the password is nowhere but in its Secret
        everything = json.dumps(found) + text + json.dumps(
            api.get(naming.API_VERSION, naming.KIND, ns_a, "mproject"))
        assert PASSWORD not in everything
        out = run(helm, "uninstall", release, "--kubeconfig", kubeconfig, "-n", system)
        assert out.returncode == 0, out.stderr
    finally:
        for ns in (system, ns_a, ns_b, ns_c):
            api.delete("v1", "Namespace", None, ns)
