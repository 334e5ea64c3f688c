"""Scaling a pool on the real node, the way KEDA's HPA would: through the Deployment's scale
subresource (KEDA itself cannot be built here). Real worker pods, real RabbitMQ:

* scaling a busy pod down is a warm shutdown: its running task finishes within the grace
  period and is acknowledged once (it runs once, the run succeeds, no duplicate);
* a pool scaled to 0 takes work again once scaled back to 1;
* a worker container killed with SIGKILL mid-task loses nothing: the unacknowledged message
  is redelivered (to the container the kubelet restarts) and completed once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import docker
import pytest
import yaml

from tests.conftest import hyperpool_env, worker_pool_yaml
from tests.integration.test_engine import chain, workdir_for
from tests.kubernetes.conftest import create_in, wait_for
from tests.kubernetes.real_node import diagnose

pytestmark = pytest.mark.kubernetes
IMAGE = "hyperpool/executor-generic:0.1.0"
TASK = "mProject"


def start_pool(api, namespace: str, services, work: Path, *, grace: int) -> None:
    pool = yaml.safe_load(worker_pool_yaml("mproject", TASK))
    pool["spec"].update({
        "image": IMAGE, "rabbitHostname": services.rabbit_hostname,
        "redisUrl": services.redis_url, "prometheusUrl": "http://prometheus.monitoring:9090",
        "minReplicaCount": 1, "maxReplicaCount": 2, "terminationGracePeriodSeconds": grace,
        "volumes": [{"name": "work", "hostPath": {"path": str(work), "type": "Directory"}}],
        "volumeMounts": [{"name": "work", "mountPath": str(work)}]})
    create_in(api, namespace, pool)
    wait_replicas(api, namespace, 1)


def wait_replicas(api, namespace: str, ready: int) -> None:
    def settled() -> bool:
        status = (api.get("apps/v1", "Deployment", namespace, "mproject") or {}).get("status")
        pods = [p for p in api.list("v1", "Pod", namespace)
                if not p["metadata"].get("deletionTimestamp")]
        return (status or {}).get("readyReplicas", 0) == ready and len(pods) == ready
    try:
        wait_for(settled, timeout=180, what=f"{ready} ready worker pod(s)")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose(api, '', None, namespace)}") from None


def scale(api, namespace: str, replicas: int) -> None:
    api.request("PATCH", f"/apis/apps/v1/namespaces/{namespace}/deployments/mproject/scale",
                body={"spec": {"replicas": replicas}},
                content_type="application/merge-patch+json")


def long_task_run(work: Path, namespace: str, services, seconds: int) -> subprocess.Popen:
    """``hyperpool run`` of one pooled task that notes each start and each finish."""
    script = (f"echo start >> {work}/starts.log; sleep {seconds}; "
              f"echo done >> {work}/dones.log")
    wf = workdir_for(work, chain((TASK, {"executable": "sh", "args": ["-c", script]})), [TASK])
    wf.chmod(0o777)
    return subprocess.Popen(
        [sys.executable, "-m", "hyperpool", "run", str(wf), "--no-local-pools",
         "--json-summary", str(wf / "summary.json")],
        env=hyperpool_env(namespace, wf, HYPERPOOL_BROKER_URL=services.broker_url,
                          HYPERPOOL_REDIS_URL=services.redis_url),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def finish(run: subprocess.Popen, work: Path) -> dict:
    out, err = run.communicate(timeout=240)
    assert run.returncode == 0, out[-2000:] + err[-2000:]
    summary = json.loads((work / "wf" / "summary.json").read_text())
    assert summary["per_task_type"][TASK]["model"] == "pool"  # run by a pod, not locally
    return summary


def test_scaling_a_busy_pod_down_finishes_its_task_then_zero_and_back_works(
        api, real_namespace, node_services, shared_work):
    start_pool(api, real_namespace, node_services, shared_work, grace=60)
    run = long_task_run(shared_work, real_namespace, node_services, seconds=8)
    wait_for(lambda: lines(shared_work / "starts.log") == 1, timeout=120,
             what="the task started in the pod")
    scale(api, real_namespace, 0)  # as KEDA's HPA would, with the task running
    summary = finish(run, shared_work)
    assert summary["succeeded"] == 1 and summary["duplicates_ignored"] == 0
    assert (lines(shared_work / "starts.log"), lines(shared_work / "dones.log")) == (1, 1)
    wait_replicas(api, real_namespace, 0)

    # from zero and back: a new run's task waits in the queue until a pod is there again
    (shared_work / "wf").rename(shared_work / "first")
    for log in ("starts.log", "dones.log"):
        (shared_work / log).unlink()
    run = long_task_run(shared_work, real_namespace, node_services, seconds=0)
    scale(api, real_namespace, 1)
    summary = finish(run, shared_work)
    assert summary["succeeded"] == 1
    assert (lines(shared_work / "starts.log"), lines(shared_work / "dones.log")) == (1, 1)


def test_a_sigkilled_worker_containers_task_is_redelivered_and_completed_once(
        api, real_namespace, node_services, shared_work):
    start_pool(api, real_namespace, node_services, shared_work, grace=30)
    run = long_task_run(shared_work, real_namespace, node_services, seconds=6)
    wait_for(lambda: lines(shared_work / "starts.log") == 1, timeout=120,
             what="the task started in the pod")
    (pod,) = api.list("v1", "Pod", real_namespace)
    (container,) = pod["status"]["containerStatuses"]
    docker.from_env().containers.get(container["containerID"].removeprefix("docker://")).kill()
    summary = finish(run, shared_work)
    assert summary["succeeded"] == 1 and summary["failed"] == 0, summary
    # killed once mid-task, redelivered, run again to the end: one completion counted
    assert lines(shared_work / "starts.log") == 2
    assert lines(shared_work / "dones.log") == 1
    (pod,) = api.list("v1", "Pod", real_namespace)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 1


def test_prometheus_scrapes_a_worker_pods_metrics_port(api, real_namespace, node_services,
                                                       shared_work, tmp_path):
    """The other half of the scaling signal (tests/integration/test_prometheus_signal.py has
    the broker's): a worker pod's ``metrics`` port, scraped by Debian's Prometheus over the
    pod's address, with the labels k8s/monitoring/podmonitor.yaml gives it."""
    from hyperpool.controller.environment import METRICS_PORT
    from tests.integration.prometheus_server import PrometheusServer, ScrapeJob

    start_pool(api, real_namespace, node_services, shared_work, grace=30)
    finish(long_task_run(shared_work, real_namespace, node_services, seconds=0), shared_work)
    (pod,) = api.list("v1", "Pod", real_namespace)
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert ports["metrics"] == METRICS_PORT
    server = PrometheusServer(tmp_path / "prometheus", [ScrapeJob(
        "hyperpool-system/hyperpool-pools", [f"{pod['status']['podIP']}:{METRICS_PORT}"],
        {"namespace": real_namespace, "pod": pod["metadata"]["name"], "container": "worker",
         "pool": "mproject"})], rules={})
    server.start()
    try:
        query = (f'sum(hyperpool_tasks_total{{namespace="{real_namespace}",pool="mproject",'
                 'outcome="succeeded"})')
        samples = wait_for(lambda: server.query(query), timeout=60,
                           what="the pod's task counter in Prometheus")
        assert float(samples[0]["value"][1]) == 1.0
    finally:
        server.stop()

