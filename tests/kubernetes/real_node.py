"""Fixtures for the test cluster's real node (k8s/testcluster/real-node.sh): pods that run.

* ``node_ip``: the real node's InternalIP (docker's bridge gateway), read from the API.
* ``node_services``: RabbitMQ and Redis for the pods, as containers of this project's images
  (``make images``) with their ports published on the node's address. The machine's own
  RabbitMQ and Redis listen on 127.0.0.1 only, which pods on docker's bridge cannot reach;
  changing those services' listeners would change the machine every other test runs on. So
  the engine and the pods share these two, under one address, as a cluster's pods would
  reach a broker outside the cluster through an address the node routes: the WorkerPool's
  ``rabbitHostname``/``redisUrl``. No host networking: the pods stay on their own network.
* ``real_namespace``: a namespace whose pods go to the real node, chosen by the namespace's
  PodNodeSelector and PodTolerationRestriction annotations, so manifests stay unchanged.
* ``shared_work``: a work dir the pods' uid 1000 may write, for a hostPath volume at the same
  path as the engine's (task messages name absolute paths).
"""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import kombu
import pytest
import redis

from hyperpool.controller import naming
from hyperpool.controller.api import KubeApi

REAL_NODE_LABEL = "hyperpool.test/real-node"
TOLERATION = {"key": REAL_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}
BROKER_IMAGE = "hyperpool/rabbitmq:latest"
REDIS_IMAGE = "hyperpool/redis:latest"


@dataclass(frozen=True)
class NodeServices:
    """Broker and Redis reachable alike from this machine and from the real node's pods."""

    node_ip: str
    broker_url: str
    redis_url: str
    rabbit_hostname: str  # the WorkerPool's spec.rabbitHostname for these pods


def _kubectl(kubeconfig: str, *args: str):
    from tests.kubernetes.identity import kubectl

    return kubectl(kubeconfig, *args)


def _wait(check, *, timeout: float, what: str) -> None:
    from tests.kubernetes.conftest import wait_for

    def ok() -> bool:
        try:
            check()
            return True
        except Exception:  # noqa: BLE001 - not up yet, whatever the client says
            return False

    wait_for(ok, timeout=timeout, interval=0.5, what=what)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def node_ip(api: KubeApi) -> str:
    nodes = api.request("GET", f"/api/v1/nodes?labelSelector={REAL_NODE_LABEL}%3Dtrue")
    for node in nodes.get("items") or []:
        for address in node["status"].get("addresses") or []:
            if address["type"] == "InternalIP":
                return address["address"]
    pytest.fail("the cluster has no real node (label hyperpool.test/real-node=true): "
                "k8s/testcluster/up.sh starts one unless HYPERPOOL_K8S_REAL_NODE=0",
                pytrace=False)


@contextlib.contextmanager
def run_node_services(client: docker.DockerClient, node_ip: str,
                      prefix: str = "hp-node") -> Iterator[NodeServices]:
    """RabbitMQ and Redis containers with their ports on ``node_ip``, removed afterwards
    (the ``node_services`` fixture; bench/kubernetes.py uses it too)."""
    tag = uuid.uuid4().hex[:6]
    broker_port, redis_port = _free_port(node_ip), _free_port(node_ip)
    started = []
    try:
        started.append(client.containers.run(
            BROKER_IMAGE, detach=True, name=f"{prefix}-broker-{tag}",
            ports={"5672/tcp": (node_ip, broker_port)}))
        started.append(client.containers.run(
            REDIS_IMAGE, detach=True, name=f"{prefix}-redis-{tag}",
            ports={"6379/tcp": (node_ip, redis_port)}))
        broker = f"amqp://guest:guest@{node_ip}:{broker_port}//"
        services = NodeServices(node_ip=node_ip, broker_url=broker,
                                redis_url=f"redis://{node_ip}:{redis_port}/0",
                                rabbit_hostname=broker)

        def broker_up() -> None:
            with kombu.Connection(services.broker_url, connect_timeout=2) as conn:
                conn.connect()

        _wait(broker_up, timeout=90, what=f"RabbitMQ in {BROKER_IMAGE} on {node_ip}")
        _wait(lambda: redis.Redis.from_url(services.redis_url, socket_timeout=2).ping(),
              timeout=30, what=f"Redis in {REDIS_IMAGE} on {node_ip}")
        yield services
    finally:
        for container in started:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


@pytest.fixture(scope="session")
def node_services(node_ip: str) -> Iterator[NodeServices]:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker daemon answers ({exc}): `make test` starts one", pytrace=False)
    with run_node_services(client, node_ip) as services:
        yield services


def create_real_namespace(api: KubeApi, prefix: str = "hp-real") -> str:
    """A namespace whose pods are placed on the real node by admission (see module doc)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    annotations = {
        "scheduler.alpha.kubernetes.io/node-selector": f"{REAL_NODE_LABEL}=true",
        "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps([TOLERATION]),
    }
    api.request("POST", "/api/v1/namespaces", body={
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "annotations": annotations}})
    return name


@pytest.fixture
def real_namespace(api: KubeApi, operator) -> Iterator[str]:
    name = create_real_namespace(api)
    yield name
    api.delete("v1", "Namespace", None, name)


def diagnose(api, kubeconfig: str, system: str | None, pools: str) -> str:
    """What a failed wait needs: the pools' status, their pods' states, the operator's log
    (when it runs in a pod in ``system``)."""
    lines = []
    for pool in api.list(naming.API_VERSION, naming.KIND, pools):
        lines.append(f"pool {pool['metadata']['name']}: {pool.get('status')}")
    for ns in filter(None, (pools, system)):
        for pod in api.list("v1", "Pod", ns):
            lines.append(f"pod {ns}/{pod['metadata']['name']}: {pod['status'].get('phase')} "
                         f"{pod['status'].get('containerStatuses')}")
    for pod in api.list("v1", "Pod", system) if system else []:
        out = _kubectl(kubeconfig, "-n", system, "logs", pod["metadata"]["name"], "--tail", "40")
        lines.append(out.stdout + out.stderr)
    return "\n".join(lines)


@pytest.fixture
def shared_work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    path.chmod(0o777)
    return path
