import json

import pytest

from hyperpool.errors import ConfigError
from hyperpool.models import WorkerPoolSpec
from hyperpool.routing import EXECUTION_MODELS_FILE, load_routing, pool_queue, queue_for


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
