"""Workflow loading and DAG expansion, on the real HyperFlow files and on broken ones."""

import json

import pytest

from hyperpool.engine.dag import build_dag
from hyperpool.engine.loader import load_workflow, parse_workflow
from hyperpool.errors import ConfigError
from tests.reference import workflow_file

ENV = {"HF_VAR_function": "command"}
EXPECTED_TASKS = {
    "legacy-montage-0.25-43": 43, "legacy-montage-1.0-469": 469,
    "legacy-montage-2.0-1482": 1482, "montage-0.25-44": 44, "montage143-143": 143,
    "remotejobs-2": 2, "soykb-52": 52,
}


@pytest.mark.parametrize("name,count", sorted(EXPECTED_TASKS.items()))
def test_real_workflows_load(name, count):
    wf = load_workflow(workflow_file(name), env=ENV)
    dag = build_dag(wf)
    assert len(dag.tasks) == count
    # Dependencies point backwards: the expansion is a topological order.
    assert all(dep < task.index for task in dag.tasks for dep in task.deps)


def test_legacy_montage_shape():
    dag = build_dag(load_workflow(workflow_file("legacy-montage-0.25-43"), env=ENV))
    by_type = {}
    for task in dag.tasks:
        by_type.setdefault(task.task_type, []).append(task)
    assert len(by_type["mProjectPP"]) == 10 and len(by_type["mDiffFit"]) == 17
    assert all(not t.deps for t in by_type["mProjectPP"])
    concat = by_type["mConcatFit"][0]
    assert {dag.tasks[d].task_type for d in concat.deps} == {"mDiffFit"}


def test_exit_process_does_not_dispatch():
    wf = load_workflow(workflow_file("montage-0.25-44"), env=ENV)
    assert [p.name for p in wf.processes if not p.dispatches] == ["Done"]


def test_unknown_variable_is_named():
    with pytest.raises(ConfigError) as err:
        load_workflow(workflow_file("montage-0.25-44"), env={})
    assert "unknown variable {{function}}: set the environment variable HF_VAR_function" in str(
        err.value)
    assert "montage-0.25-44.workflow.json" in str(err.value)


def test_variables_are_filled(tmp_path):
    doc = {"processes": [{"name": "p", "config": {"executor": {"executable": "{{tool}}",
                                                               "args": ["{{ x }}-1"]}}}],
           "signals": []}
    wf = parse_workflow(doc, source="wf.json", env={"HF_VAR_tool": "echo", "HF_VAR_x": "7"})
    assert wf.processes[0].executor == {"executable": "echo", "args": ["7-1"]}


def test_data_signals_and_firing():
    doc = {"processes": [
        {"name": "a", "ins": ["n"], "outs": ["m"], "config": {"executor": {"executable": "x"}}},
        {"name": "b", "ins": ["m"], "outs": [], "firingLimit": 1,
         "config": {"executor": {"executable": "x"}}}],
        "signals": [{"name": "n", "data": [1, 2, 3]}, {"name": "m"}]}
    dag = build_dag(parse_workflow(doc, source="wf.json", env={}))
    assert [(t.task_type, t.firing, t.deps) for t in dag.tasks] == [
        ("a", 0, []), ("a", 1, []), ("a", 2, []), ("b", 0, [0])]


def broken(tmp_path, doc):
    path = tmp_path / "workflow.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        build_dag(load_workflow(tmp_path, env={}))
    assert str(path) in str(err.value)
    return str(err.value)


def proc(name, ins, outs, **kw):
    return {"name": name, "ins": ins, "outs": outs,
            "config": {"executor": {"executable": "true"}}, **kw}


def test_malformed_json(tmp_path):
    assert "malformed JSON" in broken(tmp_path, "{\"processes\": [")


def test_cycle_is_named(tmp_path):
    msg = broken(tmp_path, {"processes": [proc("a", [0], [1]), proc("b", [1], [0])],
                            "signals": [{"name": "s0"}, {"name": "s1"}]})
    assert "cycle" in msg and "'a'" in msg and "'b'" in msg


def test_dangling_index(tmp_path):
    msg = broken(tmp_path, {"processes": [proc("a", [5], [])], "signals": [{"name": "s"}]})
    assert "processes[0] (a).ins[0]: signal index 5 does not exist" in msg


def test_dangling_name(tmp_path):
    msg = broken(tmp_path, {"processes": [proc("a", ["nope"], [])], "signals": []})
    assert "unknown signal 'nope'" in msg


def test_duplicate_producers(tmp_path):
    msg = broken(tmp_path, {"processes": [proc("a", [], ["s"]), proc("b", [], ["s"])],
                            "signals": [{"name": "s"}]})
    assert "produced by both 'a'" in msg and "'b'" in msg


def test_input_nobody_produces(tmp_path):
    msg = broken(tmp_path, {"processes": [proc("a", ["s"], [])], "signals": [{"name": "s"}],
                            "ins": []})
    assert "neither produced by a process nor a workflow input" in msg


@pytest.mark.parametrize("doc,fragment", [
    ([], "expected a JSON object"),
    ({"signals": []}, "no 'processes' (or legacy 'tasks') list"),
    ({"processes": {}, "signals": []}, "processes: must be a list"),
    ({"processes": [{"name": "a", "type": "foreach"}], "signals": []}, "'foreach' is not supp"),
    ({"processes": [proc("a", [], [])], "signals": [{"name": "c", "control": True}]},
     "control signal"),
    ({"processes": [proc("a", [], [], firingLimit=0)], "signals": []}, "firingLimit"),
    ({"processes": [{"ins": []}], "signals": []}, "non-empty 'name'"),
    ({"processes": [proc("a", [True], [])], "signals": []}, "index or a name"),
])
def test_unsupported_or_invalid(tmp_path, doc, fragment):
    assert fragment in broken(tmp_path, doc)


def one_process(executor: dict, outs: list[str] | None = None) -> dict:
    names = ["in", *(outs or [])]
    return {"processes": [{"name": "a", "ins": ["in"], "outs": outs or [],
                           "config": {"executor": executor}}],
            "signals": [{"name": n} for n in names], "ins": ["in"]}


@pytest.mark.parametrize("doc,where,fragment", [
    (one_process({"executable": "x", "stdout": "../../x"}), "config.executor.stdout",
     "must be relative to the work dir"),
    (one_process({"executable": "x", "stderrAppend": "/var/log/x"}),
     "config.executor.stderrAppend", "must be relative to the work dir"),
    (one_process({"executable": "x", "args": "-c 'echo hi'"}), "config.executor.args",
     "give the arguments as a list"),
    (one_process({"executable": "x", "args": [["nested"]]}), "config.executor.args.0",
     "valid string"),
    (one_process({"executable": ""}), "config.executor.executable", "at least 1 character"),
    (one_process({"executable": "x"}, outs=["/abs/out.fits"]), "outs",
     "must be relative to the work dir"),
])
def test_bad_task_messages_are_rejected_at_load(doc, where, fragment):
    with pytest.raises(ConfigError) as err:
        parse_workflow(doc, source="wf.json")
    assert str(err.value).startswith(f"wf.json: processes[0] (a).{where}: "), str(err.value)
    assert fragment in str(err.value)


def test_a_lone_argument_given_as_a_string_is_that_argument():
    wf = parse_workflow(one_process({"executable": "cat", "args": "in"}), source="wf.json")
    assert wf.processes[0].executor == {"executable": "cat", "args": "in"}  # sent as written


def test_exit_processes_are_not_task_messages():
    doc = one_process({"executable": "", "stdout": "/x"})
    doc["processes"][0]["function"] = "exit"
    assert not parse_workflow(doc, source="wf.json").processes[0].dispatches


def test_an_exact_copy_of_a_process_is_rejected_but_shared_names_are_task_types():
    doc = one_process({"executable": "x", "args": ["1"]})
    doc["processes"].append(dict(doc["processes"][0], config={"executor": {
        "executable": "x", "args": ["2"]}}))
    assert len(build_dag(parse_workflow(doc, source="wf.json")).tasks) == 2
    doc["processes"].append(doc["processes"][0])
    with pytest.raises(ConfigError, match=r"wf.json: processes\[2\] \(a\): is an exact copy of "
                                          r"processes\[0\]"):
        parse_workflow(doc, source="wf.json")
