"""The main job through Kubernetes: real Montage in worker pods and in Jobs on the real node.

The engine runs here, as HyperFlow's engine may run beside a cluster; it publishes the pooled
task types (mProject, mDiffFit, mBackground) to RabbitMQ, where the three WorkerPools' pods
(the controller's Deployments, image hyperpool/executor-montage) consume them, and runs the
rest as one batch/v1 Job per task (``--job-model kubernetes``). Pods and engine reach the
broker and Redis at the node's address (tests/kubernetes/real_node.py says why) and share the
work dir through a hostPath volume at the engine's path. KEDA cannot run here, so each pool
keeps one replica (``minReplicaCount: 1``). The mosaic is then checked by
examples/montage/check_mosaic.py, and a failing Job is reported with its exit code and log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, hyperpool_env, worker_pool_yaml
from tests.integration.test_engine import chain, workdir_for
from tests.kubernetes.conftest import create_in, wait_for
from tests.kubernetes.real_node import diagnose

pytestmark = pytest.mark.kubernetes
MONTAGE_IMAGE = "hyperpool/executor-montage:0.1.0"
POOLED = ("mProject", "mDiffFit", "mBackground")
sys.path.insert(0, str(REPO / "examples" / "montage"))
from make_sky import make_sky  # noqa: E402
from make_workflow import make_workflow  # noqa: E402


def pool_manifest(task_type: str, services, work: Path) -> dict:
    spec = {
        "image": MONTAGE_IMAGE, "rabbitHostname": services.rabbit_hostname,
        "redisUrl": services.redis_url, "minReplicaCount": 1, "maxReplicaCount": 2,
        "prometheusUrl": "http://prometheus.monitoring:9090",  # KEDA's; none runs here
        "initialResources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                             "limits": {"cpu": "1", "memory": "512Mi"}},
        "volumes": [{"name": "work", "hostPath": {"path": str(work), "type": "Directory"}}],
        "volumeMounts": [{"name": "work", "mountPath": str(work)}],
    }
    pool = yaml.safe_load(worker_pool_yaml(task_type.lower(), task_type))
    pool["spec"].update(spec)
    return pool


class JobWatch:
    """Names of the Jobs seen in ``namespace`` while the run goes (they are deleted after)."""

    def __init__(self, api, namespace: str):
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(api, namespace), daemon=True)
        self._thread.start()

    def _poll(self, api, namespace: str) -> None:
        while not self._stop.wait(0.3):
            self.seen.update(j["metadata"]["name"] for j in api.list("batch/v1", "Job", namespace))

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join()
        return self.seen


def quota(api, namespace: str) -> None:
    """A ResourceQuota on requests and limits: every pod must then say its resources."""
    create_in(api, namespace, {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "pools"},
        "spec": {"hard": {"requests.cpu": "4", "requests.memory": "8Gi",
                          "limits.cpu": "8", "limits.memory": "8Gi"}}})


def engine_command(work: Path, namespace: str, kubeconfig: str, services, *extra: str):
    return subprocess.run(
        [sys.executable, "-m", "hyperpool", "run", str(work), "--no-local-pools",
         "--job-model", "kubernetes", "--kubeconfig", kubeconfig, "--job-namespace", namespace,
         "--job-image", MONTAGE_IMAGE, "--job-host-path", "--job-redis-url", services.redis_url,
         "--json-summary", str(work / "summary.json"), *extra],
        env=hyperpool_env(namespace, work, HYPERPOOL_BROKER_URL=services.broker_url,
                          HYPERPOOL_REDIS_URL=services.redis_url),
        capture_output=True, text=True, timeout=600)


def test_montage_mosaic_through_kubernetes_pools_and_jobs(api, real_namespace, kubeconfig,
                                                          node_services, shared_work):
    work = shared_work
    make_sky(work, 3, 2, 120, seed=7)
    doc = make_workflow(work)
    for path in [work, *work.rglob("*")]:  # the pods run as uid 1000
        path.chmod(0o777 if path.is_dir() else 0o666)
    quota(api, real_namespace)
    for task_type in POOLED:
        create_in(api, real_namespace, pool_manifest(task_type, node_services, work))
    try:
        for task_type in POOLED:
            wait_for(lambda t=task_type: (api.get("apps/v1", "Deployment", real_namespace,
                                                  t.lower()) or {}).get("status", {})
                     .get("readyReplicas") == 1, timeout=180, what=f"pool {task_type}'s pod")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose(api, kubeconfig, None, real_namespace)}"
                             ) from None

    jobs = JobWatch(api, real_namespace)
    run = engine_command(work, real_namespace, kubeconfig, node_services,
                         "--job-resources", "cpu=250m,memory=256Mi")
    seen = jobs.stop()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((work / "summary.json").read_text())
    assert summary["succeeded"] == summary["tasks_total"] == len(doc["processes"])
    models = {name: v["model"] for name, v in summary["per_task_type"].items()}
    assert {t for t, m in models.items() if m == "pool"} == set(POOLED)
    job_tasks = sum(v["count"] for v in summary["per_task_type"].values() if v["model"] == "job")
    assert len(seen) == job_tasks  # one Job per job-model task, each seen while it ran
    assert api.list("batch/v1", "Job", real_namespace) == []  # and none left behind
    check = subprocess.run([sys.executable, str(REPO / "examples" / "montage" /
                                                "check_mosaic.py"), str(work)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert (work / "mosaic.png").read_bytes()[:4] == b"\x89PNG"


def test_a_failing_job_is_reported_with_exit_code_and_log(api, real_namespace, kubeconfig,
                                                         node_services, shared_work):
    work = workdir_for(shared_work, chain(("boom", {
        "executable": "sh", "args": ["-c", "echo about-to-fail >&2; exit 3"]})), [])
    work.chmod(0o777)
    run = engine_command(work, real_namespace, kubeconfig, node_services)  # no quota here
    assert run.returncode == 1, run.stdout + run.stderr
    assert "exit code 3" in run.stderr, run.stderr
    assert "about-to-fail" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    wait_for(lambda: api.list("batch/v1", "Job", real_namespace) == [], timeout=30,
             what="the failed Job deleted")


def test_a_job_whose_pod_the_quota_refuses_fails_with_the_reason(api, real_namespace,
                                                                 kubeconfig, node_services,
                                                                 shared_work):
    quota(api, real_namespace)
    work = workdir_for(shared_work, chain(("step", {"executable": "true"})), [])
    work.chmod(0o777)
    run = engine_command(work, real_namespace, kubeconfig, node_services)  # no --job-resources
    assert run.returncode == 1, run.stdout + run.stderr
    assert "its pod cannot be created" in run.stderr and "must specify" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
