"""``hyperpool pools up``, ``hyperpool status`` and the embedded pools, on the real services."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

from hyperpool.executor.publisher import Publisher
from hyperpool.local.embedded import local_pools
from hyperpool.local.state import KEY_PREFIX, read_states
from hyperpool.routing import Routing
from tests.conftest import hyperpool_env, queue_info, wait_for, worker_pool_yaml


def pool_yaml(name: str, task_type: str, max: int) -> str:
    return worker_pool_yaml(name, task_type, f"maxReplicaCount: {max}\n"
                            "initialResources:\n  requests: {cpu: 500m, memory: 256Mi}\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hyperpool(*args, env, timeout=60):
    return subprocess.run([sys.executable, "-m", "hyperpool", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def supervisor_of(redis_client, queue):
    for state in read_states(redis_client):
        for pool in state["pools"]:
            if pool["queue"] == queue:
                return state, pool
    return None


def test_pools_up_scales_shows_status_and_drains_on_sigterm(
        namespace, tmp_path, redis_client, stream):
    manifest = tmp_path / "pools.yaml"
    manifest.write_text(pool_yaml("sleepy", "sleepy", 2))
    env = hyperpool_env(namespace, tmp_path)
    log = tmp_path / "up.log"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperpool", "pools", "up", "-f", str(manifest),
         "--budget-cpu", "2", "--cooldown", "30", "--interval", "0.2",
         "--log-dir", str(tmp_path / "logs"), "--metrics-port", str(port)],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    queue = f"{namespace}.sleepy"
    try:
        wait_for(lambda: supervisor_of(redis_client, queue), timeout=20, what="supervisor state")
        # The task runs until the test releases it: it outlasts the checks below however
        # slow the machine is (a 6-s sleep once finished before /metrics was read).
        release = tmp_path / "release"
        stream.send(queue, "slow", executable="sh",
                    args=["-c", f"while [ ! -e '{release}' ]; do sleep 0.05; done"])
        state, row = wait_for(lambda: (found := supervisor_of(redis_client, queue))
                              and found[1]["busy"] == 1 and found, timeout=15,
                              what="a busy worker")
        assert state["pid"] == proc.pid and state["budget"]["cpu"] == "2"
        worker_pids = [w["pid"] for w in row["workers"]]

        shown = hyperpool("status", "--json", env=env)
        assert shown.returncode == 0, shown.stderr
        data = json.loads(shown.stdout)
        mine = [p for p in data["pools"] if p["queue"] == queue]
        assert len(mine) == 1 and mine[0]["name"] == "sleepy" and mine[0]["replicas"] == 1
        assert mine[0]["supervisor"] == state["id"]
        assert mine[0]["request"] == {"cpu": "500m", "memory": "256Mi"}
        human = hyperpool("status", env=env)
        assert human.returncode == 0 and "sleepy" in human.stdout and queue in human.stdout

        # One /metrics for the supervisor's gauges and its workers' task metrics.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            exported = resp.read().decode()
        assert f'hyperpool_pool_replicas{{namespace="{namespace}",pool="sleepy"}} 1.0' in exported
        assert re.search(rf'hyperpool_tasks_in_progress{{queue="{re.escape(queue)}"[^}}]*}} 1.0',
                         exported), exported

        proc.send_signal(signal.SIGTERM)  # drain: the running task finishes first
        time.sleep(1.0)
        assert proc.poll() is None, "pools up stopped before its running task finished"
        signalled = time.time()
        release.touch()
        result = stream.wait("slow", timeout=20)
        assert result.exit_code == 0 and result.finished >= signalled
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert "draining" in output and "stopped" in output
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                   for pid in worker_pids)
    assert supervisor_of(redis_client, queue) is None, "state removed on a clean exit"


def test_pools_up_without_pools_or_with_an_oversized_pool_fails_in_one_line(
        namespace, tmp_path):
    env = hyperpool_env(namespace, tmp_path)
    none = hyperpool("pools", "up", env=env)
    assert none.returncode == 2 and "no pools to run" in none.stderr
    big = tmp_path / "big.yaml"
    big.write_text(pool_yaml("big", "big", 1))
    refused = hyperpool("pools", "up", "-f", str(big), "--budget-cpu", "250m", env=env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "big.yaml: document 1: pool 'big': one worker requests cpu 500m" in refused.stderr
    # `pools validate` applies the same rule, with the same message (it once said OK, FIT 0).
    checked = hyperpool("pools", "validate", "-f", str(big), "--budget-cpu", "250m", env=env)
    assert checked.returncode == 2 and "Traceback" not in checked.stderr
    assert checked.stderr.splitlines()[-1] == refused.stderr.splitlines()[-1]
    assert "big" in checked.stdout, "the table is still shown"


def test_status_without_a_supervisor_reads_the_management_api(namespace, tmp_path, settings):
    publisher = Publisher(settings)
    try:
        publisher.ensure_queue(f"{namespace}.idle")
        publisher.publish(f"{namespace}.stuck", {"executable": "true", "taskId": "x:0:0"},
                          reply_to="nobody")
    finally:
        publisher.close()
    env = hyperpool_env(namespace, tmp_path)
    # The management API's statistics lag by up to 5 s.
    wait_for(lambda: (queue_info(f"{namespace}.stuck") or {}).get("messages_ready") == 1,
             timeout=30, what="the stranded message in the statistics")
    shown = hyperpool("status", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    rows = [p for p in json.loads(shown.stdout)["pools"] if p["queue"].startswith(namespace)]
    assert rows == [{"name": None, "queue": f"{namespace}.idle", "ready": 0, "unacked": 0,
                     "consumers": 0, "depth": 0, "replicas": None, "draining": None,
                     "desired": None, "dead": 0, "supervisor": None, "state": "idle"},
                    {"name": None, "queue": f"{namespace}.stuck", "ready": 1, "unacked": 0,
                     "consumers": 0, "depth": 1, "replicas": None, "draining": None,
                     "desired": None, "dead": 0, "supervisor": None, "state": "stranded"}]
    # People see the stranded queue with advice; the idle one (an earlier run's) is counted.
    human = hyperpool("status", env=env)
    assert f"{namespace}.stuck" in human.stdout and "stranded" in human.stdout
    assert f"{namespace}.idle" not in human.stdout
    assert "1 idle queue (no messages, no consumers: left from earlier runs) not shown" in (
        human.stdout)
    assert "start their pools" in human.stdout
    assert f"{namespace}.idle" in hyperpool("status", "--all", env=env).stdout

    down = hyperpool("status", env={**env, "HYPERPOOL_MANAGEMENT_URL": "http://127.0.0.1:9",
                                    "HYPERPOOL_REDIS_URL": "redis://127.0.0.1:9/0"})
    assert down.returncode == 3 and "Traceback" not in down.stderr
    assert "cannot reach the RabbitMQ management API" in down.stderr
    # A broker URL nobody answers: no queue depths of the management API's own broker.
    other = hyperpool("status", env={**env, "HYPERPOOL_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//",
                                     "HYPERPOOL_MANAGEMENT_URL": "http://127.0.0.1:15672",
                                     "HYPERPOOL_CONNECT_TIMEOUT": "2"})
    assert other.returncode == 3 and "Traceback" not in other.stderr
    assert "cannot reach RabbitMQ at amqp://guest:****@127.0.0.1:1//" in other.stderr
    assert namespace not in other.stdout


def test_status_watch_into_a_pipe_prints_each_refresh(namespace, tmp_path, settings):
    publisher = Publisher(settings)
    try:
        publisher.ensure_queue(f"{namespace}.idle")
    finally:
        publisher.close()
    env = hyperpool_env(namespace, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "hyperpool", "status", "--all",
                             "--watch", "0.5"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 30
        while sum(line.startswith("--- ") for line in lines) < 2 and time.monotonic() < deadline:
            lines.append(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()
    assert sum(line.startswith("--- ") for line in lines) >= 2, lines
    assert any(f"{namespace}.idle" in line for line in lines)


def test_embedded_pools_run_in_the_work_dir_and_drain_on_exit(
        namespace, tmp_path, settings, redis_client, stream):
    work_dir = tmp_path / "wf"
    work_dir.mkdir()
    manifest = tmp_path / "pools.yaml"
    manifest.write_text(pool_yaml("custom", "where", 1))
    routing = Routing(namespace, {"where": f"{namespace}.where", "other": f"{namespace}.other"})
    with local_pools(settings, routing, work_dir, [manifest], cooldown=1.0,
                     budget_cpu="2") as sup:
        assert sup is not None
        by_type = {p.config.task_type: p.config for p in sup.pools}
        assert by_type["where"].name == "custom" and by_type["where"].max_replicas == 1
        assert by_type["other"].max_replicas == 50  # no manifest: defaults
        stream.send(f"{namespace}.where", "where", executable="sh",
                    args=["-c", "pwd; echo $HYPERPOOL_WORK_DIR"], stdout="where.txt")
        result = stream.wait("where")
        procs = [w.proc for p in sup.pools for w in p.workers]
        assert procs and redis_client.exists(KEY_PREFIX + sup.listeners[0].ident)
    assert result.exit_code == 0
    assert (work_dir / "where.txt").read_text() == f"{work_dir}\n{work_dir}\n"
    assert list((work_dir / "logs-hf" / "pools").glob("custom.*.log"))
    assert all(p.poll() is not None for p in procs), "drained on exit"
    assert not redis_client.exists(KEY_PREFIX + sup.listeners[0].ident)


def test_embedded_pools_leave_queues_another_supervisor_scales(
        namespace, tmp_path, settings, redis_client):
    queue = f"{namespace}.taken"
    key = f"{KEY_PREFIX}elsewhere:1:{namespace}"
    redis_client.set(key, json.dumps({"id": "elsewhere:1:x", "started": 0,
                                      "pools": [{"queue": queue}]}), ex=30)
    try:
        with local_pools(settings, Routing(namespace, {"taken": queue}), tmp_path) as sup:
            assert sup is None
    finally:
        redis_client.delete(key)
    with local_pools(settings, Routing(namespace, {}), tmp_path) as sup:
        assert sup is None, "no pooled task types, nothing to run"
    # A supervisor of this host that was SIGKILLed (its key not yet expired) does not count.
    gone = subprocess.Popen(["true"])
    gone.wait()
    redis_client.set(key, json.dumps({"id": f"{socket.gethostname()}:{gone.pid}:x",
                                      "host": socket.gethostname(), "pid": gone.pid,
                                      "started": 0, "pools": [{"queue": queue}]}), ex=30)
    with local_pools(settings, Routing(namespace, {"taken": queue}), tmp_path) as sup:
        assert sup is not None and [p.config.queue for p in sup.pools] == [queue]
    assert not redis_client.exists(key)


def test_interrupted_embedded_pools_kill_stragglers_with_their_tasks(
        namespace, tmp_path, settings, stream):
    marker = f"{30 + uuid.uuid4().int % 1000 / 1000:.3f}"  # a unique `sleep` argument
    routing = Routing(namespace, {"stuck": f"{namespace}.stuck"})
    started = None
    with pytest.raises(KeyboardInterrupt), local_pools(
            settings, routing, Path(tmp_path), cooldown=1.0, interrupted_drain_timeout=1.0):
        stream.send(f"{namespace}.stuck", "stuck", executable="sleep", args=[marker])
        wait_for(lambda: any(p.info["cmdline"] == ["sleep", marker]
                             for p in psutil.process_iter(["cmdline"])),
                 timeout=15, what="the task process")
        started = time.monotonic()
        raise KeyboardInterrupt
    assert time.monotonic() - started < 8
    leftovers = [p for p in psutil.process_iter(["cmdline", "status"])
                 if p.info["cmdline"] == ["sleep", marker] and p.info["status"] != "zombie"]
    assert leftovers == [], "the task's own session was killed too"
