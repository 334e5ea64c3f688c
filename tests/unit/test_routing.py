import json

import pytest

from hyperpool.errors import ConfigError
from hyperpool.routing import (
    EXECUTION_MODELS_FILE,
    load_routing,
    pool_queue,
    queue_for,
    unmatched_entries,
)
from hyperpool.workerpool_spec import WorkerPoolSpec


def write(tmp_path, content):
    (tmp_path / EXECUTION_MODELS_FILE).write_text(content)
    return tmp_path


def test_listed_types_go_to_namespaced_queues(tmp_path):
    write(tmp_path, json.dumps([{"name": "mProject"}, {"name": "mDiffFit", "queue": "custom"}]))
    routing = load_routing(tmp_path, "montage")
    assert routing.queue("mProject") == "montage.mProject"
    assert routing.queue("mDiffFit") == "custom"
    assert routing.queue("mAdd") is None
    assert routing.model("mAdd") == "job" and routing.model("mProject") == "pool"


def test_no_file_means_everything_is_a_job(tmp_path):
    assert load_routing(tmp_path, "ns").queues == {}


def test_engine_and_pool_agree_on_queue_names():
    spec = WorkerPoolSpec(taskType="mBackground")
    assert pool_queue(spec, "ns") == queue_for("mBackground", "ns") == "ns.mBackground"
    spec = WorkerPoolSpec(taskType="mBackground", queueName="bg")
    assert pool_queue(spec, "ns") == queue_for("mBackground", "ns", "bg") == "bg"


@pytest.mark.parametrize("content,fragment", [
    ("[{\"name\": \"a\"", "malformed JSON"),
    ("{\"name\": \"a\"}", "expected a JSON list"),
    ("[{\"name\": \"a\"}, {\"name\": \"a\"}]", "[1].name: duplicate task type 'a'"),
    ("[{\"queue\": \"q\"}]", "[0]: entry has no 'name'"),
    ("[\"mProject\"]", "[0]: expected an object"),
    ("[{\"name\": \"\"}]", "[0]: name"),
])
def test_malformed_execution_models(tmp_path, content, fragment):
    write(tmp_path, content)
    with pytest.raises(ConfigError) as err:
        load_routing(tmp_path, "ns")
    assert EXECUTION_MODELS_FILE in str(err.value)
    assert fragment in str(err.value)


@pytest.mark.parametrize("entry,where", [
    ({"name": "t", "queue": "q" * 256}, "[0].queue"),
    ({"name": "t" * 250}, "[0].name"),  # the derived ns.<name> is over 255 bytes
    ({"name": "t", "queue": "é" * 128}, "[0].queue"),  # 256 bytes in UTF-8, 128 characters
])
def test_queue_names_rabbitmq_cannot_take_are_rejected_at_load(tmp_path, entry, where):
    path = write(tmp_path, json.dumps([entry])) / EXECUTION_MODELS_FILE
    with pytest.raises(ConfigError) as err:
        load_routing(tmp_path, "montage")
    assert str(err.value).startswith(f"{path}: {where}: queue name ")
    assert "RabbitMQ allows at most 255" in str(err.value)


def test_a_queue_name_of_255_bytes_is_accepted(tmp_path):
    write(tmp_path, json.dumps([{"name": "t", "queue": "q" * 255}]))
    assert load_routing(tmp_path, "ns").queue("t") == "q" * 255


def test_entries_matching_no_task_type_are_warned_about_with_the_closest_types(tmp_path):
    write(tmp_path, json.dumps([{"name": "mProjectP"}, {"name": "mDiffFit"}, {"name": "zzz"}]))
    routing = load_routing(tmp_path, "ns")
    warnings = unmatched_entries(routing, ["mProjectPP", "mDiffFit", "mAdd", "mDiffFit"])
    assert warnings == [
        f"{EXECUTION_MODELS_FILE}: entry 'mProjectP' matches no task of the workflow, so "
        "nothing runs in its pool; did you mean 'mProjectPP'?",
        f"{EXECUTION_MODELS_FILE}: entry 'zzz' matches no task of the workflow, so nothing "
        "runs in its pool; the workflow's task types are mAdd, mDiffFit, mProjectPP"]
