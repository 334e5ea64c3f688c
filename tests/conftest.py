"""Shared fixtures: real RabbitMQ and Redis, unique queue names, real worker processes."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from hyperpool.executor.publisher import Publisher
from hyperpool.executor.results import ResultReader, run_stream
from hyperpool.models import TaskMessage
from hyperpool.services import broker_connection
from hyperpool.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
MGMT = "http://127.0.0.1:15672/api"


WORKER_POOL = """\
apiVersion: hyperflow.agh.edu.pl/v1
kind: WorkerPool
metadata:
  name: {name}
spec:
  taskType: {task_type}
{extra}"""


def worker_pool_yaml(name: str = "mproject", task_type: str = "mProject", extra: str = "") -> str:
    """A WorkerPool manifest; ``extra``: more lines of its spec (YAML, unindented)."""
    return WORKER_POOL.format(name=name, task_type=task_type,
                              extra=textwrap.indent(extra, "  "))


def montage_workflow(directory: Path, rows: int, cols: int) -> dict:
    """The project's own Montage workflow (examples/montage/make_workflow.py) for a
    ``rows`` x ``cols`` sky, overlaps from the tile grid: a Montage-shaped DAG of
    ``2*rows*cols + pairs + 6`` tasks that needs no reference data. ``directory`` receives the
    generator's tables; the document is returned."""
    spec = importlib.util.spec_from_file_location(
        "make_workflow", REPO / "examples" / "montage" / "make_workflow.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "truth.json").write_text(json.dumps({"rows": rows, "cols": cols}))
    return module.make_workflow(directory, use_montage=False)


def ready_messages(settings: Settings, queue: str) -> int:
    """Exact, unlike the management API's statistics (which lag by up to 5 s)."""
    with broker_connection(settings) as conn:
        return conn.default_channel.queue_declare(queue, passive=True).message_count


def management(method: str, path: str) -> object:
    """Call the RabbitMQ management API as guest (tests only)."""
    req = urllib.request.Request(f"{MGMT}{path}", method=method)
    token = base64.b64encode(b"guest:guest").decode()
    req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    return json.loads(body) if body else None


def queue_info(name: str) -> dict[str, object] | None:
    return management("GET", f"/queues/%2F/{urllib.parse.quote(name, safe='')}")  # type: ignore


def delete_queue(name: str) -> None:
    management("DELETE", f"/queues/%2F/{urllib.parse.quote(name, safe='')}")


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace of its own per test; its queues are deleted afterwards."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    yield ns
    for queue in management("GET", "/queues/%2F?columns=name") or []:
        name = queue["name"]  # type: ignore[index]
        if name.startswith(ns + "."):
            delete_queue(name)


@pytest.fixture
def settings(namespace: str, tmp_path: Path) -> Settings:
    env = dict(os.environ, HYPERPOOL_NAMESPACE=namespace, HYPERPOOL_WORK_DIR=str(tmp_path))
    return load_settings(env)


@pytest.fixture
def redis_client() -> redis.Redis:
    return redis.Redis.from_url("redis://127.0.0.1:6379/0")


@dataclass
class WorkerProc:
    proc: subprocess.Popen[bytes]
    log: Path
    queue: str
    extra: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill_group(self) -> None:
        """SIGKILL the worker and its pool children, as a pod kill would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def hyperpool_env(namespace: str, work_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, HYPERPOOL_NAMESPACE=namespace, HYPERPOOL_WORK_DIR=str(work_dir),
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@pytest.fixture
def start_worker(namespace: str, tmp_path: Path):
    """Start real ``hyperpool worker`` processes; all are killed at the end of the test."""
    started: list[WorkerProc] = []

    def start(queue: str, *, concurrency: int = 1, work_dir: Path | None = None,
              wait: bool = True, **env: str) -> WorkerProc:
        log = tmp_path / f"worker-{len(started)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "hyperpool", "worker", "-Q", queue, "-c", str(concurrency),
             "-l", "INFO"],
            env=hyperpool_env(namespace, work_dir or tmp_path, **env), cwd=work_dir or tmp_path,
            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        handle = WorkerProc(proc, log, queue)
        started.append(handle)
        if wait:
            wait_for(lambda: "ready." in handle.text() or proc.poll() is not None,
                     what=f"worker on {queue}")
            assert proc.poll() is None, handle.text()
        return handle

    yield start
    for handle in started:
        handle.kill_group()
        handle.proc.wait()


class Stream:
    """Tasks published to pool queues and their results read from a stream of its own."""

    def __init__(self, settings, redis_client):
        self.publisher = Publisher(settings)
        self.name = run_stream(f"test-{uuid.uuid4().hex}")
        self.reader = ResultReader(redis_client, self.name)
        self.redis = redis_client

    def send(self, queue, task_id, **fields):
        msg = TaskMessage.model_validate({"taskId": task_id, **fields})
        self.publisher.publish(queue, msg, reply_to=self.name)

    def wait(self, task_id, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for result in self.reader.read(block_ms=200):
                if result.task_id == task_id:
                    return result
        raise AssertionError(f"no result for {task_id}")

    def close(self):
        self.publisher.close()
        self.redis.delete(self.name)


@pytest.fixture
def stream(settings, redis_client):
    s = Stream(settings, redis_client)
    yield s
    s.close()

