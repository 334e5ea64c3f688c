"""The kustomize base and the examples: they render, validate and apply on the real API server.

Also the operator's RBAC, checked with `kubectl auth can-i` as its ServiceAccount: it may do
what reconciling needs and nothing else (no secrets, no pods, no deletes, no cluster writes);
and that it is *enough*: the real `hyperpool controller`, authenticated by nothing but that
ServiceAccount's token, reconciles a pool (children, its own ServiceAccount, status).
"""

from __future__ import annotations

import filecmp
import subprocess
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from hyperpool.controller import naming
from hyperpool.controller.plan import ControllerConfig, plan
from tests.conftest import REPO
from tests.kubernetes.conftest import create_in, wait_for
from tests.kubernetes.identity import can_i_args, run_controller, service_account_kubeconfig
from tests.unit.test_controller_support import schema_errors, seed_manifest_text

pytestmark = pytest.mark.kubernetes
KUBECTL = Path.home() / ".cache/hyperpool/k8s-v1.20.2/bin/kubectl"
K8S_VERSION = kubernetes_validate.utils.all_versions()[0]
SA = "system:serviceaccount:hyperpool-system:hyperpool-operator"
# kinds whose CRDs the test cluster does not serve (kube-prometheus-stack's)
NOT_SERVED = {"PodMonitor"}
WP = "workerpools.hyperflow.agh.edu.pl"


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(KUBECTL), "--kubeconfig", kubeconfig, *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def rendered(kubeconfig: str) -> list[dict]:
    out = kubectl(kubeconfig, "kustomize", str(REPO / "k8s"))
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_base_renders_and_validates(kubeconfig):
    docs = rendered(kubeconfig)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Namespace", "CustomResourceDefinition", "ServiceAccount",
                            "ClusterRole", "ClusterRoleBinding", "Deployment", "ConfigMap",
                            "PodMonitor", "PodMonitor"])
    for doc in docs:
        if doc["kind"] not in NOT_SERVED | {"CustomResourceDefinition"}:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    templates = next(d for d in docs if d["kind"] == "ConfigMap")
    assert set(templates["data"]) == {"deployment.yml", "prometheus-rule.yml", "scaledobject.yml"}
    for name in templates["data"]:  # k8s/templates are the package's templates, unchanged
        assert filecmp.cmp(REPO / "k8s" / "templates" / name,
                           REPO / "hyperpool" / "templates" / name, shallow=False)


def test_examples_validate_against_the_crd():
    pools = [d for d in yaml.safe_load_all((REPO / "k8s/examples/workerpools.yaml").read_text())]
    assert [p["spec"]["taskType"] for p in pools] == ["mProject", "mDiffFit", "mBackground"]
    for pool in pools:
        assert schema_errors("WorkerPool", pool) == []
    advanced = yaml.safe_load((REPO / "k8s/examples/workerpool-advanced.yaml").read_text())
    assert schema_errors("WorkerPool", advanced) == []
    pool = {**advanced, "metadata": {**advanced["metadata"], "namespace": "ns", "uid": "u"}}
    result = plan(pool, None, config=ControllerConfig())
    assert not result.invalid, result.findings
    assert [c["kind"] for c in result.children][0] == "ServiceAccount"


def apply_base(kubeconfig: str, docs: list[dict]):
    """``kubectl apply`` as a user of a server older than 1.25 must (k8s/README.md): the CRD's
    ``x-kubernetes-validations`` is unknown to that kubectl's schema, so --validate=false."""
    return kubectl(kubeconfig, "apply", "--validate=false", "-f", "-",
                   stdin=yaml.safe_dump_all(docs))


def test_base_applies_and_rbac_is_least_privilege(kubeconfig, crds):
    """`kubectl auth can-i` on KEDA's and the Prometheus Operator's kinds needs their CRDs."""
    docs = [d for d in rendered(kubeconfig) if d["kind"] not in NOT_SERVED]
    out = apply_base(kubeconfig, docs)
    assert out.returncode == 0, out.stderr
    allowed = [("patch", WP), ("watch", WP), ("patch", f"{WP}/status"),
               ("create", "deployments.apps"),
               ("patch", "deployments.apps"), ("patch", "scaledobjects.keda.sh"),
               ("patch", "prometheusrules.monitoring.coreos.com"), ("list", "resourcequotas"),
               ("create", "events"), ("create", "serviceaccounts"), ("patch", "serviceaccounts"),
               ("update", f"{WP}/finalizers")]
    denied = [("get", "secrets"), ("list", "secrets"), ("create", "pods"), ("create", "pods/exec"),
              ("get", "pods/log"), ("patch", "deployments.apps/scale"), ("update", f"{WP}/status"),
              ("delete", "deployments.apps"), ("delete", WP),
              ("update", "resourcequotas"), ("create", "clusterroles.rbac.authorization.k8s.io"),
              ("delete", "namespaces"), ("patch", "nodes"), ("create", WP),
              ("delete", "serviceaccounts"), ("create", "serviceaccounts/token"),
              ("create", "rolebindings.rbac.authorization.k8s.io"), ("get", "configmaps")]
    for verb, resource in allowed:
        out = kubectl(kubeconfig, *can_i_args(verb, resource), "--as", SA, "-n", "hp-any")
        assert out.stdout.strip() == "yes", (verb, resource, out.stdout, out.stderr)
    for verb, resource in denied:
        out = kubectl(kubeconfig, *can_i_args(verb, resource), "--as", SA, "-n", "hp-any")
        assert out.stdout.strip() == "no", (verb, resource, out.stdout)


def test_base_service_account_alone_reconciles_a_pool(api, crds, kubeconfig, tmp_path):
    """The real `hyperpool controller`, authenticated only by the base's ServiceAccount token."""
    docs = [d for d in rendered(kubeconfig) if d["kind"] not in NOT_SERVED]
    out = apply_base(kubeconfig, docs)
    assert out.returncode == 0, out.stderr
    config = service_account_kubeconfig(api, kubeconfig, "hyperpool-system", "hyperpool-operator",
                                        tmp_path / "operator.kubeconfig")
    namespace = f"hk-{uuid.uuid4().hex[:8]}"
    api.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": namespace}})
    try:
        pool = yaml.safe_load(seed_manifest_text())
        pool["spec"]["serviceAccount"] = {"create": True, "annotations": {
            "iam.gke.io/gcp-service-account": "montage@project.iam.gserviceaccount.com"}}
        create_in(api, namespace, pool)
        log = tmp_path / "controller.log"
        # No repair timer to fall back on within the test: Ready must come from kopf's own
        # event handling, i.e. kopf logged in with --kubeconfig alone (it once did not).
        with run_controller(config, log, "-n", namespace, interval=3600) as proc:
            def ready():
                found = api.get(naming.API_VERSION, naming.KIND, namespace, "mproject") or {}
                return any(c["type"] == "Ready" and c["status"] == "True"
                           for c in (found.get("status") or {}).get("conditions") or []) \
                    or proc.poll() is not None
            wait_for(ready, timeout=60, what="Ready as the operator's ServiceAccount")
            assert proc.poll() is None, log.read_text()
        text = log.read_text()
        assert "Forbidden" not in text, text[-3000:]
        assert "Cannot authenticate" not in text, text[-3000:]
        for version, kind in [("apps/v1", "Deployment"), ("keda.sh/v1alpha1", "ScaledObject"),
                              ("monitoring.coreos.com/v1", "PrometheusRule"),
                              ("v1", "ServiceAccount")]:
            assert api.get(version, kind, namespace, "mproject"), kind
        account = api.get("v1", "ServiceAccount", namespace, "mproject")
        assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        dep = api.get("apps/v1", "Deployment", namespace, "mproject")
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "mproject"
    finally:
        api.delete("v1", "Namespace", None, namespace)


def test_example_pools_run_under_the_scoped_quota(api, namespace, kubeconfig):
    for name in ("priorityclass-and-quota.yaml", "workerpools.yaml"):
        out = kubectl(kubeconfig, "apply", "-n", namespace, "-f",
                      str(REPO / "k8s" / "examples" / name))
        assert out.returncode == 0, out.stderr
    def deployments_ready():
        deps = api.list("apps/v1", "Deployment", namespace)
        return len(deps) == 3 and deps
    deps = wait_for(deployments_ready, what="three pool Deployments")
    for dep in deps:
        assert dep["spec"]["template"]["spec"]["priorityClassName"] == "hyperflow-worker"
