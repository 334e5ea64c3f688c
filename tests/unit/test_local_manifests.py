"""WorkerPool manifests for the local runtime: what is accepted, and errors that say where."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from decimal import Decimal

import pytest

from hyperpool.errors import ConfigError
from hyperpool.local.budget import DEFAULT_WORKER_REQUEST, Resources, local_budget
from hyperpool.local.manifests import pools_for_routing, pools_from_manifests
from hyperpool.routing import Routing
from tests.conftest import worker_pool_yaml


def manifest(name="mproject", task_type="mProject", extra=""):
    return worker_pool_yaml(name, task_type, extra)


def write(tmp_path, text, name="pools.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        pools_from_manifests([path], "ns")
    return str(info.value), path


def test_multi_document_file_with_defaults_and_seed_notation(tmp_path):
    seed = manifest(extra=textwrap.dedent("""\
        minReplicaCount: 1
        maxReplicaCount: 5
        rabbitHostname: rabbitmq.default
        initialResources:
          requests: {cpu: "0.5", memory: "524288000"}
          limits: {cpu: "0.5", memory: "524288000"}
        """))
    text = seed + "---\n---\n" + manifest("mdiff", "mDiffFit") + "---\n"
    pools = pools_from_manifests([write(tmp_path, text)], "ns")
    assert [p.name for p in pools] == ["mproject", "mdiff"]
    first, second = pools
    assert first.queue == "ns.mProject" and (first.min_replicas, first.max_replicas) == (1, 5)
    assert first.request == Resources(Decimal("0.5"), Decimal(524288000))
    assert first.source.endswith("pools.yaml: document 1")
    assert second.request == DEFAULT_WORKER_REQUEST and second.max_replicas == 50
    assert second.source.endswith("document 3")  # the empty document 2 is skipped


def test_limits_stand_in_for_missing_requests_and_namespace_and_queue_name_apply(tmp_path):
    text = textwrap.dedent("""\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: hyperflow.agh.edu.pl/v1
          kind: WorkerPool
          metadata: {name: a, namespace: montage}
          spec:
            taskType: mAdd
            initialResources: {limits: {cpu: 250m}}
        - apiVersion: hyperflow.agh.edu.pl/v1
          kind: WorkerPool
          metadata: {name: b}
          spec: {taskType: mB, queueName: custom.q}
        """)
    a, b = pools_from_manifests([write(tmp_path, text)], "ns")
    assert a.queue == "montage.mAdd"
    assert a.request == Resources(Decimal("0.25"), DEFAULT_WORKER_REQUEST.memory)
    assert b.queue == "custom.q" and b.source.endswith("document 1: items[1]")


@pytest.mark.parametrize(("extra", "field", "problem"), [
    ("maxReplicas: 3\n", "spec.maxReplicas", "unknown field"),
    ("minReplicaCount: -1\n", "spec.minReplicaCount", "greater than or equal to 0"),
    ("maxReplicaCount: -5\n", "spec.maxReplicaCount", "greater than or equal to 0"),
    ("minReplicaCount: 4\nmaxReplicaCount: 2\n", "spec",
     "minReplicaCount (4) must not exceed maxReplicaCount (2)"),
    ("initialResources:\n  requests: {cpu: lots}\n", "spec.initialResources.requests.cpu",
     "not a Kubernetes quantity: 'lots'"),
    ("initialResources:\n  requests: {memory: 12 GB}\n",
     "spec.initialResources.requests.memory", "not a Kubernetes quantity"),
    ("initialResources:\n  requests: {gpu: 1}\n", "spec.initialResources.requests.gpu",
     "unknown field"),
])
def test_invalid_spec_names_file_document_and_field(tmp_path, extra, field, problem):
    text = manifest("ok", "ok") + "---\n" + manifest(extra=extra)
    message, path = error_of(tmp_path, text)
    assert message.startswith(f"{path}: document 2: {field}: ")
    assert problem in message


@pytest.mark.parametrize(("old", "new", "field", "problem"), [
    ("kind: WorkerPool", "kind: Deployment", "kind", "expected 'WorkerPool'"),
    ("apiVersion: hyperflow.agh.edu.pl/v1", "apiVersion: hyperflow.agh.edu.pl/v2",
     "apiVersion", "expected 'hyperflow.agh.edu.pl/v1'"),
    ("taskType: mProject", "image: x", "spec.taskType", "Field required"),
    ("metadata:\n  name: mproject\n", "", "metadata", "Field required"),
])
def test_wrong_kind_api_version_or_missing_fields(tmp_path, old, new, field, problem):
    text = manifest().replace(old, new)
    message, path = error_of(tmp_path, text)
    assert message.startswith(f"{path}: document 1: {field}: ")
    assert problem in message


def test_malformed_yaml_names_line_and_column(tmp_path):
    message, path = error_of(tmp_path, manifest() + "  maxReplicaCount: [1, 2\n")
    assert message.startswith(f"{path}: line ")
    assert "malformed YAML" in message


@pytest.mark.parametrize("text", ["- just\n- a list\n", "hello\n"])
def test_a_document_that_is_not_a_mapping(tmp_path, text):
    message, path = error_of(tmp_path, text)
    assert message.startswith(f"{path}: document 1: expected a WorkerPool mapping")


def test_duplicate_names_or_queues_across_files_point_at_both(tmp_path):
    first = write(tmp_path, manifest("same", "mA"), "a.yaml")
    second = write(tmp_path, manifest("same", "mB"), "b.yaml")
    with pytest.raises(ConfigError, match=r"b.yaml: document 1: pool name 'same' is also "
                                          r"used by .*a.yaml: document 1"):
        pools_from_manifests([first, second], "ns")
    third = write(tmp_path, manifest("other", "mA"), "c.yaml")
    with pytest.raises(ConfigError, match="queue 'ns.mA' is also used by"):
        pools_from_manifests([first, third], "ns")


def test_routing_gets_default_pools_and_manifests_only_size_them(tmp_path, caplog):
    path = write(tmp_path, manifest("proj", "mProject", "maxReplicaCount: 2\nqueueName: x\n")
                 + "---\n" + manifest("unrouted", "mOther"))
    routing = Routing("ns", {"mProject": "ns.mProject", "mDiffFit": "ns.mDiffFit"})
    pools = pools_for_routing(routing, pools_from_manifests([path], "ns"))
    by_type = {p.task_type: p for p in pools}
    assert set(by_type) == {"mProject", "mDiffFit"}  # no pool for a type the engine never sends
    assert by_type["mProject"].queue == "ns.mProject"  # where the engine publishes
    assert by_type["mProject"].max_replicas == 2 and by_type["mProject"].name == "proj"
    assert by_type["mDiffFit"].max_replicas == 50
    assert by_type["mDiffFit"].request == DEFAULT_WORKER_REQUEST
    assert "consumes 'x' but the engine publishes mProject tasks to 'ns.mProject'" in caplog.text


def test_budget_flags_parse_quantities_and_reject_nonsense():
    assert local_budget("1500m", "8Gi") == Resources(Decimal("1.5"), Decimal(8 * 2**30))
    machine = local_budget()
    assert machine.cpu >= 1 and machine.memory > 2**28
    with pytest.raises(ConfigError, match="--budget-cpu: not a Kubernetes quantity"):
        local_budget("two")
    with pytest.raises(ConfigError, match="--budget-memory: must be positive"):
        local_budget("1", "0")


def test_cli_reports_a_bad_manifest_in_one_line_without_traceback(tmp_path):
    path = write(tmp_path, manifest(extra="minReplicaCount: -1\n"))
    proc = subprocess.run(
        [sys.executable, "-m", "hyperpool", "pools", "validate", "-f", str(path)],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"hyperpool: error: {path}: document 1: spec.minReplicaCount: "
        "Input should be greater than or equal to 0"]


def test_cli_validate_shows_pools_and_how_many_fit(tmp_path):
    path = write(tmp_path, manifest(extra="initialResources:\n  requests: {cpu: 500m}\n"))
    proc = subprocess.run(
        [sys.executable, "-m", "hyperpool", "pools", "validate", "-f", str(path),
         "--budget-cpu", "1500m", "--budget-memory", "4Gi", "--namespace", "demo"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "mproject" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[:7] == ["mproject", "mProject", "demo.mProject", "0", "50", "500m/256Mi", "3"]


def test_local_runtime_imports_leave_prometheus_client_unloaded():
    """The supervisor sets PROMETHEUS_MULTIPROC_DIR before prometheus-client's first import
    (it picks its value storage then); importing the local runtime must not import it early,
    or the supervisor's pool gauges vanish from the shared /metrics."""
    code = ("import sys, hyperpool.local.supervisor, hyperpool.local.probe, "
            "hyperpool.local.queue_metrics, hyperpool.local.cli, "
            "hyperpool.local.status_command; "
            "print('prometheus_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_concurrency_reaches_the_local_pool(tmp_path):
    (pool,) = pools_from_manifests([write(tmp_path, manifest(extra="concurrency: 3\n"))], "ns")
    assert pool.concurrency == 3
    (plain,) = pools_from_manifests([write(tmp_path, manifest(), "plain.yaml")], "ns")
    assert plain.concurrency == 1
