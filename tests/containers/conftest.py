"""The project's images, run for real on the machine's Docker (``make test`` builds them first).

Containers use the host's network, so they reach the machine's own RabbitMQ and Redis at
127.0.0.1 as the tests do; each test's work dir is bind-mounted at /work and made writable
for uid 1000, the user every image runs as. Containers are removed after each test, also when
it fails.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from hyperpool.settings import Settings

TAG = os.environ.get("HYPERPOOL_IMAGE_TAG", "latest")
GENERIC = f"hyperpool/executor-generic:{TAG}"
MONTAGE = f"hyperpool/executor-montage:{TAG}"
OPERATOR = f"hyperpool/operator:{TAG}"
# What the controller's pods are allowed (hyperpool/controller/workload.py), and a read-only
# root: nothing but /work and /tmp is written.
RESTRICTED: dict[str, Any] = {"user": "1000:1000", "read_only": True, "cap_drop": ["ALL"],
                              "security_opt": ["no-new-privileges"],
                              "tmpfs": {"/tmp": "rw,size=64m"}}


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker daemon answers ({exc}): `make test` starts one "
                    "(configs/docker.sh); the image tests need it", pytrace=False)
    missing = [i for i in (GENERIC, MONTAGE, OPERATOR) if not client.images.list(name=i)]
    if missing:
        pytest.fail(f"images not built: {', '.join(missing)}; run `make images` (make test "
                    "does)", pytrace=False)
    return client


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A work dir the containers' uid 1000 may write."""
    path = tmp_path / "work"
    path.mkdir()
    path.chmod(0o777)
    return path


@pytest.fixture
def run_container(docker_client: docker.DockerClient, work: Path, settings: Settings
                  ) -> Iterator[Callable[..., Any]]:
    """Start a detached container with the broker, Redis and /work of the test."""
    started: list[Any] = []

    def run(image: str, command: list[str], **options: Any) -> Any:
        env = {"HYPERPOOL_BROKER_URL": settings.broker_url,
               "HYPERPOOL_REDIS_URL": settings.redis_url,
               "HYPERPOOL_NAMESPACE": settings.namespace, **options.pop("environment", {})}
        container = docker_client.containers.run(
            image, command, detach=True, network_mode="host", environment=env,
            volumes={str(work): {"bind": "/work", "mode": "rw"}}, **options)
        started.append(container)
        return container

    yield run
    for container in started:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
