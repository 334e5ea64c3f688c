"""`hyperpool run` on bad input: rejected before any task runs, with the file and field named.

A malformed workflow, an output path that cannot be written, a task message that could not be
sent, and a warning (not an error) for an executionModels entry that matches no task type.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.test_engine import chain, run_cli, workdir_for


@pytest.mark.parametrize("content,fragment", [
    ("{\"processes\": [", "malformed JSON"),
    (json.dumps({"processes": [{"name": "a", "function": "{{missing}}"}], "signals": []}),
     "unknown variable {{missing}}"),
    (json.dumps(chain(("a", {"executable": "x"}))).replace("\"ins\": [0]", "\"ins\": [7]"),
     "signal index 7 does not exist"),
])
def test_bad_workflows_are_clear_errors(tmp_path, namespace, content, fragment):
    work = tmp_path / "wf"
    work.mkdir()
    (work / "workflow.json").write_text(content)
    proc = run_cli(work, namespace)
    assert proc.returncode == 2
    assert fragment in proc.stderr and str(work / "workflow.json") in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("option,path,fragment", [
    ("--json-summary", "missing-dir/s.json", "directory"),
    ("--json-summary", ".", "is a directory"),
    ("--timeline", "run.svg", "must be a .png or .html file"),
    ("--timeline", "missing-dir/t.html", "does not exist"),
])
def test_bad_output_paths_are_rejected_before_any_task_runs(tmp_path, namespace, option, path,
                                                            fragment):
    """The summary and timeline are written when the run ends: a bad path must fail first."""
    wf = chain(("touch", {"executable": "touch", "args": ["ran"]}))
    work = workdir_for(tmp_path, wf, [])
    target = str(tmp_path / path) if path != "." else str(tmp_path)
    proc = run_cli(work, namespace, option, target)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and target in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (work / "ran").exists(), "the task ran before the bad path was reported"


@pytest.mark.parametrize("pooled", [True, False], ids=["pool", "job"])
@pytest.mark.parametrize("executor,where,fragment", [
    ({"executable": "true", "stdout": "../../x"}, "config.executor.stdout", "relative"),
    ({"executable": "true", "stderr": "/tmp/x"}, "config.executor.stderr", "relative"),
    ({"executable": "true", "args": "-c x"}, "config.executor.args", "as a list"),
])
def test_bad_task_messages_are_rejected_before_any_task_runs(tmp_path, namespace, pooled,
                                                             executor, where, fragment):
    """Once the engine died mid-run on these (pool), or failed the task after its predecessors
    had run (job model). Now the workflow is rejected when it loads, naming file and field."""
    wf = chain(("first", {"executable": "touch", "args": ["ran"]}), ("bad", executor))
    work = workdir_for(tmp_path, wf, ["bad"] if pooled else [])
    proc = run_cli(work, namespace)
    assert proc.returncode == 2, proc.stderr
    assert f"{work / 'workflow.json'}: processes[1] (bad).{where}: " in proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert not (work / "ran").exists(), "a task ran before the bad message was reported"


def test_an_execution_models_typo_is_warned_about_and_the_run_goes_on(tmp_path, namespace):
    work = workdir_for(tmp_path, chain(("first", {"executable": "touch", "args": ["ran"]})),
                       ["frist"])
    proc = run_cli(work, namespace)
    assert proc.returncode == 0, proc.stderr
    assert ("hyperpool: warning: workflow.config.executionModels.json: entry 'frist' matches "
            "no task of the workflow, so nothing runs in its pool; did you mean 'first'?"
            in proc.stderr)
    assert (work / "ran").exists()
