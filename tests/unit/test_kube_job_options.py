"""The Kubernetes job model's options, claim check, log reading and FailedCreate reports
(the Job and pod status parts are in test_kube_jobs.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hyperpool.controller import job_launcher
from hyperpool.controller.api import ApiError
from hyperpool.controller.jobs import (
    check_volume_claim,
)
from hyperpool.engine import command
from hyperpool.engine.command import check_job_options, unreachable_from_pods
from hyperpool.errors import ConfigError, ServiceUnavailable
from hyperpool.settings import Settings

WORK = "/data/runs/montage"


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
