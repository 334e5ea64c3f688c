"""Shared plumbing of the benchmarks: namespaces, worker processes, statistics, machine facts.

Every benchmark gets a namespace of its own (queues ``<ns>.*``), starts real worker processes
the way users do (``hyperpool worker``, ``celery worker``) and removes its queues afterwards, so
runs do not see each other's leftovers and the broker does not fill up with bench queues.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from kombu import Connection

from hyperpool.local.management import ManagementApi
from hyperpool.settings import DEFAULT_BROKER_URL, Settings, load_settings
from tests.reference import missing, reference_dir

REPO = Path(__file__).resolve().parent.parent


def reference_file(part: str, name: str) -> Path:
    """A file of the reference data (tests/reference.py); a benchmark cannot skip: it stops."""
    path = reference_dir() / part / name
    if not path.is_file():
        raise SystemExit(f"bench: {missing(part, path)}")
    return path


def workflow_file(name: str) -> Path:
    return reference_file("workflows", f"{name}.workflow.json")


def new_namespace(prefix: str = "bench") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def bench_settings(namespace: str, work_dir: Path) -> Settings:
    return load_settings({**os.environ, "HYPERPOOL_NAMESPACE": namespace,
                          "HYPERPOOL_WORK_DIR": str(work_dir)})


def bench_env(namespace: str, work_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, HYPERPOOL_NAMESPACE=namespace, HYPERPOOL_WORK_DIR=str(work_dir),
               PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def delete_queues(settings: Settings, prefix: str) -> None:
    """Delete every queue whose name starts with ``prefix`` (best effort)."""
    api = ManagementApi(settings)
    with contextlib.suppress(Exception):
        for name in list(api.queues()):
            if name.startswith(prefix):
                api.delete_queue(name)


@dataclass
class Proc:
    """A started worker process (own session, so it can be killed with its children)."""

    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 9)
        self.proc.wait()


def consumers(queue: str, broker_url: str = DEFAULT_BROKER_URL) -> int:
    """Consumers of ``queue`` right now (passive declare; 0 if it does not exist yet).

    Readiness is taken from the broker, not from a worker's log: the benchmarks run workers at
    log level WARNING (per-task INFO lines would be measured too), which prints no "ready".
    """
    with Connection(broker_url, connect_timeout=5) as conn:
        try:
            return conn.default_channel.queue_declare(queue, passive=True).consumer_count
        except Exception:  # 404: not declared yet
            return 0


def start_process(argv: Sequence[str], *, env: dict[str, str], cwd: Path, log: Path,
                  queue: str, count: int = 1, timeout: float = 60.0) -> Proc:
    """Start ``argv`` and wait until ``queue`` has ``count`` consumers."""
    handle = Proc(subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=log.open("wb"),
                                   stderr=subprocess.STDOUT, start_new_session=True), log)
    deadline = time.monotonic() + timeout
    while consumers(queue) < count:
        if handle.proc.poll() is not None or time.monotonic() > deadline:
            handle.stop()
            raise RuntimeError(f"{argv[:4]} did not start:\n{handle.text()[-2000:]}")
        time.sleep(0.1)
    return handle


def hyperpool_worker(queue: str, *, namespace: str, work_dir: Path, concurrency: int,
                     log: Path) -> Proc:
    return start_process(
        [sys.executable, "-m", "hyperpool", "worker", "-Q", queue, "-c", str(concurrency),
         "-l", "WARNING"],
        env=bench_env(namespace, work_dir), cwd=work_dir, log=log, queue=queue)


@contextlib.contextmanager
def workers(starts: Sequence[tuple[str, int]], *, namespace: str, work_dir: Path
            ) -> Iterator[list[Proc]]:
    """``hyperpool worker`` processes for (queue, concurrency) pairs, killed on exit."""
    procs: list[Proc] = []
    try:
        for i, (queue, concurrency) in enumerate(starts):
            procs.append(hyperpool_worker(queue, namespace=namespace, work_dir=work_dir,
                                          concurrency=concurrency,
                                          log=work_dir / f"worker-{i}.log"))
            # Several workers on one queue: wait for each of them to consume.
            wait_for_consumers(queue, sum(1 for q, _ in starts[:i + 1] if q == queue))
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def wait_for_consumers(queue: str, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while consumers(queue) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{queue}: fewer than {count} consumers after {timeout}s")
        time.sleep(0.1)


def wait_quiet(max_load: float = 0.6, timeout: float = 10.0) -> None:
    """Wait (bounded) until the machine is mostly idle, so runs don't measure stragglers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and psutil.cpu_percent(interval=0.5) > max_load * 100:
        pass


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def versions() -> dict[str, str]:
    import celery
    import kombu
    import pydantic
    import redis

    found = {"python": platform.python_version(), "celery": celery.__version__,
             "kombu": kombu.__version__, "redis-py": redis.__version__,
             "pydantic": pydantic.VERSION}
    for name, argv in (("rabbitmq", ["rabbitmqctl", "version"]),
                       ("redis-server", ["redis-server", "--version"])):
        with contextlib.suppress(Exception):
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout
            found[name] = out.split("v=")[1].split()[0] if "v=" in out else out.strip()
    return found


def fsync_latency(directory: Path, seconds: float = 5.0) -> dict[str, float]:
    """fdatasync of a 4 KiB append in ``directory``, every 10 ms for ``seconds``: p50, p99
    and max in ms. A quorum queue delivers a message (and confirms it) only once its Raft
    log write is synced, so this disk's stalls show up as stalls of the whole system."""
    path = directory / f".hyperpool-fsync-probe-{os.getpid()}"
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            os.write(fd, b"x" * 4096)
            start = time.perf_counter()
            os.fdatasync(fd)
            samples.append((time.perf_counter() - start) * 1e3)
            time.sleep(0.01)
    finally:
        os.close(fd)
        path.unlink()
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99),
            "max": max(samples)}


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpus": str(psutil.cpu_count()), "cpu": cpu,
            "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
            "os": f"{platform.system()} {platform.release()}", **versions()}
