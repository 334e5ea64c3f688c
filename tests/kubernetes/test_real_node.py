"""The test cluster's real node runs pods: containers start, logs and exec go through the API
server, Jobs complete, and the restricted security context the controller gives workers holds.

Pod start times are measured in bench/ (``kubernetes`` section), not bounded here.
"""

from __future__ import annotations

import pytest

from hyperpool.controller.workload import restricted_container_security, restricted_pod_security
from tests.kubernetes.conftest import wait_for
from tests.kubernetes.identity import kubectl

pytestmark = pytest.mark.kubernetes
IMAGE = "hyperpool/executor-generic:0.1.0"


def deployment(name: str, replicas: int, command: list[str]) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"securityContext": restricted_pod_security(),
                     "automountServiceAccountToken": False,
                     "containers": [{"name": "main", "image": IMAGE, "command": command,
                                     "securityContext": restricted_container_security()}]}}},
    }


def running_pods(api, namespace: str, app: str) -> list[dict]:
    pods = api.list("v1", "Pod", namespace, label_selector=f"app={app}")
    return [p for p in pods if p["status"].get("phase") == "Running"
            and all(c.get("ready") for c in p["status"].get("containerStatuses") or [])]


def test_pods_run_on_the_real_node_with_logs_and_exec(api, real_namespace, kubeconfig, node_ip):
    api.create({**deployment("hello", 1, ["sh", "-c", "echo started-as-$(id -u); sleep 3600"]),
                "metadata": {"name": "hello", "namespace": real_namespace}})
    (pod,) = wait_for(lambda: running_pods(api, real_namespace, "hello"), timeout=90,
                      what="the pod Running on the real node")
    assert pod["spec"]["nodeName"] == "real-node-0"
    assert pod["status"]["hostIP"] == node_ip
    name = pod["metadata"]["name"]
    # logs: API server -> kubelet (its client certificate, the kubelet's webhook authorizer)
    log = wait_for(lambda: kubectl(kubeconfig, "-n", real_namespace, "logs", name).stdout,
                   what="the pod's log")
    assert log.strip() == "started-as-1000"
    # exec (a SPDY upgrade through the API server), and the restricted context inside
    out = kubectl(kubeconfig, "-n", real_namespace, "exec", name, "--", "sh", "-c",
                  "id -u; touch /not-writable 2>/dev/null && echo root-writable || echo ro; "
                  "grep CapEff /proc/self/status")
    assert out.returncode == 0, out.stderr
    uid, root, caps = out.stdout.split("\n")[:3]
    assert (uid, root) == ("1000", "ro")
    assert caps.split()[1] == "0000000000000000"


def test_ten_replicas_all_run(api, real_namespace):
    api.create({**deployment("ten", 10, ["sleep", "3600"]),
                "metadata": {"name": "ten", "namespace": real_namespace}})
    pods = wait_for(lambda: len(running_pods(api, real_namespace, "ten")) == 10 and
                    running_pods(api, real_namespace, "ten"), timeout=180,
                    what="10 Running replicas")
    assert {p["spec"]["nodeName"] for p in pods} == {"real-node-0"}
    assert len({p["status"]["podIP"] for p in pods}) == 10  # each its own sandbox


def test_a_job_runs_to_completion_and_its_exit_code_is_seen(api, real_namespace):
    def job(name: str, script: str) -> dict:
        return {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": name, "namespace": real_namespace},
                "spec": {"backoffLimit": 0, "template": {"spec": {
                    "restartPolicy": "Never", "securityContext": restricted_pod_security(),
                    "containers": [{"name": "main", "image": IMAGE,
                                    "command": ["sh", "-c", script],
                                    "securityContext": restricted_container_security()}]}}}}

    api.create(job("ok", "exit 0"))
    api.create(job("fails", "exit 7"))

    def finished(name: str, kind: str) -> bool:
        status = (api.get("batch/v1", "Job", real_namespace, name) or {}).get("status") or {}
        return any(c["type"] == kind and c["status"] == "True"
                   for c in status.get("conditions") or [])

    wait_for(lambda: finished("ok", "Complete"), timeout=90, what="Job ok Complete")
    wait_for(lambda: finished("fails", "Failed"), timeout=90, what="Job fails Failed")
    (pod,) = api.list("v1", "Pod", real_namespace, label_selector="job-name=fails")
    (state,) = pod["status"]["containerStatuses"]
    assert state["state"]["terminated"]["exitCode"] == 7
