"""A real Prometheus server (Debian's ``prometheus``) and a static exposition, for tests.

``promtool test rules`` (tests/unit/test_controller_promql.py) evaluates the rules over series
the test writes down; it never scrapes, never stores a sample, never runs the rule manager's
schedule and never answers an HTTP query. KEDA sees only the end of that chain, so this module
runs the whole of it: a ``prometheus`` subprocess with its own config, TSDB directory and port,
rule files laid out one per PrometheusRule as prometheus-operator lays them out, and the HTTP API
KEDA's prometheus scaler calls (``/api/v1/query``).

:class:`StaticExposition` stands in for exporters that cannot run here (kube-state-metrics): a
prometheus-client registry of gauges served over HTTP, so Prometheus still *scrapes* those
series (its own parsing, staleness and label handling) instead of reading a recording.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.integration.private_services import free_port

MAKE_SERVICES = "run `make services` (configs/services.sh installs Debian's prometheus)"


def prometheus_binary() -> str:
    """The server binary; its absence fails the test (CI always has it), naming the fix."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(f"the Prometheus server binary `prometheus` is not installed: {MAKE_SERVICES}")
    return binary


@dataclass(frozen=True)
class ScrapeJob:
    """One scrape job with static targets and the target labels a Service/PodMonitor gives."""

    name: str
    targets: list[str]
    labels: dict[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"
    honor_labels: bool = False

    def config(self) -> dict[str, Any]:
        return {"job_name": self.name, "metrics_path": self.metrics_path,
                "honor_labels": self.honor_labels,
                "static_configs": [{"targets": self.targets, "labels": self.labels}]}


class PrometheusServer:
    """``prometheus`` on 127.0.0.1:<port>, scraping ``jobs`` every second, loading ``rules``.

    ``rules`` maps a rule file name to its ``groups`` (a PrometheusRule's ``spec.groups``,
    unchanged): prometheus-operator writes each PrometheusRule to a file of its own, so group
    names only have to be unique within one rule object, as they are here.
    """

    def __init__(self, directory: Path, jobs: list[ScrapeJob],
                 rules: dict[str, list[dict[str, Any]]], port: int | None = None):
        self.directory = directory
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "prometheus.log"
        rules_dir = directory / "rules"
        rules_dir.mkdir(parents=True, exist_ok=True)
        for name, groups in rules.items():
            (rules_dir / name).write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(rules_dir / "*.yaml")],
            "scrape_configs": [job.config() for job in jobs],
        }
        self.config_file = directory / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait for ``/-/ready`` (config and every rule file loaded)."""
        self.proc = subprocess.Popen(
            [prometheus_binary(), f"--config.file={self.config_file}",
             f"--storage.tsdb.path={self.directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=info"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n"
                                     f"{self.log_tail()}")
            if http_ok(f"{self.url}/-/ready"):
                return
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a successful answer."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at the current time, as KEDA's prometheus scaler sends it."""
        data = self.api("query", query=expr, time=f"{time.time():.3f}")
        assert data["resultType"] == "vector", data
        return data["result"]

    def targets(self) -> list[dict[str, Any]]:
        return self.api("targets", state="active")["activeTargets"]

    def wait_targets_up(self, jobs: set[str], timeout: float) -> None:
        """Until every target of ``jobs`` has been scraped successfully."""
        deadline = time.monotonic() + timeout
        health: dict[str, str] = {}
        while time.monotonic() < deadline:
            health = {f"{t['labels']['job']} {t['scrapeUrl']}": f"{t['health']} {t['lastError']}"
                      for t in self.targets() if t["labels"].get("job") in jobs}
            if health and all(h.startswith("up") for h in health.values()):
                return
            time.sleep(0.2)
        raise AssertionError(f"targets not up within {timeout}s: {health}")

    def last_evaluations(self) -> dict[tuple[str, str], float]:
        """(rule file, group name) -> Unix time of the group's last evaluation (0: never)."""
        out = {}
        for group in self.api("rules", type="record")["groups"]:
            stamp = datetime.fromisoformat(group["lastEvaluation"])
            out[(group["file"], group["name"])] = max(0.0, stamp.timestamp())
        return out

    def wait_evaluated_after(self, moment: float, timeout: float) -> None:
        """Until every rule group has been evaluated (again) after ``moment`` (Unix time)."""
        deadline = time.monotonic() + timeout
        stamps: dict[tuple[str, str], float] = {}
        while time.monotonic() < deadline:
            stamps = self.last_evaluations()
            if stamps and min(stamps.values()) > moment:
                return
            time.sleep(0.2)
        raise AssertionError(f"rule groups not all evaluated after {moment} within "
                             f"{timeout}s: {stamps}")


class StaticExposition:
    """Gauges with fixed values served on 127.0.0.1:<port>/metrics for Prometheus to scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._gauges: dict[str, Gauge] = {}
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self._server, self._thread = start_http_server(self.port, addr="127.0.0.1",
                                                       registry=self.registry)

    def set(self, name: str, labels: dict[str, str], value: float) -> None:
        """Set one sample; a metric's label names are fixed by its first sample."""
        gauge = self._gauges.get(name)
        if gauge is None:
            gauge = Gauge(name, f"{name} (static, for the test)", sorted(labels),
                          registry=self.registry)
            self._gauges[name] = gauge
        gauge.labels(**labels).set(value)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False
