"""Pool workers as containers (``--runtime docker``), through the Docker SDK.

Each replica is a container of the pool's ``spec.image`` running ``hyperpool worker`` (the
entrypoint is set, so an image's own ENTRYPOINT does not matter), with the limits of
``initialResources.limits`` (its requests where it states none) as CPU quota and memory
limit, the work dir bind-mounted at the same path (task messages name it), the host's network
(the broker and Redis at the addresses the supervisor uses), the invoking user's uid:gid (so
files in the work dir belong to whoever ran the command), no capabilities and a read-only
root. Everything else is the process runtime's: same formula, budget and rules.

* **Stop** is ``SIGTERM`` to the container (Celery's warm shutdown; the running task
  finishes), sent without waiting: the supervisor's loop sees the exit on a later tick.
* **Busy** works as for processes: the container's main process has a host PID, and the
  task's command is its child (:func:`hyperpool.local.workers.refresh_busy`).
* **Exits**: a container that exits on its own is reported with its exit code, whether the
  kernel OOM-killed it, and its last log lines; it is then removed. Its unacknowledged message
  is redelivered by the broker (acks late), so the task is not lost.
* **Before anything starts**, each image is checked: present here, and able to run
  ``hyperpool`` (an image of another executor, such as HyperFlow's own AMQP executor images,
  would otherwise crash-loop). A daemon that does not answer is one line naming its socket.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from pathlib import Path
from typing import Any

import psutil

from hyperpool.errors import ConfigError, ServiceUnavailable
from hyperpool.local.budget import Resources
from hyperpool.local.manifests import PoolConfig
from hyperpool.local.workers import Worker, worker_env
from hyperpool.settings import Settings

DEFAULT_IMAGE = "hyperpool/executor-generic:latest"
LABEL = "io.hyperpool.supervisor-pid"  # which supervisor started it (stale ones are removed)
_sequence = itertools.count(1)


class ContainerWorker(Worker):
    """One worker container of a pool."""

    def __init__(self, pool: str, container: Any, limits: Resources):
        super().__init__(pool)
        self.container = container
        self.limits = limits
        container.reload()
        self.pid = int(container.attrs["State"]["Pid"] or 0)

    def poll(self) -> int | None:
        """The exit code once the container has exited (it is then removed), else None."""
        import docker.errors

        try:
            self.container.reload()
        except docker.errors.NotFound:
            return -1
        state = self.container.attrs["State"]
        if state["Status"] not in ("exited", "dead"):
            return None
        code = int(state["ExitCode"])
        if not self.draining:
            self.oom_killed = bool(state.get("OOMKilled"))
            if self.oom_killed:
                self.exit_note = f"OOM-killed: over its limits ({self.limits.describe()})"
            self.exit_log = self.container.logs(tail=5).decode(errors="replace").strip()
        with contextlib.suppress(docker.errors.APIError):
            self.container.remove(force=True)
        return code

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), without waiting for it."""
        self._mark_draining()
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the running task's message is redelivered."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.APIError):
            self.container.kill(signal=int(sig))

    def describe(self, now: float) -> dict[str, object]:
        return {"pid": self.pid, "container": self.container.name,
                "age_seconds": round(self.age(now), 1),
                "state": "draining" if self.draining else "running", "busy": self.busy,
                "log": None}


class ContainerRuntime:
    """Starts workers as containers; checks the daemon and the images up front."""

    def __init__(self, default_image: str = DEFAULT_IMAGE):
        self.default_image = default_image
        self.client = docker_client()
        self._remove_stale()

    def image_of(self, pool: PoolConfig) -> str:
        return pool.image or self.default_image

    def check(self, pools: list[PoolConfig]) -> None:
        """Refuse images that are missing or cannot run ``hyperpool``, naming them."""
        for image in sorted({self.image_of(p) for p in pools}):
            check_image(self.client, image, next(p.source for p in pools
                                                 if self.image_of(p) == image))

    def start(self, pool: PoolConfig, *, settings: Settings, work_dir: Path,
              loglevel: str = "INFO") -> ContainerWorker:
        limits = pool.limits or pool.request
        env = worker_env(settings, pool.queue, work_dir, base={})
        container = self.client.containers.run(
            self.image_of(pool),
            ["worker", "--queue", pool.queue, "--concurrency", str(pool.concurrency),
             "--loglevel", loglevel],
            name=f"hyperpool-{pool.name}-{os.getpid()}-{next(_sequence)}",
            labels={LABEL: str(os.getpid()), "io.hyperpool.pool": pool.name}, environment=env,
            nano_cpus=int(limits.cpu * 1_000_000_000), mem_limit=int(limits.memory),
            memswap_limit=int(limits.memory),  # no swap: over the limit is an OOM kill
            **run_options(work_dir))
        return ContainerWorker(pool.name, container, limits)

    def _remove_stale(self) -> None:
        """Containers of supervisors that are gone (killed outright): running ones get a warm
        stop, exited ones are removed."""
        import docker.errors

        for container in self.client.containers.list(all=True, filters={"label": LABEL}):
            pid = int(container.labels.get(LABEL, "0") or 0)
            if not pid or psutil.pid_exists(pid):
                continue
            with contextlib.suppress(docker.errors.APIError):
                if container.status == "running":
                    container.kill(signal=int(signal.SIGTERM))
                else:
                    container.remove()


def run_options(work_dir: Path) -> dict[str, Any]:
    """How every container of hyperpool's runs (workers and jobs alike): ``hyperpool`` as its
    entrypoint, detached, the host's network, the work dir at its own path, the caller's
    uid:gid, a read-only root with a private /tmp, no capabilities."""
    return {"entrypoint": ["hyperpool"], "detach": True, "network_mode": "host",
            "volumes": {str(work_dir): {"bind": str(work_dir), "mode": "rw"}},
            "working_dir": str(work_dir), "user": f"{os.getuid()}:{os.getgid()}",
            "read_only": True, "tmpfs": {"/tmp": "rw,size=256m"}, "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"]}


def docker_client() -> Any:
    """A Docker client whose daemon answers, else one line naming the socket."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as exc:
        socket = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise ServiceUnavailable(f"cannot reach the Docker daemon at {socket}: {exc}; start it "
                                 "(`make docker` does) or set DOCKER_HOST") from None
    return client


def check_image(client: Any, image: str, source: str) -> None:
    """Refuse an image that is not here or cannot run ``hyperpool`` (HyperFlow's own executor
    images, a bare OS image): a worker or job in it would only crash, again and again."""
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise ConfigError(f"image {image!r} is not on this machine: build it (`make images` "
                          f"builds hyperpool's) or `docker pull {image}`", source=source) from None
    try:
        client.containers.run(image, ["--help"], entrypoint=["hyperpool"], remove=True,
                              network_disabled=True)
        return
    except docker.errors.ContainerError as exc:
        why = (exc.stderr or b"").decode(errors="replace").strip()[-200:] or str(exc)
    except docker.errors.APIError as exc:  # e.g. "executable file not found in $PATH"
        why = str(exc.explanation)
    raise ConfigError(f"image {image!r} cannot run `hyperpool` ({why}): workers and jobs run "
                      "`hyperpool` in it; build it FROM hyperpool/executor-generic or pip install "
                      "hyperpool in it", source=source)

