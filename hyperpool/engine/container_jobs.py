"""The job model in containers (``--job-model docker``): one container per task.

The local job model's contract with a container around it: each task is ``hyperpool execute``
in a fresh container of ``--job-image`` (checked before the run starts), which reports to the
run's stream as a job process does; a thread waits for the container and appends its exit to
the stream, so a job that dies is seen as one that crashed. Containers run as pool workers'
do (:func:`hyperpool.local.containers.run_options`) and are removed once they exited. A
container cannot be adopted by ``--resume`` (its task is dispatched again instead).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
from pathlib import Path
from typing import Any

import redis

from hyperpool.engine.jobs import JobLauncher
from hyperpool.local.containers import check_image, docker_client, run_options
from hyperpool.settings import Settings

_sequence = itertools.count(1)


class ContainerJobLauncher(JobLauncher):
    """Runs each job-model task in a container of ``image``."""

    def __init__(self, settings: Settings, client: redis.Redis, stream: str, work_dir: Path,
                 run_id: str, image: str):
        super().__init__(settings, client, stream, work_dir, run_id)
        self.image = image
        self.docker = docker_client()
        check_image(self.docker, image, "--job-image")
        self._containers: dict[str, Any] = {}

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._containers)

    def start(self, task_id: str, message: dict[str, object], attempt: int) -> None:
        env = {"HYPERPOOL_REDIS_URL": self.settings.redis_url,
               "HYPERPOOL_WORK_DIR": str(self.work_dir), "PYTHONUNBUFFERED": "1"}
        container = self.docker.containers.run(
            self.image, ["execute", "--message-json", json.dumps(message), "--reply-to",
                         self.stream, "--attempt", str(attempt), "--run-id", self.run_id],
            name=f"hyperpool-job-{os.getpid()}-{next(_sequence)}", environment=env,
            labels={"io.hyperpool.run": self.run_id}, **run_options(self.work_dir))
        with self._lock:
            self._containers[f"{task_id}#{attempt}"] = container
        threading.Thread(target=self._wait_container, args=(task_id, attempt, container),
                         daemon=True, name=f"job-{task_id}").start()

    def finished(self, task_id: str) -> None:
        """The engine has the task's result: remove its container now (it is exiting), so
        that none is left when the run ends before the waiting thread gets to it."""
        import docker.errors

        with self._lock:
            keys = [k for k in self._containers if k.rsplit("#", 1)[0] == task_id]
            done = [self._containers.pop(k) for k in keys]
        for container in done:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)

    def adopt(self, task_id: str, record: str) -> int | None:
        return None

    def _wait_container(self, task_id: str, attempt: int, container: Any) -> None:
        import docker.errors

        try:
            code = int(container.wait()["StatusCode"])
        except (docker.errors.DockerException, OSError):
            code = -1
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)
        with self._lock:
            self._containers.pop(f"{task_id}#{attempt}", None)
        self._exited(task_id, attempt, code)

    def terminate_all(self, grace: float = 5.0) -> int:
        """``docker stop`` every running job: SIGTERM, SIGKILL after ``grace``."""
        import docker.errors

        self._stopping = True
        with self._lock:
            containers = list(self._containers.values())
        for container in containers:
            with contextlib.suppress(docker.errors.DockerException):
                container.stop(timeout=int(grace))
        return len(containers)
