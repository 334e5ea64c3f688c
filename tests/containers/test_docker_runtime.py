"""Local pools as containers (``--runtime docker``): same scaling, workers in their images.

A workflow runs through container pools; a worker container SIGKILLed mid-task has its task
redelivered and counted once; a task over its container's memory limit is reported as
OOM-killed; images that are missing or cannot run ``hyperpool`` are refused before anything
starts, in one line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from hyperpool.local.containers import LABEL
from tests.conftest import hyperpool_env, wait_for, worker_pool_yaml
from tests.containers.conftest import GENERIC


def manifest(tmp_path, name="box", task_type="box", image=GENERIC, max=2, memory="256Mi"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(worker_pool_yaml(name, task_type, f"""\
image: {image}
maxReplicaCount: {max}
initialResources:
  requests: {{cpu: 250m, memory: 64Mi}}
  limits: {{cpu: 500m, memory: {memory}}}
"""))
    return path


def pools_up(path, work, namespace) -> subprocess.Popen[str]:
    """``hyperpool pools up --runtime docker`` in the background (stop it with SIGTERM)."""
    return subprocess.Popen(
        [sys.executable, "-m", "hyperpool", "pools", "up", "--runtime", "docker", "-f", str(path),
         "--workdir", str(work), "--cooldown", "30", "--interval", "0.2"],
        env=hyperpool_env(namespace, work), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def containers_of(docker_client, pool: str) -> list:
    return docker_client.containers.list(all=True, filters={
        "label": [LABEL, f"io.hyperpool.pool={pool}"]})


def test_a_workflow_runs_through_container_pools(docker_client, work, namespace, tmp_path):
    processes = [{"name": "box", "ins": [0], "outs": [], "config": {"executor": {
        "executable": "sh", "args": ["-c", f"id -u > uid.{i}; cat /proc/1/cgroup > cg.{i}"]}}}
        for i in range(4)]
    (work / "workflow.json").write_text(json.dumps(
        {"processes": processes, "signals": [{"name": "go", "data": [{}]}]}))
    (work / "workflow.config.executionModels.json").write_text(json.dumps([{"name": "box"}]))
    run = subprocess.run(
        [sys.executable, "-m", "hyperpool", "run", str(work), "--runtime", "docker",
         "--pools", str(manifest(tmp_path, name=f"box{namespace}")), "--cooldown", "1"],
        env=hyperpool_env(namespace, work), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    # as the user who ran the command, so the work dir's files are theirs
    assert all((work / f"uid.{i}").read_text().strip() == str(os.getuid()) for i in range(4))
    # they ran in containers (a cgroup of their own), not on the host
    assert all("docker" in (work / f"cg.{i}").read_text() for i in range(4))
    assert containers_of(docker_client, f"box{namespace}") == [], "containers left behind"


def test_a_killed_worker_container_has_its_task_redelivered_and_counted_once(
        docker_client, work, namespace, tmp_path, stream):
    pool = f"kill{namespace}"
    queue = f"{namespace}.kill"
    up = pools_up(manifest(tmp_path, name=pool, task_type="kill", max=1), work, namespace)
    try:
        stream.send(queue, "victim", executable="sh",
                    args=["-c", "echo try >> tries; sleep 4; echo ok > done"])
        wait_for(lambda: (work / "tries").exists(), timeout=120, what="the first attempt")
        (first,) = [c for c in containers_of(docker_client, pool) if c.status == "running"]
        first.kill(signal=int(signal.SIGKILL))  # as an OOM kill or a lost node would
        result = stream.wait("victim", timeout=120)
        assert result.exit_code == 0 and (work / "done").exists()
        assert (work / "tries").read_text().count("try") == 2, "redelivered once"
        time.sleep(1.0)
        assert [r for r in stream.reader.read(block_ms=500) if r.task_id == "victim"] == []
    finally:
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0, out
    assert "exited unexpectedly with code 137" in out, out
    assert containers_of(docker_client, pool) == [], "containers left behind"


def test_a_task_over_its_memory_limit_is_reported_as_oom_killed(
        docker_client, work, namespace, tmp_path, stream):
    pool = f"oom{namespace}"
    queue = f"{namespace}.oom"
    up = pools_up(manifest(tmp_path, name=pool, task_type="oom", max=1, memory="256Mi"), work,
                  namespace)
    try:
        # Far over the limit, so that the task, not its worker (~60 MB), is the largest
        # process in the container when the kernel picks whom to kill.
        stream.send(queue, "hog", executable="python3",
                    args=["-c", "b = bytearray(800 * 2**20)\nfor i in range(0, len(b), 4096):\n"
                                "    b[i] = 1"])
        result = stream.wait("hog", timeout=120)
    finally:
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=60)
    assert result.exit_code == 137
    assert result.error and result.error.startswith("OOM-killed"), (result.error, out)


def test_missing_or_foreign_images_are_refused_before_anything_starts(
        docker_client, work, namespace, tmp_path):
    env = hyperpool_env(namespace, work)

    def refused(image: str, **extra: str) -> subprocess.CompletedProcess[str]:
        path = manifest(tmp_path, name=f"p{abs(hash(image)) % 1000}", image=image)
        done = subprocess.run([sys.executable, "-m", "hyperpool", "pools", "up", "--runtime",
                               "docker", "-f", str(path)], env={**env, **extra},
                              capture_output=True, text=True, timeout=120)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, (
            done.stderr)
        return done

    missing = refused("hyperpool/no-such-image:1")
    assert missing.returncode == 2
    assert "image 'hyperpool/no-such-image:1' is not on this machine" in missing.stderr
    foreign = refused("debian:bookworm-slim")
    assert foreign.returncode == 2
    assert "image 'debian:bookworm-slim' cannot run `hyperpool`" in foreign.stderr
    down = refused(GENERIC, DOCKER_HOST="unix:///nonexistent.sock")
    assert down.returncode == 3
    assert "cannot reach the Docker daemon at unix:///nonexistent.sock" in down.stderr


def test_the_job_model_runs_each_task_in_a_container(docker_client, work, namespace):
    processes = [{"name": f"step{i}", "ins": [i], "outs": [i + 1], "config": {"executor": {
        "executable": "sh", "args": ["-c", f"cat /proc/1/cgroup > cg.{i}; echo {i} >> order"]}}}
        for i in range(3)]
    signals = [{"name": f"s{i}"} for i in range(4)]
    (work / "workflow.json").write_text(json.dumps(
        {"processes": processes, "signals": signals, "ins": [0]}))
    before = {c.id for c in docker_client.containers.list(
        all=True, filters={"label": "io.hyperpool.run"})}  # other runs' (none, normally)
    run = subprocess.run(
        [sys.executable, "-m", "hyperpool", "run", str(work), "--job-model", "docker",
         "--job-image", GENERIC],
        env=hyperpool_env(namespace, work), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (work / "order").read_text().split() == ["0", "1", "2"]
    assert all("docker" in (work / f"cg.{i}").read_text() for i in range(3))
    left = {c.id for c in docker_client.containers.list(
        all=True, filters={"label": "io.hyperpool.run"})} - before
    assert left == set(), "job containers left behind"
    refused = subprocess.run(
        [sys.executable, "-m", "hyperpool", "run", str(work), "--job-model", "docker",
         "--job-image", "debian:bookworm-slim"],
        env=hyperpool_env(namespace, work), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--job-image: image 'debian:bookworm-slim' cannot run `hyperpool`" in refused.stderr


def test_containers_of_a_killed_supervisor_are_stopped_by_the_next_one(
        docker_client, work, namespace, tmp_path, stream):
    """A supervisor SIGKILLed outright cannot stop its containers; the next supervisor on the
    machine does (a warm stop), so they do not consume for ever."""
    from hyperpool.local.containers import ContainerRuntime

    pool = f"orphan{namespace}"
    queue = f"{namespace}.orphan"
    up = pools_up(manifest(tmp_path, name=pool, task_type="orphan", max=1), work, namespace)
    stream.send(queue, "wake", executable="true")
    assert stream.wait("wake", timeout=120).exit_code == 0
    up.kill()
    up.wait(timeout=30)
    (orphan,) = containers_of(docker_client, pool)
    assert orphan.status == "running"
    ContainerRuntime()
    wait_for(lambda: (orphan.reload(), orphan.status)[1] == "exited", timeout=60,
             what="the orphan's warm stop")
    assert orphan.attrs["State"]["ExitCode"] == 0
    ContainerRuntime()  # and the next one removes what has exited
    assert containers_of(docker_client, pool) == []
