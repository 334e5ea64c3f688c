"""Property-based fuzzing of every user input: only clear errors, never a traceback or hang.

12,500 generated cases in total per CI run (see the ``max_examples`` below). Beyond "no
traceback", a workflow and executionModels that load must only produce task messages the
executors accept and queue names the broker client can encode: once a redirect out of the work
dir, ``args`` as a string and a 256-byte queue name all loaded and failed mid-run.
"""

from __future__ import annotations

import json

from amqp.serialization import dumps as amqp_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperpool.engine.dag import build_dag
from hyperpool.engine.loader import load_workflow, message_fields, parse_workflow
from hyperpool.errors import ConfigError
from hyperpool.models import TaskMessage, validate
from hyperpool.routing import build_routing, parse_execution_models
from hyperpool.workerpool_spec import WorkerPool


def fuzz(examples: int) -> settings:
    return settings(deadline=None, suppress_health_check=list(HealthCheck), database=None,
                    max_examples=examples)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 10), st.floats(allow_nan=True),
                    st.text(max_size=8), st.sampled_from(["{{x}}", "{{function}}", "..", "/",
                                                          "500m", "512Mi", "-1", "exit"]))
json_values = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=6), kids, max_size=4)),
    max_leaves=12)
refs = st.one_of(st.integers(-2, 6), st.sampled_from(["a", "b", "c", "zz"]), scalars)
files = st.one_of(st.sampled_from(["out.txt", "../../x", "/abs/x", "a/../b", "d/ok", "",
                                   "nul\x00", "."]), scalars)
executors = st.fixed_dictionaries(
    {"executable": st.one_of(st.sampled_from(["sh", "mProjectPP", ""]), scalars)},
    optional={"args": st.one_of(st.lists(st.one_of(scalars, files), max_size=3), files,
                                st.sampled_from(["-c x", "lone", " "]), json_values),
              "stdout": files, "stderr": files, "stdoutAppend": files, "stderrAppend": files,
              "shell": scalars})
long_names = st.sampled_from(["t" * 250, "q" * 256, "é" * 128, "ok"])
processes = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["p", "q", "mProject"]), long_names, scalars)},
    optional={
        "ins": st.one_of(st.lists(refs, max_size=4), json_values),
        "outs": st.one_of(st.lists(refs, max_size=3), json_values),
        "type": st.sampled_from(["dataflow", "foreach", "choice", None]),
        "function": st.sampled_from(["command", "exit", "{{function}}", None]),
        "firingLimit": st.one_of(st.integers(-1, 3), scalars),
        "config": st.one_of(json_values, st.fixed_dictionaries(
            {"executor": st.one_of(executors, json_values)})),
    })
signals = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["a", "b", "c", "/abs/out", "../up"]), scalars)},
    optional={"data": st.one_of(st.lists(json_values, max_size=3), json_values),
              "control": st.booleans()})
workflows = st.fixed_dictionaries(
    {}, optional={
        "processes": st.lists(processes, max_size=6),
        "tasks": st.lists(processes, max_size=3),
        "signals": st.lists(signals, max_size=6),
        "data": st.lists(signals, max_size=3),
        "ins": st.one_of(st.lists(refs, max_size=3), json_values),
        "name": scalars,
    })


@fuzz(4000)
@given(doc=st.one_of(workflows, json_values))
def test_workflow_loader_only_raises_config_errors(doc):
    try:
        build_dag(parse_workflow(doc, source="fuzz.json", env={"HF_VAR_x": "1"}))
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.json: ")


# Workflows that mostly load, so that their messages are what varies.
loadable = st.fixed_dictionaries({
    "processes": st.lists(st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(["p", "q"]), long_names),
         "config": st.fixed_dictionaries({"executor": executors})},
        optional={"ins": st.lists(st.sampled_from(["a", "/abs/out"]), max_size=2),
                  "outs": st.lists(st.sampled_from(["b", "c", "/abs/out", "../up"]),
                                   max_size=1, unique=True)}), min_size=1, max_size=3),
    "signals": st.just([{"name": n} for n in ("a", "b", "c", "/abs/out", "../up")]),
    "ins": st.just(["a"])})


@fuzz(2000)
@given(doc=st.one_of(workflows, loadable), models=st.lists(st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["p", "q", "mProject"]), long_names)},
    optional={"queue": st.one_of(long_names, scalars)}), max_size=3),
    namespace=st.sampled_from(["default", "n" * 63]))
def test_what_loads_only_produces_valid_messages_and_queues(doc, models, namespace):
    try:
        dag = build_dag(parse_workflow(doc, source="fuzz.json", env={"HF_VAR_x": "1"}))
        routing = build_routing(parse_execution_models(models, source="em.json"), namespace,
                                source="em.json")
    except ConfigError:
        return
    for task in dag.tasks:
        if task.process.dispatches:  # the engine's message (Engine.message)
            TaskMessage.model_validate({**message_fields(task.process, dag.workflow.signals),
                                        "taskId": "run:0:0", "name": task.task_type,
                                        "work_dir": "/work"})
    for queue in routing.queues.values():
        amqp_frame("s", [queue])  # the short string py-amqp encodes a queue name as


@fuzz(500)
@given(raw=st.one_of(st.binary(max_size=64), st.text(max_size=64).map(str.encode),
                     json_values.map(lambda v: json.dumps(v).encode())))
def test_workflow_files_of_any_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("wf") / "workflow.json"
    path.write_bytes(raw)
    try:
        build_dag(load_workflow(path, env={}))
    except ConfigError as exc:
        assert str(path) in str(exc)


@fuzz(2000)
@given(data=st.one_of(json_values, st.lists(st.fixed_dictionaries(
    {"name": scalars}, optional={"queue": scalars}), max_size=4)))
def test_execution_models_only_raise_config_errors(data):
    try:
        entries = parse_execution_models(data, source="em.json")
    except ConfigError as exc:
        assert str(exc).startswith("em.json: ")
    else:
        assert len({e.name for e in entries}) == len(entries)


@fuzz(2000)
@given(data=st.one_of(json_values, st.fixed_dictionaries(
    {"executable": scalars}, optional={k: st.one_of(json_values, st.lists(scalars, max_size=3))
                                       for k in ("args", "shell", "stdout", "stderr", "inputs",
                                                 "outputs", "stdoutAppend", "taskId")})))
def test_task_messages_only_raise_config_errors(data):
    try:
        msg = validate(TaskMessage, data, source="message")
    except ConfigError as exc:
        assert str(exc).startswith("message: ")
    else:
        assert msg.executable and all(isinstance(a, str) for a in msg.args)


quantities = st.one_of(st.sampled_from(["0.5", "500m", "512Mi", "1e3", "1.5Gi", "lots", "-1",
                                        "", "1mi"]), scalars)
pool_specs = st.fixed_dictionaries(
    {"taskType": st.one_of(st.just("mProject"), scalars)},
    optional={"minReplicaCount": st.one_of(st.integers(-2, 60), scalars),
              "maxReplicaCount": st.one_of(st.integers(-2, 60), scalars),
              "queueName": scalars, "image": scalars, "unknownField": scalars,
              "initialResources": st.fixed_dictionaries({}, optional={
                  "requests": st.fixed_dictionaries({}, optional={"cpu": quantities,
                                                                  "memory": quantities}),
                  "limits": json_values})})


@fuzz(2000)
@given(doc=st.one_of(json_values, st.fixed_dictionaries({
    "apiVersion": st.sampled_from(["hyperflow.agh.edu.pl/v1", "v1"]),
    "kind": st.sampled_from(["WorkerPool", "Deployment"]),
    "metadata": st.fixed_dictionaries({"name": st.one_of(st.just("p"), scalars)}),
    "spec": st.one_of(pool_specs, json_values)})))
def test_worker_pools_only_raise_config_errors(doc):
    try:
        pool = validate(WorkerPool, doc, source="pools.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("pools.yaml: ")
    else:
        assert 0 <= pool.spec.minReplicaCount <= pool.spec.maxReplicaCount
