"""The Kubernetes job model without a cluster: the Job's volume/env, what a failed pod's
kubelet status says, the launcher's failure scan against a fake API, the options' checks.

The pod and Job status documents are shaped as a 1.20-1.29 kubelet and Job controller write
them (trimmed of fields nothing here reads: conditions' probe times, container ids, qosClass).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import kubernetes_validate
import pytest

from hyperpool.controller import job_launcher
from hyperpool.controller.api import ApiError
from hyperpool.controller.job_launcher import PULL_GRACE_SCANS, RUN_LABEL, KubeJobLauncher
from hyperpool.controller.jobs import (
    JobParams,
    build_job,
    job_failure,
    job_name,
    pod_problem,
    pull_problem,
)
from hyperpool.engine.report import failure_report
from hyperpool.engine.run import Failure

K8S_VERSION = kubernetes_validate.utils.all_versions()[0]
WORK = "/data/runs/montage"
MESSAGE = {"executable": "mProject", "args": ["a.fits"], "taskId": "wf:1:mProject:3",
           "name": "mProject", "workDir": WORK}
JOB = job_name("wf:1:mProject:3", 1)


def params(**kw) -> JobParams:
    base = {"namespace": "ns", "image": "exec:1", "reply_to": "hf:done", "run_id": "r1",
            "env": {"HYPERPOOL_REDIS_URL": "redis://redis.hf:6379/0"}, "work_dir": WORK}
    return JobParams(**{**base, **kw})


def container_of(job: dict) -> dict:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def env_of(job: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container_of(job)["env"]}


# -- build_job: the work dir and the env ------------------------------------------------------


def test_a_claim_is_mounted_read_write_at_the_work_dirs_absolute_path():
    job = build_job(MESSAGE, params(work_claim="hf-work"))
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "work", "persistentVolumeClaim": {"claimName": "hf-work"}}]
    container = container_of(job)
    assert container["volumeMounts"] == [{"name": "work", "mountPath": WORK}]  # not readOnly
    assert container["workingDir"] == WORK
    env = env_of(job)
    assert env["HYPERPOOL_WORK_DIR"] == WORK
    assert env["HYPERPOOL_REDIS_URL"] == "redis://redis.hf:6379/0"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert "HYPERPOOL_BROKER_URL" not in env


def test_host_path_mounts_the_engines_directory_and_it_must_exist():
    job = build_job(MESSAGE, params(work_host_path=True))
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    (volume,) = job["spec"]["template"]["spec"]["volumes"]
    assert volume == {"name": "work", "hostPath": {"path": WORK, "type": "Directory"}}
    assert container_of(job)["volumeMounts"][0]["mountPath"] == WORK
    assert container_of(job)["workingDir"] == WORK


def test_without_a_volume_the_job_is_as_before():
    job = build_job(MESSAGE, params())
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    assert "volumes" not in job["spec"]["template"]["spec"]
    container = container_of(job)
    assert "volumeMounts" not in container
    # The runtime would create a missing workingDir as root, unwritable for uid 1000.
    assert "workingDir" not in container
    assert env_of(job)["HYPERPOOL_WORK_DIR"] == WORK
    bare = build_job(MESSAGE, JobParams(namespace="ns", image="i", reply_to="s"))
    assert "HYPERPOOL_WORK_DIR" not in env_of(bare)


@pytest.mark.parametrize("kw", [
    {"work_claim": "c", "work_host_path": True},
    {"work_claim": "c", "work_dir": None},
    {"work_host_path": True, "work_dir": None},
    {"work_host_path": True, "work_dir": "relative/dir"},
])
def test_contradictory_volume_params_are_refused(kw):
    with pytest.raises(ValueError):
        params(**kw)


# -- pod status -> why it failed -------------------------------------------------------------


def pod(name: str = f"{JOB}-x7k2p", *, phase: str, state: dict | None = None,
        created: str = "2024-05-01T10:00:00Z", **status) -> dict:
    """A task pod as the kubelet reports it."""
    container_statuses = [] if state is None else [{
        "name": "task", "state": state, "lastState": {}, "ready": False, "restartCount": 0,
        "image": "exec:1", "imageID": "", "started": False}]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created,
                     "labels": {"job-name": JOB, "controller-uid": "5f1c",
                                RUN_LABEL: "r1"}},
        "status": {"phase": phase, "hostIP": "172.17.0.1", "startTime": created,
                   "conditions": [{"type": "PodScheduled", "status": "True"}],
                   **({"containerStatuses": container_statuses} if state else {}), **status},
    }


EXITED_3 = pod(phase="Failed", state={"terminated": {
    "exitCode": 3, "reason": "Error", "startedAt": "2024-05-01T10:00:01Z",
    "finishedAt": "2024-05-01T10:02:01Z", "containerID": "containerd://9a0c"}})
OOM_KILLED = pod(phase="Failed", state={"terminated": {
    "exitCode": 137, "reason": "OOMKilled", "startedAt": "2024-05-01T10:00:01Z",
    "finishedAt": "2024-05-01T10:00:09Z", "containerID": "containerd://77e1"}})
NEVER_PULL = pod(phase="Pending", state={"waiting": {
    "reason": "ErrImageNeverPull",
    "message": 'Container image "exec:missing" is not present with pull policy of Never'}})
PULL_BACKOFF = pod(phase="Pending", state={"waiting": {
    "reason": "ImagePullBackOff", "message": 'Back-off pulling image "nosuch/exec:1"'}})
CREATING = pod(phase="Pending", state={"waiting": {"reason": "ContainerCreating"}})
RUNNING = pod(phase="Running", state={"running": {"startedAt": "2024-05-01T10:00:01Z"}})
SUCCEEDED = pod(phase="Succeeded", state={"terminated": {"exitCode": 0, "reason": "Completed"}})
PAST_DEADLINE = pod(phase="Failed", reason="DeadlineExceeded",
                    message="Pod was active on the node longer than the specified deadline")


def job_status(reason: str | None = None, message: str = "") -> dict:
    job = build_job(MESSAGE, params(labels={RUN_LABEL: "r1"}))
    job["status"] = {"startTime": "2024-05-01T10:00:00Z", "active": 1}
    if reason:
        job["status"] = {"startTime": "2024-05-01T10:00:00Z", "failed": 1, "conditions": [
            {"type": "Failed", "status": "True", "reason": reason, "message": message,
             "lastTransitionTime": "2024-05-01T10:02:02Z"}]}
    return job


BACKOFF = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE = ("DeadlineExceeded", "Job was active longer than specified deadline")


def test_pod_problems_from_kubelet_status():
    exited = pod_problem(EXITED_3)
    assert (exited.exit_code, exited.reason, exited.waiting) == (3, "Error", False)
    assert exited.describe() == "exit code 3 (Error)"
    assert pod_problem(OOM_KILLED).describe() == "exit code 137 (OOMKilled)"
    never = pod_problem(NEVER_PULL)
    assert never.waiting and never.exit_code is None
    assert never.describe() == ('ErrImageNeverPull: Container image "exec:missing" is not '
                                'present with pull policy of Never')
    assert pod_problem(PULL_BACKOFF).waiting
    assert pod_problem(PAST_DEADLINE).reason == "DeadlineExceeded"
    for fine in (CREATING, RUNNING, SUCCEEDED, pod(phase="Pending")):
        assert pod_problem(fine) is None


def test_a_failed_job_is_described_by_its_pods_exit_code():
    failure = job_failure(job_status(*BACKOFF), [EXITED_3])
    assert failure.exit_code == 3 and failure.pod == EXITED_3["metadata"]["name"]
    # BackoffLimitExceeded (backoffLimit is 0) would only repeat what the pod says.
    assert failure.note == f"Job {JOB} failed: pod {JOB}-x7k2p: exit code 3 (Error)"
    oom = job_failure(job_status(*BACKOFF), [OOM_KILLED])
    assert oom.exit_code == 137 and "OOMKilled" in oom.note


def test_a_job_past_its_deadline_says_so():
    failure = job_failure(job_status(*DEADLINE), [PAST_DEADLINE])
    assert failure.exit_code == 1
    assert failure.note.startswith(f"Job {JOB} failed (DeadlineExceeded: Job was active longer")
    assert "pod " + PAST_DEADLINE["metadata"]["name"] in failure.note
    gone = job_failure(job_status(*DEADLINE), [])
    assert gone.pod is None and gone.note.endswith("its pod is gone")


def test_a_job_that_has_not_failed_has_no_failure():
    assert job_failure(job_status(), [RUNNING]) is None
    assert job_failure(job_status(), [NEVER_PULL]) is None  # the launcher's grace decides


def test_the_newest_pod_waiting_for_its_image_is_the_pull_problem():
    assert pull_problem([RUNNING]) is None and pull_problem([CREATING]) is None
    assert pull_problem([EXITED_3, NEVER_PULL]).reason == "ErrImageNeverPull"


# -- the launcher's scan, against a fake API -------------------------------------------------


class FakeApi:
    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.pods: list[dict] = []
        self.deleted: list[tuple[str, str]] = []
        self.pods_error: ApiError | None = None

    def create(self, obj):
        self.jobs[obj["metadata"]["name"]] = copy.deepcopy(obj)
        return obj

    def list(self, api_version, kind, namespace, *, label_selector=None):
        assert label_selector == f"{RUN_LABEL}=r1"
        if kind == "Pod":
            if self.pods_error:
                raise self.pods_error
            return copy.deepcopy(self.pods)
        return [copy.deepcopy(j) for j in self.jobs.values()]

    def delete(self, api_version, kind, namespace, name, *, propagation="Background"):
        self.deleted.append((name, propagation))
        self.jobs.pop(name, None)


@pytest.fixture
def reported(monkeypatch):
    results: list = []
    monkeypatch.setattr(job_launcher, "report",
                        lambda client, stream, result: results.append((stream, result)))
    return results


def launcher(api: FakeApi, logs: list | None = None) -> KubeJobLauncher:
    def read_log(_api, namespace, name):
        if logs is not None:
            logs.append((namespace, name))
        return "Traceback (most recent call last):\nhyperpool: error: Redis unreachable\n"

    jobs = KubeJobLauncher(api, client=None, stream="hf:done", run_id="r1", namespace="ns",
                           image="exec:1", work_dir=WORK, work_claim="hf-work",
                           read_log=read_log, scan_every=None)
    jobs.start("wf:1:mProject:3", MESSAGE, 1)
    return jobs


def test_a_failed_job_becomes_the_tasks_failed_result_with_its_log(reported):
    api, logs = FakeApi(), []
    jobs = launcher(api, logs)
    assert api.jobs[JOB]["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]
    api.jobs[JOB]["status"] = job_status(*BACKOFF)["status"]
    api.pods = [EXITED_3]
    jobs.scan()
    ((stream, result),) = reported
    assert stream == "hf:done" and logs == [("ns", f"{JOB}-x7k2p")]
    assert (result.task_id, result.attempt, result.exit_code, result.model) == (
        "wf:1:mProject:3", 1, 3, "job")
    assert result.error == f"Job {JOB} failed: pod {JOB}-x7k2p: exit code 3 (Error)"
    assert "Redis unreachable" in result.stderr_tail and not result.ok
    assert api.deleted == [(JOB, "Background")] and jobs.running == 0
    jobs.scan()
    assert len(reported) == 1
    # What the engine prints for it.
    text = failure_report(SimpleNamespace(failures=[Failure(
        result.task_id, "mProject", result.exit_code, 1, result.stderr_tail, result.error)]))
    assert f"failed after 1 attempt: Job {JOB} failed: pod {JOB}-x7k2p: exit code 3" in text
    assert "    hyperpool: error: Redis unreachable" in text


def test_an_image_that_never_comes_fails_the_task_after_the_grace(reported):
    api = FakeApi()
    jobs = launcher(api)
    api.pods = [NEVER_PULL]
    for _ in range(PULL_GRACE_SCANS):
        jobs.scan()
    assert reported == [] and jobs.running == 1
    jobs.scan()
    ((_, result),) = reported
    assert result.error == (f"Job {JOB}: image 'exec:1' cannot be pulled: pod {JOB}-x7k2p: "
                            'ErrImageNeverPull: Container image "exec:missing" is not present '
                            "with pull policy of Never")
    assert result.stderr_tail == ""  # it never started: no log to read
    assert api.deleted == [(JOB, "Background")] and jobs.running == 0


def test_a_pull_that_recovers_restarts_the_grace(reported):
    api = FakeApi()
    jobs = launcher(api)
    for pods in ([PULL_BACKOFF], [PULL_BACKOFF], [RUNNING], [PULL_BACKOFF], [PULL_BACKOFF]):
        api.pods = pods
        jobs.scan()
    assert reported == [] and jobs.running == 1


def test_without_pod_access_the_failure_is_still_reported(reported):
    api = FakeApi()
    jobs = launcher(api)
    api.pods_error = ApiError(403, "GET pods: forbidden", reason="Forbidden")
    api.jobs[JOB]["status"] = job_status(*BACKOFF)["status"]
    jobs.scan()
    ((_, result),) = reported
    assert result.error.startswith(f"Job {JOB} failed (BackoffLimitExceeded")


def test_the_end_deletes_live_and_leftover_jobs_in_the_background():
    api = FakeApi()
    jobs = launcher(api)
    api.jobs["hf-task-left-over-1"] = {"metadata": {"name": "hf-task-left-over-1"}}
    assert jobs.terminate_all() == 1
    assert api.deleted == [(JOB, "Background"), ("hf-task-left-over-1", "Background")]
    assert jobs.terminate_all() == 0  # again, as `hyperpool run` does after a cancel: no-op


def test_a_result_deletes_its_job():
    api = FakeApi()
    jobs = launcher(api)
    jobs.finished("wf:1:mProject:3")
    assert api.deleted == [(JOB, "Background")] and jobs.running == 0
