"""A real Kubernetes API server (v1.20.2, k8s/testcluster) and the controller running against it.

The cluster comes from ``k8s/testcluster``: ``build.sh`` (cached build of kube-apiserver,
controller-manager, scheduler and a kubemark hollow node), ``up.sh STATE_DIR`` (writes
``STATE_DIR/kubeconfig``), ``down.sh STATE_DIR``; ``make test`` builds before pytest starts.
Set ``HYPERPOOL_TEST_KUBECONFIG`` to use an already running cluster instead (nothing is
started or stopped then).

If neither is available the tests *fail* with that explanation rather than being skipped:
``pytest -m "not kubernetes"`` is the explicit way to leave them out.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner

from hyperpool.controller.api import ApiError, KubeApi, resource_path
from hyperpool.controller.handlers import build_registry
from hyperpool.controller.plan import ControllerConfig

# The real node's fixtures (node_ip, node_services, real_namespace, shared_work).
from tests.kubernetes.real_node import (  # noqa: E402, F401
    node_ip,
    node_services,
    real_namespace,
    shared_work,
)
from tests.reference import reference_file

REPO = Path(__file__).resolve().parents[2]
TESTCLUSTER = REPO / "k8s" / "testcluster"
OUR_CRD = REPO / "k8s" / "crds" / "workerpools.hyperflow.agh.edu.pl.yaml"
REFERENCE_CRDS = ["keda.sh_scaledobjects.yaml", "monitoring.coreos.com_prometheusrules.yaml"]
INTERVAL = 2.0  # the controller's repair timer in these tests
TEST_MANAGER = "hyperpool-tests"
NAMESPACE_PATTERN = "hp-*"


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.25,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def strip_cel(node: Any) -> Any:
    """A 1.20 API server does not know ``x-kubernetes-validations``: drop them."""
    if isinstance(node, dict):
        return {k: strip_cel(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [strip_cel(v) for v in node]
    return node


def _script(name: str) -> Path:
    path = TESTCLUSTER / name
    if not path.exists():
        pytest.fail(f"{path} does not exist: the real-API-server tests need k8s/testcluster "
                    "(or HYPERPOOL_TEST_KUBECONFIG=<kubeconfig of a running cluster>); "
                    "deselect them with -m 'not kubernetes'", pytrace=False)
    return path


@pytest.fixture(scope="session")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("HYPERPOOL_TEST_KUBECONFIG")
    if existing:
        yield existing
        return
    build, up, down = _script("build.sh"), _script("up.sh"), _script("down.sh")
    # The build takes minutes when cold: `make test` runs it before pytest starts, never under
    # a test's timeout. Here it is only checked.
    if subprocess.run(["bash", str(build), "--check"]).returncode != 0:
        pytest.fail("the test cluster's binaries are not built: run `make cluster` "
                    "(k8s/testcluster/build.sh) first, or use `make test`, which does",
                    pytrace=False)
    state = tmp_path_factory.mktemp("testcluster")
    try:
        subprocess.run(["bash", str(up), str(state)], check=True, timeout=600)
        yield str(state / "kubeconfig")
    finally:
        subprocess.run(["bash", str(down), str(state)], check=False, timeout=300)


@pytest.fixture(scope="session")
def api(kubeconfig: str) -> KubeApi:
    client = KubeApi.from_config(kubeconfig)
    wait_for(lambda: _ready(client), timeout=120, what="the API server")
    return client


def _ready(api: KubeApi) -> bool:
    try:
        api.request("GET", "/api/v1/namespaces/default")
        return True
    except ApiError:
        return False


@pytest.fixture(scope="session")
def crds(api: KubeApi) -> None:
    # KEDA's and the Prometheus Operator's CRDs come from the reference data (tests/reference.py):
    # without them the controller's ScaledObjects and PrometheusRules have nowhere to go.
    for path in [OUR_CRD, *(reference_file("crds", name) for name in REFERENCE_CRDS)]:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not doc:
                continue
            api.apply(strip_cel(doc), field_manager=TEST_MANAGER)
            name = doc["metadata"]["name"]
            wait_for(lambda name=name: _established(api, name), what=f"CRD {name}")


def _established(api: KubeApi, name: str) -> bool:
    crd = api.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, name) or {}
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in (crd.get("status") or {}).get("conditions") or [])


@pytest.fixture(scope="session")
def operator(api: KubeApi, crds: None) -> Iterator[KopfRunner]:
    """The controller, in-process (KopfRunner), serving all namespaces, repairing every 2 s.
    kopf logs in with ``api``'s own credentials (no KUBECONFIG needed)."""
    # Serves the tests' hp-* namespaces; tests that need their own operator (restarts) use
    # other prefixes so two operators never handle one pool.
    registry = build_registry(api, ControllerConfig(), interval=INTERVAL,
                              namespaces=[NAMESPACE_PATTERN])
    runner = KopfRunner(["run", "--standalone", "--namespace", NAMESPACE_PATTERN, "--verbose"],
                        registry=registry, timeout=60)
    with runner:
        yield runner
    assert runner.exception is None, runner.output[-4000:]


@pytest.fixture
def namespace(api: KubeApi, operator: KopfRunner) -> Iterator[str]:
    name = f"hp-{uuid.uuid4().hex[:8]}"
    api.request("POST", "/api/v1/namespaces",
                body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    api.delete("v1", "Namespace", None, name)


def create_in(api: KubeApi, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """POST ``manifest`` unchanged into ``namespace`` (what ``kubectl create -n`` does)."""
    path = resource_path(manifest["apiVersion"], manifest["kind"], namespace)
    return api.request("POST", path, body=manifest)
