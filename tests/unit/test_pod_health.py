"""PodsFailing: kubelet pod statuses -> findings, and the one pod LIST per reconcile.

The pod documents copy what ``kubectl get pod -o json`` shows for each situation (kubelet 1.29,
containerd): the waiting reasons and messages, ``lastState.terminated`` of a crash loop, an
unschedulable pod's conditions, a pod in its termination grace period.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from kubernetes import client

from hyperpool.controller import naming, status
from hyperpool.controller.api import ApiError, KubeApi
from hyperpool.controller.pod_health import MAX_DETAIL, pod_findings, pod_problems, summarize
from hyperpool.controller.reconcile import TransientError, read_pod_findings
from hyperpool.controller.status import Finding, ready_condition
from tests.unit.test_controller_reconcile import FakeApi, settle
from tests.unit.test_controller_support import seed_pool

IMAGE = "kjanecki/montage2-amqp:latest"
ROOMY_QUOTA = [{"status": {"hard": {"requests.cpu": "100"}, "used": {"requests.cpu": "0"}}}]


def _condition(kind: str, ok: bool, **extra: str) -> dict[str, Any]:
    return {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None,
            "lastTransitionTime": "2024-05-02T10:00:00Z", **extra}


def container_status(state: dict, *, name: str = "worker", last: dict | None = None,
                     restarts: int = 0, ready: bool = False,
                     image: str = f"docker.io/{IMAGE}") -> dict[str, Any]:
    running = "running" in state or "terminated" in state or last is not None
    return {
        "containerID": "containerd://3f1c9a0e5b7d" if running else None,
        "image": image,
        "imageID": "docker.io/kjanecki/montage2-amqp@sha256:9b1e4c" if running else "",
        "lastState": {"terminated": last} if last else {},
        "name": name, "ready": ready, "restartCount": restarts,
        "started": "running" in state, "state": state,
    }


def make_pod(name: str, *statuses: dict, phase: str = "Running", init: list | None = None,
             conditions: list | None = None, **meta: Any) -> dict[str, Any]:
    ready = all(s["ready"] for s in statuses) and bool(statuses)
    status_doc: dict[str, Any] = {
        "phase": phase, "qosClass": "Guaranteed", "hostIP": "172.18.0.2",
        "podIP": "10.244.0.17", "startTime": "2024-05-02T10:00:00Z",
        "conditions": conditions if conditions is not None else [
            _condition("PodReadyToStartContainers", True), _condition("Initialized", True),
            _condition("Ready", ready, **({} if ready else {
                "reason": "ContainersNotReady",
                "message": "containers with unready status: [worker]"})),
            _condition("ContainersReady", ready), _condition("PodScheduled", True)],
        "containerStatuses": list(statuses),
    }
    if init is not None:
        status_doc["initContainerStatuses"] = init
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                     "labels": {**naming.selector_labels("mproject"),
                                "pod-template-hash": "7d9f6c8b5"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                          "name": "mproject-7d9f6c8b5", "uid": "rs-1",
                                          "controller": True, "blockOwnerDeletion": True}],
                     **meta},
        "spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 600,
                 "containers": [{"name": "worker", "image": IMAGE}]},
        "status": status_doc,
    }


def image_pull_backoff(name: str = "mproject-7d9f6c8b5-x2x7q") -> dict[str, Any]:
    return make_pod(name, container_status({"waiting": {
        "reason": "ImagePullBackOff",
        "message": f'Back-off pulling image "{IMAGE}"'}}), phase="Pending")


def crash_loop(name: str = "mproject-7d9f6c8b5-k8s2m", *, exit_code: int = 1,
               reason: str = "Error") -> dict[str, Any]:
    return make_pod(name, container_status(
        {"waiting": {"reason": "CrashLoopBackOff",
                     "message": f"back-off 1m20s restarting failed container=worker "
                                f"pod={name}_default(uid-{name})"}},
        last={"containerID": "containerd://3f1c9a0e5b7d", "exitCode": exit_code,
              "reason": reason, "startedAt": "2024-05-02T10:01:12Z",
              "finishedAt": "2024-05-02T10:01:13Z"},
        restarts=4))


def healthy(name: str = "mproject-7d9f6c8b5-q4w8z", **kw: Any) -> dict[str, Any]:
    return make_pod(name, container_status(
        {"running": {"startedAt": "2024-05-02T10:00:05Z"}}, ready=True, **kw))


def describe(pod: dict) -> list[str]:
    return [p.describe() for p in pod_problems(pod)]


# -- pod statuses -> problems --------------------------------------------------------------


def test_image_pull_backoff_names_pod_container_reason_and_message():
    (finding,) = pod_findings([image_pull_backoff("wp-abc-7d9f")])
    assert finding == Finding(status.PODS_FAILING, 'pod wp-abc-7d9f: container worker: '
                                                   f'ImagePullBackOff (Back-off pulling image '
                                                   f'"{IMAGE}")')


def test_err_image_pull_keeps_the_registry_message_clipped_to_one_line():
    message = ('failed to pull and unpack image "docker.io/kjanecki/montage2-amqp:latest": '
               'failed to resolve reference "docker.io/kjanecki/montage2-amqp:latest": pull '
               "access denied, repository does not exist or may require authorization: server "
               "message: insufficient_scope: authorization failed")
    pod = make_pod("p", container_status({"waiting": {"reason": "ErrImagePull",
                                                      "message": message}}), phase="Pending")
    (problem,) = pod_problems(pod)
    assert problem.reason == "ErrImagePull"
    assert len(problem.detail) == MAX_DETAIL and problem.detail.endswith("...")
    assert problem.detail.startswith('failed to pull and unpack image "docker.io/kjanecki')


def test_crash_loop_reports_the_last_exit_not_the_backoff_message():
    assert describe(crash_loop()) == ["container worker: CrashLoopBackOff "
                                      "(last exit code 1: Error)"]
    oom = crash_loop(exit_code=137, reason="OOMKilled")
    assert describe(oom) == ["container worker: CrashLoopBackOff (last exit code 137: OOMKilled)"]
    # a worker that exits 0 and is restarted forever cannot run either
    assert describe(crash_loop(exit_code=0, reason="Completed")) == [
        "container worker: CrashLoopBackOff (last exit code 0: Completed)"]


def test_terminated_non_zero_between_crash_and_backoff():
    pod = make_pod("p", container_status(
        {"terminated": {"exitCode": 2, "reason": "Error", "message": "ImportError: no module\n"
                        "named 'celery'", "startedAt": "2024-05-02T10:01:12Z",
                        "finishedAt": "2024-05-02T10:01:13Z"}}, restarts=1))
    assert describe(pod) == ["container worker: Error (exit code 2: ImportError: no module "
                             "named 'celery')"]
    oom = make_pod("p", container_status({"terminated": {"exitCode": 137,
                                                         "reason": "OOMKilled"}}, restarts=3))
    assert describe(oom) == ["container worker: OOMKilled (exit code 137)"]
    clean = make_pod("p", container_status({"terminated": {"exitCode": 0,
                                                           "reason": "Completed"}}))
    assert pod_problems(clean) == []
    never = make_pod("p", container_status({"terminated": {"exitCode": 1, "reason": "Error"}}))
    never["spec"]["restartPolicy"] = "Never"
    assert pod_problems(never) == []


def test_config_errors_from_secrets_and_the_restricted_security_context():
    missing = make_pod("a", container_status({"waiting": {
        "reason": "CreateContainerConfigError",
        "message": "couldn't find key rabbitmq-password in Secret default/rabbitmq"}}),
        phase="Pending")
    root = make_pod("b", container_status({"waiting": {
        "reason": "CreateContainerConfigError",
        "message": 'container has runAsNonRoot and image will run as root (pod: '
                   '"b_default(uid-b)", container: worker)'}}), phase="Pending")
    (finding,) = pod_findings([root, missing])
    assert finding.message == (
        "pod a: container worker: CreateContainerConfigError (couldn't find key "
        "rabbitmq-password in Secret default/rabbitmq); pod b: container worker: "
        'CreateContainerConfigError (container has runAsNonRoot and image will run as root '
        '(pod: "b_default(uid-b)", container: worker))')


@pytest.mark.parametrize("reason,message", [
    ("ErrImageNeverPull", f'Container image "{IMAGE}" is not present with pull policy of Never'),
    ("InvalidImageName", 'Failed to apply default image tag "docker.io/kjanecki/montage2-amqp'
                         ':latest": couldn\'t parse image name: invalid reference format'),
    ("RunContainerError", 'failed to create containerd task: exec: "hyperpool": executable '
                          "file not found in $PATH: unknown"),
])
def test_other_waiting_reasons_that_never_start(reason, message):
    pod = make_pod("p", container_status({"waiting": {"reason": reason, "message": message}}))
    assert describe(pod) == [f"container worker: {reason} ({message})"]


def test_init_containers_and_several_containers_of_one_pod():
    pod = make_pod("p", container_status({"waiting": {"reason": "PodInitializing"}}),
                   container_status({"waiting": {"reason": "ImagePullBackOff",
                                                 "message": 'Back-off pulling image "s:1"'}},
                                    name="sidecar", image="s:1"),
                   init=[container_status(
                       {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
                       name="setup", last={"exitCode": 3, "reason": "Error"}, restarts=2)],
                   phase="Pending")
    assert summarize(pod_problems(pod)) == (
        "pod p: init container setup: CrashLoopBackOff (last exit code 3: Error), "
        'container sidecar: ImagePullBackOff (Back-off pulling image "s:1")')


def test_healthy_starting_and_recovered_pods_give_no_finding():
    creating = make_pod("c", container_status({"waiting": {"reason": "ContainerCreating"}}),
                        phase="Pending")
    recovered = healthy(last={"exitCode": 137, "reason": "OOMKilled"}, restarts=1)
    assert pod_findings([healthy(), creating, recovered]) == []
    assert pod_findings([]) == []


def test_unscheduled_terminating_and_finished_pods_are_not_the_pools_failure():
    unscheduled = make_pod("u", phase="Pending", conditions=[_condition(
        "PodScheduled", False, reason="Unschedulable",
        message="0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are "
                "available: 1 No preemption victims found for incoming pod.")])
    unscheduled["status"].pop("containerStatuses")
    # even with a (stale) failing status, a pod that cannot be scheduled is quota's business
    odd = copy.deepcopy(image_pull_backoff("o"))
    odd["status"]["conditions"] = unscheduled["status"]["conditions"]
    terminating = crash_loop("t", exit_code=143)
    terminating["metadata"].update(deletionTimestamp="2024-05-02T10:05:00Z",
                                   deletionGracePeriodSeconds=600)
    evicted = make_pod("e", container_status({"terminated": {"exitCode": 137,
                                                             "reason": "ContainerStatusUnknown"}}),
                       phase="Failed")
    evicted["status"].update(reason="Evicted", message="The node was low on resource: memory.")
    assert pod_findings([unscheduled, odd, terminating, evicted]) == []


def test_at_most_three_pods_then_and_n_more_in_name_order():
    pods = [crash_loop(f"mproject-7d9f6c8b5-{i}") for i in (5, 1, 4, 2, 3)]
    (finding,) = pod_findings(pods)
    assert [part.split(":")[0] for part in finding.message.split("; ")] == [
        "pod mproject-7d9f6c8b5-1", "pod mproject-7d9f6c8b5-2", "pod mproject-7d9f6c8b5-3",
        "and 2 more pods"]
    assert pod_findings(list(reversed(pods))) == [finding]  # same failures, same text
    (one_more,) = pod_findings(pods[:4])
    assert one_more.message.endswith("; and 1 more pod")


# -- the verdict ----------------------------------------------------------------------------


def test_pods_failing_is_false_and_ranks_between_children_failed_and_quota_limited():
    pods = Finding(status.PODS_FAILING, "pod p: container worker: CrashLoopBackOff")
    quota = Finding(status.QUOTA_LIMITED, "capped")
    cond = ready_condition([quota, pods])
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "False", "PodsFailing", pods.message)
    assert ready_condition([pods, Finding(status.CHILDREN_FAILED, "x")])["reason"] == \
        "ChildrenFailed"
    assert ready_condition([pods, Finding(status.INVALID_SPEC, "x")])["reason"] == "InvalidSpec"


# -- reconcile: one LIST of the pool's pods, only when it wants pods ------------------------


class PodsApi(FakeApi):
    """The reconcile fake plus pods, selected by label as the API server would."""

    def __init__(self) -> None:
        super().__init__()
        self.pods: list[dict] = []
        self.selectors: list[str | None] = []

    def list(self, api_version, kind, namespace, *, label_selector=None):
        if kind != "Pod":
            return super().list(api_version, kind, namespace, label_selector=label_selector)
        self.calls.append(("list", kind))
        self.selectors.append(label_selector)
        if "Pod" in self.fail:
            raise self.fail["Pod"]
        wanted = dict(term.split("=", 1) for term in (label_selector or "").split(",") if term)
        return [copy.deepcopy(p) for p in self.pods
                if p["metadata"]["namespace"] == namespace
                and wanted.items() <= p["metadata"]["labels"].items()]


def running_pool(api: PodsApi) -> dict:
    api.quotas = copy.deepcopy(ROOMY_QUOTA)
    pool = seed_pool()
    pool["spec"]["minReplicaCount"] = 2
    return pool


def test_crashing_pod_makes_the_pool_not_ready_and_recovery_makes_it_ready_again():
    api = PodsApi()
    pool = running_pool(api)
    api.pods = [healthy(), crash_loop("mproject-7d9f6c8b5-k8s2m")]
    other = crash_loop("other-5c4b3a2-zz9")  # another pool's pod in the namespace
    other["metadata"]["labels"] = naming.selector_labels("other")
    api.pods.append(other)
    outcome = settle(api, pool, now="2024-01-01T00:00:00Z")
    ready = outcome.status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "PodsFailing")
    assert ready["message"] == ("pod mproject-7d9f6c8b5-k8s2m: container worker: "
                                "CrashLoopBackOff (last exit code 1: Error)")
    assert api.selectors == [f"{naming.COMPONENT_LABEL}=worker,{naming.POOL_LABEL}=mproject"]
    assert api.calls.count(("list", "Pod")) == 1

    again = settle(api, pool, now="2024-01-01T00:01:00Z")  # still crashing: nothing to write
    assert again.written == {}

    api.pods = [healthy(), healthy("mproject-7d9f6c8b5-k8s2m")]
    fixed = settle(api, pool, now="2024-01-01T00:02:00Z")
    ready = fixed.status["conditions"][0]
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == (
        "True", "Reconciled", "2024-01-01T00:02:00Z")


def test_healthy_pods_stay_reconciled():
    api = PodsApi()
    pool = running_pool(api)
    api.pods = [healthy(), healthy("mproject-7d9f6c8b5-k8s2m")]
    ready = settle(api, pool).status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("True", "Reconciled")
    assert api.calls.count(("list", "Pod")) == 1


def test_scaled_to_zero_pool_costs_no_pod_request():
    api = PodsApi()
    pool = seed_pool()  # minReplicaCount 0: the Deployment is created with 0 replicas
    api.pods = [crash_loop()]  # a leftover would not matter: nobody asked
    settle(api, pool)
    settle(api, pool)
    assert ("list", "Pod") not in api.calls


def test_quota_limited_pool_with_crashing_pods_reports_the_pods():
    api = PodsApi()
    pool = running_pool(api)
    api.quotas = [{"status": {"hard": {"requests.cpu": "2"}, "used": {"requests.cpu": "0"}}}]
    api.pods = [image_pull_backoff()]
    ready = settle(api, pool).status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "PodsFailing")
    assert "ImagePullBackOff" in ready["message"]


def test_pod_list_failures_retry_or_are_skipped():
    api = PodsApi()
    pool = running_pool(api)
    api.pods = [crash_loop()]
    api.fail["Pod"] = ApiError(503, "etcd leader changed")
    with pytest.raises(TransientError, match="listing pods"):
        settle(api, pool)
    # no right to list pods (RBAC not yet upgraded): the pool's verdict does not depend on it
    api.fail["Pod"] = ApiError(403, 'pods is forbidden: User "system:serviceaccount:..." cannot '
                                    'list resource "pods"', reason="Forbidden")
    ready = settle(api, pool).status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("True", "Reconciled")


def test_selector_comes_from_the_live_deployment():
    api = PodsApi()
    api.pods = [crash_loop()]
    deployment = {"metadata": {"name": "mproject", "namespace": "default"},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {
                      naming.POOL_LABEL: "mproject"}}}}
    assert [f.reason for f in read_pod_findings(api, deployment, "default", "mproject")] == [
        "PodsFailing"]
    assert api.selectors == [f"{naming.POOL_LABEL}=mproject"]
    assert read_pod_findings(api, None, "default", "mproject") == []
    assert read_pod_findings(api, {**deployment, "spec": {"replicas": 0}}, "default",
                             "mproject") == []
    assert len(api.selectors) == 1


@pytest.mark.asyncio
async def test_the_real_api_wrapper_lists_pods_by_selector(kmock):
    """Through :class:`KubeApi` and HTTP, against kmock's emulated API server."""
    kmock.objects["v1/pods", "default", "mproject-7d9f6c8b5-x2x7q"] = image_pull_backoff()
    api = KubeApi(client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/"))))
    deployment = {"metadata": {"name": "mproject", "namespace": "default"},
                  "spec": {"replicas": 3, "selector": {
                      "matchLabels": naming.selector_labels("mproject")}}}
    findings = await asyncio.to_thread(read_pod_findings, api, deployment, "default",
                                       "mproject")
    assert [f.reason for f in findings] == ["PodsFailing"]
    assert "pod mproject-7d9f6c8b5-x2x7q: container worker: ImagePullBackOff" in \
        findings[0].message
    (request,) = [r for r in kmock._requests if "/pods" in str(r.url)]
    assert request.method.upper() == "GET" and str(request.url).startswith(
        f"{str(kmock.url).rstrip('/')}/api/v1/namespaces/default/pods")
    assert request.params["labelSelector"] == (
        f"{naming.COMPONENT_LABEL}=worker,{naming.POOL_LABEL}=mproject")


def test_a_pull_error_that_does_not_name_the_image_gets_it_named():
    # what the real node reported for the seed's image with no registry reachable
    pod = {"metadata": {"name": "unchanged-767fdc44b4-fxxkj"}, "status": {
        "phase": "Pending", "containerStatuses": [{
            "name": "worker", "image": "kjanecki/montage2-amqp:latest", "ready": False,
            "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull", "message": (
                'rpc error: code = Unknown desc = Error response from daemon: Get '
                '"https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io '
                'on 10.255.255.53:53: no such host')}}}]}}
    (finding,) = pod_findings([pod])
    assert finding.message.startswith(
        "pod unchanged-767fdc44b4-fxxkj: container worker: ErrImagePull of image "
        "'kjanecki/montage2-amqp:latest' (rpc error")
