"""Metrics after real task runs on the real broker, checked by Prometheus' promtool."""

from __future__ import annotations

import subprocess
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from hyperpool.metrics import EXPORTED
from tests.conftest import wait_for
from tests.integration.private_services import free_port
from tests.integration.test_executor_pool import Run


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_worker_metrics_after_real_tasks(settings, redis_client, namespace, start_worker):
    run = Run(settings, redis_client, f"{namespace}.mProject")
    port = free_port()
    start_worker(run.queue, concurrency=2, HYPERPOOL_METRICS_PORT=str(port))
    for i in range(3):
        run.send(f"ok{i}", executable="true", name="mProject")
    run.send("bad", executable="false", name="mProject")
    run.wait("ok0", "ok1", "ok2", "bad")
    labels = (("outcome", "succeeded"), ("queue", run.queue), ("task_type", "mProject"))
    wait_for(lambda: samples(scrape(port)).get(("hyperpool_tasks_total", labels)) == 3,
             what="3 succeeded tasks in /metrics (the worker's metrics)")
    text = scrape(port)
    got = samples(text)
    failed = (("outcome", "failed"), ("queue", run.queue), ("task_type", "mProject"))
    assert got[("hyperpool_tasks_total", failed)] == 1
    count = (("queue", run.queue), ("task_type", "mProject"))
    assert got[("hyperpool_task_duration_seconds_count", count)] == 4
    assert got[("hyperpool_tasks_in_progress", count)] == 0
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"hyperpool_tasks", "hyperpool_task_duration_seconds"} <= names
    # A worker is one process: prometheus-client's own process_*/python_* series come along
    # (memory and CPU of the pool process); everything else is ours.
    assert all(name.startswith(("hyperpool_", "process_", "python_")) for name in names), names
    assert "process_resident_memory_bytes" in names
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    run.close()


def test_exported_names_follow_conventions():
    check = subprocess.run(["promtool", "check", "metrics"], capture_output=True, text=True,
                           input="".join(f"# HELP {n} x.\n# TYPE {n} {_type(n)}\n{_line(n)}"
                                         for n in sorted(EXPORTED)))
    assert check.returncode == 0, check.stdout + check.stderr


def _type(name: str) -> str:
    if name.endswith("_total"):
        return "counter"
    return "histogram" if name.endswith("_seconds") else "gauge"


def _line(name: str) -> str:
    if name.endswith("_seconds"):
        return f'{name}_bucket{{le="+Inf"}} 1\n{name}_sum 1\n{name}_count 1\n'
    return f"{name} 1\n"
