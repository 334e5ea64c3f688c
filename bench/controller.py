"""Controller at scale (goal 6): 200 WorkerPools on a real kube-apiserver.

The cluster is k8s/testcluster (``build.sh`` builds v1.20.2 from source once and caches it;
``up.sh`` starts etcd, the API server, controller-manager, scheduler and a hollow node in
about 15 s). The controller runs as users run it, ``hyperpool controller -A`` in its own
process, so its CPU and memory can be measured. The benchmark creates N WorkerPools at once
and records, by polling the API every 0.5 s, when each pool's children exist and when its
``Ready`` condition reports the current generation; then it checks that a steady state
(two repair intervals, after three to settle) writes nothing: every object is written by
nobody but kube-controller-manager (counted per kind, from the objects'
``managedFields``; that controller's own status updates of new Deployments are counted
apart: they are the cluster's writes, not hyperpool's).

If the cluster cannot be built or started, the section reports "not measured" with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.common import REPO, percentile, reference_file

TESTCLUSTER = REPO / "k8s" / "testcluster"
OUR_CRD = REPO / "k8s" / "crds" / "workerpools.hyperflow.agh.edu.pl.yaml"
REFERENCE_CRDS = ["keda.sh_scaledobjects.yaml", "monitoring.coreos.com_prometheusrules.yaml"]
POOL = ("hyperflow.agh.edu.pl/v1", "WorkerPool")
CHILDREN = [("apps/v1", "Deployment"), ("monitoring.coreos.com/v1", "PrometheusRule"),
            ("keda.sh/v1alpha1", "ScaledObject")]
INTERVAL = 10.0  # the controller's repair interval in this benchmark


def _strip_cel(node: Any) -> Any:
    """A 1.20 API server does not know ``x-kubernetes-validations``."""
    if isinstance(node, dict):
        return {k: _strip_cel(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [_strip_cel(v) for v in node]
    return node


def _wait(predicate, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = predicate()
            if value:
                return value
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def _ready(pool: dict[str, Any]) -> bool:
    for cond in (pool.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True" and \
                cond.get("observedGeneration") == pool["metadata"]["generation"]:
            return True
    return False


def _pool(name: str, index: int) -> dict[str, Any]:
    return {"apiVersion": POOL[0], "kind": POOL[1], "metadata": {"name": name},
            "spec": {"taskType": f"task{index:03d}", "image": "hyperflowwms/montage-worker",
                     "rabbitHostname": "rabbitmq.default", "redisUrl": "redis://redis:6379",
                     "prometheusUrl": "http://prometheus-operated.monitoring:9090",
                     "minReplicaCount": 0, "maxReplicaCount": 10,
                     "initialResources": {"requests": {"cpu": "500m", "memory": "256Mi"},
                                          "limits": {"cpu": "1", "memory": "512Mi"}}}}


CLUSTER_MANAGER = "kube-controller-manager"  # writes Deployment status, not hyperpool


def _versions(api: Any, namespace: str) -> dict[tuple[str, str], tuple[str, tuple]]:
    """Per object: its resourceVersion, and what changes only when someone other than
    kube-controller-manager writes it (the other field managers' entries and times). That
    controller keeps writing a new Deployment's status for a while (observedGeneration,
    conditions); those writes are the cluster's, not hyperpool's."""
    found = {}
    for version, kind in [POOL, *CHILDREN]:
        for obj in api.list(version, kind, namespace):
            meta = obj["metadata"]
            writers = tuple(sorted(
                (entry.get("manager", ""), entry.get("operation", ""), entry.get("time", ""))
                for entry in meta.get("managedFields") or []
                if entry.get("manager") != CLUSTER_MANAGER))
            found[(kind, meta["name"])] = (meta["resourceVersion"], writers)
    return found


def _run_script(scripts: Path, script: str, *args: str, timeout: float,
                real_node: bool = True) -> None:
    # HYPERPOOL_K8S_REAL_NODE=0: one real node per dockerd, and the controller's scale runs
    # need none (their pods stay on the hollow node).
    env = {**os.environ, "HYPERPOOL_K8S_REAL_NODE": "1" if real_node else "0"}
    proc = subprocess.run(["bash", str(scripts / script), *args], capture_output=True,
                          text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        text = (proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"]
        # The scripts' own lines ("up.sh: ...") say why; the rest is a log tail.
        own = [line for line in text if line.startswith(f"{script}:")] or text[-1:]
        raise RuntimeError(f"k8s/testcluster/{script} failed: {' / '.join(own)[:400]}")


def _committed_scripts() -> Path | None:
    """up.sh/down.sh as last committed (git HEAD), or None outside a git checkout."""
    target = Path(tempfile.mkdtemp(prefix="benchk8s-scripts-"))
    for name in ("up.sh", "down.sh"):
        proc = subprocess.run(["git", "show", f"HEAD:k8s/testcluster/{name}"], cwd=REPO,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            return None
        (target / name).write_text(proc.stdout)
    return target


def _start_cluster(state: Path, *, real_node: bool = True) -> tuple[str, Path, str]:
    """(kubeconfig, scripts dir, note). Falls back to the committed up.sh if the working
    tree's fails (it may be mid-edit); the note says so."""
    _run_script(TESTCLUSTER, "build.sh", timeout=3600)
    try:
        _run_script(TESTCLUSTER, "up.sh", str(state), timeout=600, real_node=real_node)
        return str(state / "kubeconfig"), TESTCLUSTER, ""
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _run_script(TESTCLUSTER, "down.sh", str(state), timeout=300)
        committed = _committed_scripts()
        if committed is None:
            raise
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir()
        _run_script(committed, "up.sh", str(state), timeout=600, real_node=real_node)
        return (str(state / "kubeconfig"), committed,
                f"cluster started with the committed up.sh, because the working tree's "
                f"failed ({exc})")


def measure(pools: int = 200) -> dict[str, Any]:
    if not (TESTCLUSTER / "up.sh").exists():
        return {"skipped": "k8s/testcluster/up.sh does not exist"}
    from hyperpool.controller.api import KubeApi

    state = Path(tempfile.mkdtemp(prefix="benchk8s-"))
    scripts = TESTCLUSTER
    try:
        kubeconfig, scripts, note = _start_cluster(state, real_node=False)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        subprocess.run(["bash", str(TESTCLUSTER / "down.sh"), str(state)], check=False)
        return {"skipped": str(exc)}
    controller = None
    try:
        api = KubeApi.from_config(kubeconfig)
        version = api.request("GET", "/version").get("gitVersion", "?")
        for path in [OUR_CRD, *(reference_file("crds", n) for n in REFERENCE_CRDS)]:
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if doc:
                    api.apply(_strip_cel(doc), field_manager="hyperpool-bench")
        _wait(lambda: api.list(*POOL, "default") is not None, 60, "the WorkerPool CRD")
        for version_kind in CHILDREN[1:]:
            _wait(lambda vk=version_kind: api.list(*vk, "default") is not None, 60, "CRDs")
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        api.request("POST", "/api/v1/namespaces", body={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        log = (state / "controller.log").open("wb")
        controller = subprocess.Popen(
            [sys.executable, "-m", "hyperpool", "controller", "-A", "--kubeconfig", kubeconfig,
             "--interval", str(INTERVAL), "--liveness", ""],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # KUBECONFIG too: kopf's login reads it through the kubernetes client, which
            # captured the variable at import time, before --kubeconfig could set it.
            env=dict(os.environ, PYTHONPATH=str(REPO), KUBECONFIG=kubeconfig))
        time.sleep(3)  # let it log in and start watching
        names = [f"pool-{i:03d}" for i in range(pools)]
        created: dict[str, float] = {}
        t0 = time.monotonic()
        for i, name in enumerate(names):
            body = _pool(name, i)
            api.request("POST", f"/apis/{POOL[0]}/namespaces/{namespace}/workerpools", body=body)
            created[name] = time.monotonic()
        create_s = time.monotonic() - t0
        ready_at: dict[str, float] = {}
        children_s = None
        deadline = time.monotonic() + 600
        progress = time.monotonic()
        while len(ready_at) < pools and time.monotonic() < deadline \
                and time.monotonic() - progress < 90:  # stuck: report what was reached
            now = time.monotonic()
            for pool in api.list(*POOL, namespace):
                name = pool["metadata"]["name"]
                if name not in ready_at and _ready(pool):
                    ready_at[name] = progress = now
            if children_s is None and all(len(api.list(*vk, namespace)) >= pools
                                          for vk in CHILDREN):
                children_s = now - t0
            time.sleep(0.5)
        all_ready_s = max(ready_at.values()) - t0 if len(ready_at) == pools else float("nan")
        per_pool = [ready_at[n] - created[n] for n in ready_at]
        # Let the first repair rounds and kube-controller-manager's Deployment status
        # updates for 200 new Deployments settle before looking for steady-state writes.
        time.sleep(3 * INTERVAL)
        before = _versions(api, namespace)
        time.sleep(2 * INTERVAL + 2)
        after = _versions(api, namespace)
        changed = [k for k, v in after.items() if k not in before or before[k][1] != v[1]]
        cluster_only = sum(1 for k, v in after.items() if k in before and k not in changed
                           and before[k][0] != v[0])
        by_kind: dict[str, int] = {}
        for kind, _name in changed:
            by_kind[kind] = by_kind.get(kind, 0) + 1
        proc = psutil.Process(controller.pid)
        cpu = proc.cpu_times()
        return {"pools": pools, "ready": len(ready_at), "server_version": version,
                "create_s": create_s, "children_s": children_s if children_s else float("nan"),
                "all_ready_s": all_ready_s, "ready_p50_s": percentile(per_pool, 50),
                "ready_p99_s": percentile(per_pool, 99),
                "controller_cpu_s": cpu.user + cpu.system,
                "controller_rss_mib": proc.memory_info().rss / 2**20,
                "steady_writes": len(changed), "steady_objects": len(after),
                "steady_writes_by_kind": by_kind, "steady_cluster_writes": cluster_only,
                "log": str(state / "controller.log"),
                "steady_window_s": 2 * INTERVAL + 2, "note": note}
    finally:
        if controller is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(controller.pid, 15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                controller.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(controller.pid, 9)
        subprocess.run(["bash", str(scripts / "down.sh"), str(state)], check=False,
                       timeout=300)


if __name__ == "__main__":
    print(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
