"""Kubernetes (real node): pods started by this machine's kubelet, and the Montage example
through worker pods and Jobs against the same sky through local pools.

The cluster is k8s/testcluster's: a v1.20.2 control plane, a hollow node, and the real node
``real-node-0`` (a kubelet on this machine's dockerd, tainted; tests/kubernetes/real_node.py
explains the placement: namespace annotations, manifests unchanged). Only one real node may
run per dockerd, so ``HYPERPOOL_BENCH_KUBECONFIG`` names an already running cluster to
measure on (nothing is started or stopped then); without it ``up.sh`` starts one in a temp
dir and ``down.sh`` stops it afterwards.

* **pod start**: a Deployment (hyperpool/executor-generic:0.1.0, ``sleep 3600``, the
  restricted security context the controller gives its pods) created through the API, timed
  until its pod is Ready, with 1 and with 10 replicas, polling the pods every 0.1 s; then
  deleted, timed until its pods are gone (grace period 1 s: ``sleep`` as PID 1 ignores
  SIGTERM; no service account token, as the controller's pods: the token volume's teardown
  doubled the time until a pod was gone);
* **Montage**: examples/montage (3x2 sky, 120 px, seed 7; 29 tasks), rounds interleaved:
  (a) ``hyperpool run --no-local-pools --job-model kubernetes``: the pooled types go to three
  WorkerPools (image hyperpool/executor-montage:0.1.0) whose pods are Ready before the run
  (``minReplicaCount: 1``: KEDA cannot run here, so the pools are pre-warmed), the rest is one
  batch/v1 Job per task on the real node; (b) ``hyperpool run`` with local pools from zero and
  local job processes (what examples/demo.py runs), on this machine's RabbitMQ and Redis.
  The job model's cost per task: from the launcher's side, a Job's life (first listed -> gone:
  the engine deletes it when the result arrives) against a local ``hyperpool execute``
  process's (created -> gone), beside the command's own time from the run summary
  (``per_task_type.mean_seconds``, which the executor measures around the command).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.common import (
    REPO,
    bench_env,
    bench_settings,
    delete_queues,
    new_namespace,
    reference_file,
    wait_quiet,
)
from bench.controller import OUR_CRD, REFERENCE_CRDS, TESTCLUSTER, _start_cluster, _strip_cel

GENERIC_IMAGE = "hyperpool/executor-generic:0.1.0"
MONTAGE_IMAGE = "hyperpool/executor-montage:0.1.0"
POOLED = ("mProject", "mDiffFit", "mBackground")
SKY = (3, 2, 120)  # cols, rows, tile px: tests/kubernetes/test_montage_kubernetes.py's sky
NAMESPACE_PREFIX = "bench-k8s"  # the controller serves bench-k8s-*, never the tests' hp-*
POLL = 0.1
QUIET = 5.0  # seconds each run may wait for the machine to go idle (bench.common.wait_quiet)
MONTAGE = REPO / "examples" / "montage"


def _wait(predicate, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = predicate()
            if last:
                return last
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@contextlib.contextmanager
def cluster() -> Iterator[tuple[str, str]]:
    """(kubeconfig, how it was found): ``HYPERPOOL_BENCH_KUBECONFIG``'s, else a fresh one."""
    existing = os.environ.get("HYPERPOOL_BENCH_KUBECONFIG")
    if existing:
        yield existing, "an already running k8s/testcluster (HYPERPOOL_BENCH_KUBECONFIG)"
        return
    state = Path(tempfile.mkdtemp(prefix="benchk8s-real-"))
    scripts = TESTCLUSTER
    try:
        kubeconfig, scripts, note = _start_cluster(state)
        yield kubeconfig, "k8s/testcluster/up.sh, started for this section" + (
            f" ({note})" if note else "")
    finally:
        subprocess.run(["bash", str(scripts / "down.sh"), str(state)], check=False,
                       capture_output=True, timeout=300)
        shutil.rmtree(state, ignore_errors=True)


def ensure_crds(api: Any) -> None:
    """The WorkerPool CRD and KEDA's and Prometheus's (the controller's children), if missing."""
    for path in [OUR_CRD, *(reference_file("crds", n) for n in REFERENCE_CRDS)]:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not doc:
                continue
            name = doc["metadata"]["name"]
            if api.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, name):
                continue
            api.apply(_strip_cel(doc), field_manager="hyperpool-bench")
            _wait(lambda name=name: any(
                c.get("type") == "Established" and c.get("status") == "True"
                for c in (api.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None,
                                  name) or {}).get("status", {}).get("conditions") or []),
                60, f"CRD {name}")


def real_node(api: Any) -> dict[str, str]:
    from tests.kubernetes.real_node import REAL_NODE_LABEL

    nodes = api.request("GET", "/api/v1/nodes",
                        query=[("labelSelector", f"{REAL_NODE_LABEL}=true")])
    for node in nodes.get("items") or []:
        for address in node["status"].get("addresses") or []:
            if address["type"] == "InternalIP":
                info = node["status"].get("nodeInfo") or {}
                return {"name": node["metadata"]["name"], "ip": address["address"],
                        "kubelet": info.get("kubeletVersion", "?"),
                        "runtime": info.get("containerRuntimeVersion", "?")}
    raise RuntimeError("the cluster has no real node (label hyperpool.test/real-node=true): "
                       "k8s/testcluster/up.sh starts one unless HYPERPOOL_K8S_REAL_NODE=0")


@contextlib.contextmanager
def node_services(node_ip: str) -> Iterator[Any]:
    """RabbitMQ and Redis containers published on the node's address, as the tests run them
    (tests/kubernetes/real_node.py says why)."""
    import docker

    from tests.kubernetes.real_node import run_node_services

    with run_node_services(docker.from_env(timeout=120), node_ip, "hp-bench") as services:
        yield services


@contextlib.contextmanager
def controller(kubeconfig: str, log: Path) -> Iterator[None]:
    """``hyperpool controller`` for the bench-k8s-* namespaces, as users run it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperpool", "controller", "-n", f"{NAMESPACE_PREFIX}-*",
         "--kubeconfig", kubeconfig, "--interval", "10", "--liveness", ""],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        # kopf's login reads KUBECONFIG through the kubernetes client (bench/controller.py).
        env=dict(os.environ, PYTHONPATH=str(REPO), KUBECONFIG=kubeconfig))
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()


@contextlib.contextmanager
def real_namespace(api: Any) -> Iterator[str]:
    from tests.kubernetes.real_node import create_real_namespace

    name = create_real_namespace(api, NAMESPACE_PREFIX)
    try:
        yield name
    finally:
        api.delete("v1", "Namespace", None, name)


# -- 1. pod start ------------------------------------------------------------------------------

def sleeper(name: str, replicas: int) -> dict[str, Any]:
    from hyperpool.controller.workload import (
        restricted_container_security,
        restricted_pod_security,
    )

    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "terminationGracePeriodSeconds": 1,
                         "automountServiceAccountToken": False,  # as the controller's pods
                         "securityContext": restricted_pod_security(),
                         "containers": [{"name": "sleep", "image": GENERIC_IMAGE,
                                         "command": ["sleep", "3600"],
                                         "securityContext": restricted_container_security()}]}}}}


def _ready_pods(api: Any, namespace: str, app: str) -> tuple[int, int]:
    pods = api.list("v1", "Pod", namespace, label_selector=f"app={app}")
    ready = sum(1 for p in pods if any(c.get("type") == "Ready" and c.get("status") == "True"
                                       for c in (p.get("status") or {}).get("conditions") or []))
    return len(pods), ready


def pod_start_once(api: Any, namespace: str, replicas: int, index: int) -> dict[str, float]:
    name = f"sleep{replicas}-{index}"
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    t0 = time.monotonic()
    api.request("POST", path, body=sleeper(name, replicas))
    first = None
    deadline = t0 + 180
    while True:
        _, ready = _ready_pods(api, namespace, name)
        now = time.monotonic()
        if ready and first is None:
            first = now - t0
        if ready >= replicas:
            break
        if now > deadline:
            raise RuntimeError(f"{replicas} pods of {GENERIC_IMAGE}: {ready} Ready after 180 s")
        time.sleep(POLL)
    all_ready = now - t0
    t1 = time.monotonic()
    api.delete("apps/v1", "Deployment", namespace, name)
    marked = None
    while True:
        pods = api.list("v1", "Pod", namespace, label_selector=f"app={name}")
        now = time.monotonic()
        if not pods:
            break
        if marked is None and all(p["metadata"].get("deletionTimestamp") for p in pods):
            marked = now - t1
        if now - t1 > 120:
            raise RuntimeError(f"pods of {name} not gone 120 s after the delete")
        time.sleep(POLL)
    gone = now - t1
    return {"first": first or all_ready, "all": all_ready,
            "marked": gone if marked is None else marked, "gone": gone}


def pod_start(api: Any, rounds: int) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {"1": {}, "10": {}}
    with real_namespace(api) as namespace:
        _wait(lambda: api.get("v1", "ServiceAccount", namespace, "default"), 30,
              "the namespace's default ServiceAccount")
        # A first pod pays for the namespace (ServiceAccount token), not for starting: warm up.
        pod_start_once(api, namespace, 1, 0)
        for i in range(rounds):  # interleaved
            for replicas in (1, 10):
                wait_quiet(timeout=QUIET)
                got = pod_start_once(api, namespace, replicas, i + 1)
                for key, value in got.items():
                    out[str(replicas)].setdefault(key, []).append(value)
    return out


# -- 2. Montage --------------------------------------------------------------------------------

def pool_manifest(task_type: str, services: Any, shared: Path) -> dict[str, Any]:
    return {"apiVersion": "hyperflow.agh.edu.pl/v1", "kind": "WorkerPool",
            "metadata": {"name": task_type.lower()},
            "spec": {"taskType": task_type, "image": MONTAGE_IMAGE,
                     "rabbitHostname": services.rabbit_hostname, "redisUrl": services.redis_url,
                     "minReplicaCount": 1, "maxReplicaCount": 2,
                     "prometheusUrl": "http://prometheus.monitoring:9090",  # none runs here
                     "initialResources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                                          "limits": {"cpu": "1", "memory": "512Mi"}},
                     "volumes": [{"name": "work", "hostPath": {"path": str(shared),
                                                               "type": "Directory"}}],
                     "volumeMounts": [{"name": "work", "mountPath": str(shared)}]}}


def sky(work: Path) -> int:
    """A fresh sky and workflow in ``work`` (writable by the pods' uid 1000); its task count."""
    sys.path.insert(0, str(MONTAGE))
    try:
        from make_sky import make_sky
        from make_workflow import make_workflow
    finally:
        sys.path.remove(str(MONTAGE))
    work.mkdir(parents=True)
    make_sky(work, *SKY, seed=7)
    doc = make_workflow(work)
    for path in [work, *work.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    return len(doc["processes"])


class Lifetimes:
    """How long each job-model launch lived, seen from outside by polling: ``list_now``
    returns {name: creation time or None} of what exists now."""

    def __init__(self, list_now):
        self.born: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        self._list = list_now
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(POLL):
            with contextlib.suppress(Exception):
                now_there = self._list()
                now = time.time()
                for name, created in now_there.items():
                    self.born.setdefault(name, created or now)
                for name in self.born:
                    if name not in now_there:
                        self.gone.setdefault(name, now)

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return [self.gone[n] - self.born[n] for n in self.born if n in self.gone]


def _job_processes(root: int):
    def listing() -> dict[str, float | None]:
        found = {}
        for child in psutil.Process(root).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "execute" in child.cmdline()[:4]:
                    found[str(child.pid)] = child.create_time()
        return found
    return listing


def _run(argv: list[str], env: dict[str, str], launches, summary: Path) -> dict[str, Any]:
    """Run the engine; ``launches(pid)``: the listing of its job-model launches."""
    load = os.getloadavg()[0]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lives = Lifetimes(launches(proc.pid))
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        lifetimes = lives.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[2:5])} failed ({proc.returncode}):\n"
                           f"{out[-1200:]}{err[-1500:]}")
    data = json.loads(summary.read_text())
    if data["succeeded"] != data["tasks_total"]:
        raise RuntimeError(f"{data['succeeded']} of {data['tasks_total']} tasks succeeded")
    return {"makespan": data["makespan_seconds"], "load": load, "lifetimes": lifetimes,
            "per_task_type": data["per_task_type"]}


def k8s_run(api: Any, work: Path, namespace: str, kubeconfig: str, services: Any
            ) -> dict[str, Any]:
    def jobs() -> dict[str, float | None]:
        return {j["metadata"]["name"]: None for j in api.list("batch/v1", "Job", namespace)}

    summary = work / "summary.json"
    return _run([sys.executable, "-m", "hyperpool", "run", str(work), "--no-local-pools",
                 "--job-model", "kubernetes", "--kubeconfig", kubeconfig, "--job-namespace",
                 namespace, "--job-image", MONTAGE_IMAGE, "--job-host-path", "--job-redis-url",
                 services.redis_url, "--job-resources", "cpu=250m,memory=256Mi",
                 "--json-summary", str(summary)],
                bench_env(namespace, work, HYPERPOOL_BROKER_URL=services.broker_url,
                          HYPERPOOL_REDIS_URL=services.redis_url), lambda _pid: jobs, summary)


def local_run(work: Path) -> dict[str, Any]:
    namespace = new_namespace("k8slocal")
    summary = work / "summary.json"
    try:
        return _run([sys.executable, "-m", "hyperpool", "run", str(work), "--cooldown", "5",
                     "--json-summary", str(summary)], bench_env(namespace, work),
                    _job_processes, summary)
    finally:
        delete_queues(bench_settings(namespace, work), namespace + ".")


def montage(api: Any, kubeconfig: str, services: Any, rounds: int, base: Path
            ) -> dict[str, Any]:
    out: dict[str, Any] = {"kubernetes": [], "local": []}
    with real_namespace(api) as namespace:
        from hyperpool.controller.api import resource_path

        api.request("POST", resource_path("v1", "ResourceQuota", namespace), body={
            "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "pools"},
            "spec": {"hard": {"requests.cpu": "4", "requests.memory": "8Gi",
                              "limits.cpu": "8", "limits.memory": "8Gi"}}})
        t0 = time.monotonic()
        for task_type in POOLED:
            api.request("POST", resource_path("hyperflow.agh.edu.pl/v1", "WorkerPool",
                                              namespace),
                        body=pool_manifest(task_type, services, base))
        for task_type in POOLED:
            _wait(lambda t=task_type: (api.get("apps/v1", "Deployment", namespace, t.lower())
                                       or {}).get("status", {}).get("readyReplicas") == 1,
                  240, f"pool {task_type}'s pod Ready", interval=POLL)
        out["pools_ready_s"] = time.monotonic() - t0
        for i in range(rounds):  # interleaved, which goes first alternating
            for kind in ("local", "kubernetes")[::1 if i % 2 == 0 else -1]:
                work = base / f"{kind}-{i}"
                out["tasks"] = sky(work)
                wait_quiet(timeout=QUIET)
                out[kind].append(local_run(work) if kind == "local" else
                                 k8s_run(api, work, namespace, kubeconfig, services))
        out["jobs_left"] = len(api.list("batch/v1", "Job", namespace))
    return out


def measure(rounds: int = 3) -> dict[str, Any]:
    from hyperpool.controller.api import KubeApi

    if shutil.which("mProjectPP") is None:
        raise RuntimeError("Montage is not installed (local run): run `make services`")
    res: dict[str, Any] = {"load_start": os.getloadavg(), "rounds": rounds,
                           "sky": list(SKY)}
    t0 = time.monotonic()
    with cluster() as (kubeconfig, how):
        res["cluster"] = how
        api = KubeApi.from_config(kubeconfig)
        res["server_version"] = api.request("GET", "/version").get("gitVersion", "?")
        res["node"] = real_node(api)
        ensure_crds(api)
        res["pod_start"] = pod_start(api, rounds)
        base = Path(tempfile.mkdtemp(prefix="hyperpool-bench-k8s-"))
        base.chmod(0o777)
        try:
            with node_services(res["node"]["ip"]) as services, \
                    controller(kubeconfig, base / "controller.log"):
                res["montage"] = montage(api, kubeconfig, services, rounds, base)
        finally:
            subprocess.run(["rm", "-rf", str(base)], check=False)
    res["load_end"] = os.getloadavg()
    res["duration_s"] = time.monotonic() - t0
    return res


# -- the document ------------------------------------------------------------------------------


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 3), indent=1))
