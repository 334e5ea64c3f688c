"""``docker compose up`` runs the Montage example for real, as the README tells users to.

The stack (RabbitMQ, Redis, Prometheus, the pool supervisor, the example and the engine) comes
up under a project name of its own, on host ports that are free (this machine's own services
hold 5672, 6379, 15672, 15692), with the work dir bind-mounted from the test's directory, and
goes down with its containers, networks and volumes whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid

from tests.conftest import REPO

COMPOSE_TIMEOUT = 600
SCALED = re.compile(r"pool (\S+): (\d+) -> (\d+) workers")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def compose(project: str, env: dict[str, str], *args: str,
            timeout: float = COMPOSE_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "compose", "-p", project, "-f",
                           str(REPO / "docker-compose.yml"), *args],
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_docker_compose_up_runs_the_montage_example_to_a_mosaic(docker_client, work):
    project = f"hptest{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, HYPERPOOL_WORK=str(work), HYPERPOOL_COOLDOWN="5",
               HYPERPOOL_RABBITMQ_PORT=str(free_port()),
               HYPERPOOL_RABBITMQ_UI_PORT=str(free_port()),
               HYPERPOOL_RABBITMQ_METRICS_PORT=str(free_port()),
               HYPERPOOL_PROMETHEUS_PORT=str(free_port()))
    try:
        up = compose(project, env, "up", "--detach", "--no-build")
        assert up.returncode == 0, up.stderr[-3000:]
        waited = compose(project, env, "wait", "engine")
        assert waited.returncode == 0 and waited.stdout.strip().endswith("status code 0"), (
            waited.stderr + compose(project, env, "logs", "--tail", "40").stdout[-6000:])
        summary = json.loads((work / "summary.json").read_text())
        assert summary["failed"] == 0 and summary["succeeded"] == summary["tasks_total"] > 40
        checked = subprocess.run(
            [sys.executable, str(REPO / "examples" / "montage" / "check_mosaic.py"), str(work)],
            capture_output=True, text=True, timeout=120)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert (work / "mosaic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # The pools scaled from zero when the tasks came, and back to zero after the cooldown.
        deadline = time.monotonic() + 90
        while True:
            pools = compose(project, env, "logs", "--no-color", "pools").stdout
            # the supervisor's "pool NAME: FROM -> TO workers" lines
            moves = [(m[1], int(m[2]), int(m[3])) for m in SCALED.finditer(pools)]
            scaled = {name for name, before, _ in moves if before == 0}
            zeroed = {name for name, _, after in moves if after == 0}
            if scaled and scaled <= zeroed or time.monotonic() > deadline:
                break
            time.sleep(2)
        # configs/pools.yaml's three pools
        assert scaled >= {"mproject", "mdifffit", "mbackground"}, pools[-4000:]
        assert zeroed >= scaled, f"not back to zero: {scaled - zeroed}\n{pools[-4000:]}"
    finally:
        down = compose(project, env, "down", "--volumes", "--remove-orphans", "--timeout", "10")
        left = docker_client.containers.list(all=True, filters={
            "label": f"com.docker.compose.project={project}"})
        networks = docker_client.networks.list(filters={
            "label": f"com.docker.compose.project={project}"})
    assert down.returncode == 0, down.stderr
    assert left == [] and networks == []

