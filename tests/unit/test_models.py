from decimal import Decimal

import pytest
import yaml

from hyperpool.errors import ConfigError
from hyperpool.models import TaskMessage, validate
from hyperpool.quantities import canonical_quantity, format_bytes, format_cpu, parse_quantity
from hyperpool.workerpool_spec import WorkerPool, WorkerPoolSpec
from tests.conftest import REPO
from tests.unit.test_controller_support import SEED_MANIFEST


@pytest.mark.parametrize("text,expected", [
    ("0.5", Decimal("0.5")), ("500m", Decimal("0.5")), ("524288000", Decimal(524288000)),
    ("512Mi", Decimal(512 * 2**20)), ("1G", Decimal(10**9)), ("2", Decimal(2)),
    ("1e3", Decimal(1000)), ("1.5Gi", Decimal(int(1.5 * 2**30))), (".5", Decimal("0.5")),
    (3, Decimal(3)),
])
def test_quantities_parse(text, expected):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("bad", ["", "abc", "-1", "1.2.3", "5 Mi", "1mi", "Mi", True])
def test_bad_quantities_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_quantity(bad)


def test_quantity_formatting():
    assert format_cpu(Decimal("0.5")) == "500m"
    assert format_cpu(2) == "2"
    assert format_bytes(512 * 2**20) == "512Mi"
    assert format_bytes(524288000) == "500Mi"
    assert format_bytes(1000) == "1000"


def test_seed_manifest_validates_unchanged():
    pool = WorkerPool.model_validate(yaml.safe_load(SEED_MANIFEST))
    spec = pool.spec
    assert spec.taskType == "mProject" and spec.queueName is None
    assert spec.initialResources.requests.cpu_cores == Decimal("0.5")
    assert spec.initialResources.requests.memory_bytes == Decimal(524288000)


def test_spec_defaults():
    spec = WorkerPoolSpec(taskType="mDiffFit")
    assert (spec.minReplicaCount, spec.maxReplicaCount) == (0, 50)


@pytest.mark.parametrize("change,fragment", [
    ({"minReplicaCount": -1}, "spec.minReplicaCount"),
    ({"minReplicaCount": 9, "maxReplicaCount": 3}, "must not exceed maxReplicaCount"),
    ({"maxReplicas": 3}, "spec.maxReplicas: unknown field"),
    ({"initialResources": {"requests": {"cpu": "lots"}}}, "spec.initialResources.requests.cpu"),
    ({"initialResources": {"requests": {"memory": "12XB"}}}, "not a Kubernetes quantity"),
])
def test_bad_specs_name_file_and_field(change, fragment):
    doc = yaml.safe_load(SEED_MANIFEST)
    doc["spec"].update(change)
    with pytest.raises(ConfigError) as err:
        validate(WorkerPool, doc, source="pools.yaml")
    assert str(err.value).startswith("pools.yaml: ")
    assert fragment in str(err.value)


def test_task_message_keeps_unknown_fields_and_stringifies_args():
    msg = TaskMessage.model_validate({"executable": "mProjectPP", "args": ["-x", 0.9, 3],
                                      "customField": {"a": 1}, "taskId": "t1"})
    assert msg.args == ["-x", "0.9", "3"]
    assert msg.model_dump()["customField"] == {"a": 1}
    assert msg.shell is False


@pytest.mark.parametrize("bad", [
    {"args": ["x"]}, {"executable": ""}, {"executable": "ls", "args": "-l not-a-list"},
    {"executable": "ls", "stdout": "../escape"}, {"executable": "ls", "stderr": "/etc/passwd"},
    {"executable": "ls", "shell": "maybe"},
])
def test_invalid_task_messages(bad):
    with pytest.raises(ConfigError):
        validate(TaskMessage, bad, source="message")


def test_example_pool_configs_validate():
    for path in (REPO / "configs").glob("*pools*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                validate(WorkerPool, doc, source=str(path))


@pytest.mark.parametrize("field,value,ok", [
    ("outputs", ["out.fits", {"name": "sub/x.tbl"}], True),
    ("outputs", ["../escape.fits"], False),
    ("outputs", [{"name": "/etc/cron.d/x"}], False),
    ("outputs", [42], False),
    ("inputs", ["/home/ubuntu/data/ref.fa"], True),  # pre-staged reference data (Soykb)
    ("inputs", ["a/../../b"], False),
    ("stdoutAppend", "../log", False),
])
def test_files_cannot_escape_the_work_dir(field, value, ok):
    data = {"executable": "x", field: value}
    if ok:
        validate(TaskMessage, data, source="m")
    else:
        with pytest.raises(ConfigError):
            validate(TaskMessage, data, source="m")


@pytest.mark.parametrize("text,canonical", [
    ("0.5", "500m"), ("524288000", "524288k"), ("512Mi", "512Mi"), ("1.5Gi", "1536Mi"),
    ("1000", "1k"), ("1500", "1500"), ("1e3", "1e3"), ("1.5Ki", "1536"), ("0", "0"),
])
def test_canonical_quantities_match_the_api_server(text, canonical):
    assert canonical_quantity(text) == canonical


def test_args_given_as_one_string_are_that_one_argument():
    """As some HyperFlow files write a lone argument; with spaces, nobody can tell where the
    arguments split (no shell runs): the message asks for a list and shows one."""
    assert TaskMessage.model_validate({"executable": "ls", "args": "input.txt"}).args == [
        "input.txt"]
    with pytest.raises(ValueError, match=r'give the arguments as a list, e.g. \["-l", "x"\]'):
        TaskMessage.model_validate({"executable": "ls", "args": "-l x"})
