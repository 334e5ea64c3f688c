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
    check_volume_claim,
    job_failure,
    job_name,
    pod_problem,
    pull_problem,
)
from hyperpool.engine import command
from hyperpool.engine.command import check_job_options, unreachable_from_pods
from hyperpool.engine.report import failure_report
from hyperpool.engine.run import Failure
from hyperpool.errors import ConfigError, ServiceUnavailable
from hyperpool.settings import Settings

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


# -- the options --------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "kw", "source"), [
    ("local", {"volume_claim": "c"}, "--job-volume-claim"),
    ("docker", {"host_path": True}, "--job-host-path"),
    ("local", {"redis_url": "redis://r:6379/0"}, "--job-redis-url"),
    ("kubernetes", {"volume_claim": "c", "host_path": True}, "--job-host-path"),
    ("kubernetes", {"volume_claim": " "}, "--job-volume-claim"),
])
def test_job_options_that_would_be_ignored_or_contradict_are_refused(model, kw, source):
    with pytest.raises(ConfigError) as err:
        check_job_options(model, **{"volume_claim": None, "host_path": False,
                                    "redis_url": None, **kw})
    assert err.value.source == source and err.value.exit_code == 2
    assert "\n" not in str(err.value)


def test_job_options_that_fit_pass():
    check_job_options("kubernetes", volume_claim="c", host_path=False, redis_url="redis://r/0")
    check_job_options("kubernetes", volume_claim=None, host_path=True, redis_url=None)
    check_job_options("local", volume_claim=None, host_path=False, redis_url=None)


def test_the_cli_says_so_in_one_line_with_exit_2(tmp_path, capsys):
    from hyperpool.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["run", str(tmp_path), "--job-host-path"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("hyperpool: error: --job-host-path: only used with --job-model kubernetes "
                   "(not local)")


def test_a_loopback_redis_url_is_warned_about():
    assert "loopback" in unreachable_from_pods("redis://127.0.0.1:6379/0")
    assert "****" in unreachable_from_pods("redis://:secret@localhost:6379/0")
    assert unreachable_from_pods("redis://redis.hyperflow.svc:6379/0") is None
    assert unreachable_from_pods("redis://172.17.0.1:6380/0") is None


class ClaimApi:
    def __init__(self, answer) -> None:
        self.answer = answer
        self.paths: list[str] = []

    def request(self, method, path, **_):
        self.paths.append(f"{method} {path}")
        if isinstance(self.answer, ApiError):
            raise self.answer
        return self.answer


def test_a_missing_claim_is_a_one_line_error_naming_claim_and_namespace():
    api = ClaimApi(ApiError(404, "GET ...: persistentvolumeclaims \"work\" not found"))
    with pytest.raises(ConfigError) as err:
        check_volume_claim(api, "hf", "work")
    assert api.paths == ["GET /api/v1/namespaces/hf/persistentvolumeclaims/work"]
    assert str(err.value) == ("--job-volume-claim: PersistentVolumeClaim 'work' not found in "
                              "namespace 'hf'")
    assert err.value.exit_code == 2


def test_claim_checks_that_pass_warn_or_cannot_reach():
    assert check_volume_claim(ClaimApi({"status": {"phase": "Bound"}}), "hf", "w") is None
    assert check_volume_claim(ClaimApi({"status": {"phase": "Pending"}}), "hf", "w") is None
    warning = check_volume_claim(ClaimApi(ApiError(403, "forbidden", reason="Forbidden")),
                                 "hf", "w")
    assert "cannot check PersistentVolumeClaim 'w'" in warning
    with pytest.raises(ConfigError, match="phase Lost"):
        check_volume_claim(ClaimApi({"status": {"phase": "Lost"}}), "hf", "w")
    with pytest.raises(ServiceUnavailable):
        check_volume_claim(ClaimApi(ApiError(0, "connection refused")), "hf", "w")


def test_the_factory_checks_the_claim_and_gives_pods_the_job_redis_url(monkeypatch, capsys):
    from hyperpool.controller import api as api_module

    fake = ClaimApi(ApiError(404, "not found"))
    monkeypatch.setattr(api_module.KubeApi, "from_config", classmethod(lambda cls, _: fake))
    settings = Settings(redis_url="redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError, match="'work' not found in namespace 'hf'"):
        command.kubernetes_jobs(settings, None, "exec:1", "hf", work_dir=WORK,
                                volume_claim="work")
    fake.answer = {"status": {"phase": "Bound"}}
    factory = command.kubernetes_jobs(settings, None, "exec:1", "hf", work_dir=WORK,
                                      volume_claim="work", redis_url="redis://redis.hf:6379/0")
    assert capsys.readouterr().err == ""  # the pods' URL is not a loopback one
    engine = SimpleNamespace(client=None, stream="hf:done", run_id="r1")
    jobs = factory(engine)
    try:
        assert jobs.env == {"HYPERPOOL_REDIS_URL": "redis://redis.hf:6379/0",
                            "REDIS_URL": "redis://redis.hf:6379/0"}
        assert (jobs.work_dir, jobs.work_claim, jobs.work_host_path) == (WORK, "work", False)
    finally:
        jobs._stop.set()  # its scanner thread ends at its first wait
    command.kubernetes_jobs(settings, None, "exec:1", "hf", work_dir=WORK)
    assert "loopback" in capsys.readouterr().err


# -- reading a pod's log, through the real client against a local HTTP server ------------------


@pytest.fixture
def log_server():
    import http.server
    import threading

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            seen.append(self.path)
            if "/pods/gone/" in self.path:
                self.send_response(404)
                body = b'{"kind":"Status","message":"pods \\"gone\\" not found"}'
            else:
                self.send_response(200)
                body = b'{"level": "error"}\nhyperpool: error: Redis unreachable\n'
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()


def test_the_log_tail_is_read_as_text(log_server):
    from kubernetes import client

    from hyperpool.controller.api import KubeApi

    url, seen = log_server
    api = KubeApi(client.ApiClient(client.Configuration(host=url)))
    text = job_launcher.pod_log_tail(api, "ns", "p-1")
    assert text == '{"level": "error"}\nhyperpool: error: Redis unreachable\n'  # not parsed
    assert seen == ["/api/v1/namespaces/ns/pods/p-1/log?container=task&tailLines=20"]
    assert job_launcher.pod_log_tail(api, "ns", "gone") == ""


def test_a_job_whose_pod_cannot_be_created_fails_with_its_event_unless_the_quota_is_full():
    from hyperpool.controller.jobs import creation_failure

    refused = {"reason": "FailedCreate", "lastTimestamp": "2026-12-02T17:50:02Z", "message": (
        'Error creating: pods "hf-task-1-abcde" is forbidden: failed quota: pools: must '
        "specify limits.cpu,limits.memory,requests.cpu,requests.memory")}
    full = {"reason": "FailedCreate", "lastTimestamp": "2026-12-02T17:50:09Z", "message": (
        'Error creating: pods "hf-task-1-fghij" is forbidden: exceeded quota: pools, '
        "requested: requests.cpu=1, used: requests.cpu=4, limited: requests.cpu=4")}
    other = {"reason": "SuccessfulCreate", "lastTimestamp": "2026-12-02T17:50:10Z",
             "message": "Created pod: x"}
    failure = creation_failure("hf-task-1", [refused, other])
    assert failure is not None and failure.exit_code == 1
    assert failure.note.startswith("Job hf-task-1: its pod cannot be created: Error creating")
    assert "must specify limits.cpu" in failure.note
    assert creation_failure("hf-task-1", [refused, full]) is None  # the latest: quota full
    assert creation_failure("hf-task-1", [other]) is None


def test_job_resources_are_equal_requests_and_limits_and_typos_are_named():
    from hyperpool.engine.command import parse_job_resources

    assert parse_job_resources("cpu=250m,memory=256Mi") == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "250m", "memory": "256Mi"}}
    assert parse_job_resources(None) == {}
    for bad, where in [("gpu=1", "'gpu=1'"), ("cpu", "'cpu'"), ("cpu=lots", "cpu: not a")]:
        with pytest.raises(ConfigError, match=where):
            parse_job_resources(bad)
