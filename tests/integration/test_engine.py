"""The workflow engine end to end: real workflows, real pools, real job processes."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from prometheus_client import REGISTRY

from hyperpool.engine.dag import build_dag
from hyperpool.engine.loader import load_workflow
from hyperpool.engine.run import Engine, RunOptions
from hyperpool.engine.state import DISPATCHED, DONE, WAITING
from hyperpool.executor.publisher import Publisher
from hyperpool.executor.withdraw import withdraw
from hyperpool.models import TaskResult
from hyperpool.routing import EXECUTION_MODELS_FILE, load_routing
from hyperpool.services import broker_connection
from tests.conftest import hyperpool_env, montage_workflow, queue_info, ready_messages, wait_for
from tests.reference import workflow_file

POOLED = {
    "legacy-montage-0.25-43": ["mProjectPP", "mDiffFit", "mBackground"],
    "legacy-montage-1.0-469": ["mProjectPP", "mDiffFit", "mBackground"],
    "legacy-montage-2.0-1482": ["mProjectPP", "mDiffFit", "mBackground"],
    "montage-0.25-44": ["mDiffFit"],
    "montage143-143": ["mProjectPP", "mBackground"],
    "remotejobs-2": ["RemoteJobWithPipes"],
    "soykb-52": ["haplotype_caller", "genotype_gvcfs"],
}


def workdir_for(tmp_path: Path, workflow: dict | str, pooled: list[str]) -> Path:
    work = tmp_path / "wf"
    work.mkdir()
    if isinstance(workflow, str):
        shutil.copy(workflow_file(workflow), work / "workflow.json")
    else:
        (work / "workflow.json").write_text(json.dumps(workflow))
    (work / EXECUTION_MODELS_FILE).write_text(json.dumps([{"name": n} for n in pooled]))
    return work


def run_cli(work: Path, namespace: str, *args: str, timeout: float = 240,
            **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hyperpool", "run", str(work), "--no-local-pools", *args],
        env=hyperpool_env(namespace, work, HF_VAR_function="command", **env),
        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", sorted(POOLED))
def test_real_workflows_complete_with_stubs(name, tmp_path, namespace, start_worker):
    work = workdir_for(tmp_path, name, POOLED[name])
    for task_type in POOLED[name]:
        start_worker(f"{namespace}.{task_type}", concurrency=2, work_dir=work)
    proc = run_cli(work, namespace, "--stub-sleep", "0", "--max-jobs", "4",
                   "--json-summary", str(tmp_path / "s.json"),
                   "--timeline", str(tmp_path / "timeline.html"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    total = len(build_dag(load_workflow(work, env={"HF_VAR_function": "x"})).tasks)
    assert summary["tasks_total"] == summary["succeeded"] == total
    assert summary["failed"] == 0 and summary["not_run"] == 0
    per_type = summary["per_task_type"]
    for task_type in POOLED[name]:
        assert per_type[task_type]["model"] == "pool"
        assert per_type[task_type]["queue"] == f"{namespace}.{task_type}"
    assert any(v["model"] == "job" for v in per_type.values())
    assert set(summary) >= {"tasks_total", "succeeded", "failed", "makespan_seconds"}
    # the timeline drew every task that ran (exit processes run nowhere)
    drawn = (tmp_path / "timeline.html").read_text().count('class="t"')
    assert drawn == total - (1 if name == "montage-0.25-44" else 0)


def test_completion_order_respects_the_dag(tmp_path, namespace, start_worker, settings,
                                           redis_client):
    pooled = ["mProject", "mDiffFit", "mBackground"]
    doc = montage_workflow(tmp_path / "gen", rows=5, cols=5)  # 128 tasks, 72 mDiffFit
    work = workdir_for(tmp_path, doc, pooled)
    for task_type in pooled:
        start_worker(f"{namespace}.{task_type}", concurrency=2, work_dir=work)
    dag = build_dag(load_workflow(work, env={"HF_VAR_function": "command"}))
    routing = load_routing(work, namespace)
    publisher = Publisher(settings)
    engine = Engine(dag, routing, settings, RunOptions(work_dir=work, stub_sleep=0.01),
                    redis_client, publisher)
    outcome = engine.run()
    publisher.close()
    assert outcome.ok and outcome.state.counts[DONE] == len(doc["processes"]) == 128
    results = outcome.state.results
    for task in dag.tasks:
        for dep in task.deps:
            assert results[task.index].started >= results[dep].finished, (
                f"{task.task_type}#{task.index} started before {dag.tasks[dep].task_type}")
    models = {r.model for r in results.values()}
    assert models == {"pool", "job"}
    completed = REGISTRY.get_sample_value("hyperpool_engine_tasks_completed_total", {
        "task_type": "mDiffFit", "model": "pool", "outcome": "succeeded"})
    dispatched = REGISTRY.get_sample_value("hyperpool_engine_tasks_dispatched_total", {
        "task_type": "mDiffFit", "model": "pool"})
    assert completed >= 72 and dispatched >= 72  # the engine's own metrics saw the run


def chain(*steps: tuple[str, dict]) -> dict:
    """A linear workflow: step i consumes signal i and produces signal i+1."""
    processes = [{"name": name, "ins": [i], "outs": [i + 1], "config": {"executor": executor}}
                 for i, (name, executor) in enumerate(steps)]
    signals = [{"name": f"s{i}"} for i in range(len(steps) + 1)]
    return {"name": "chain", "processes": processes, "signals": signals, "ins": [0]}


def test_a_run_declares_every_pool_queue_when_it_starts(tmp_path, namespace, settings,
                                                      redis_client):
    """A later stage's queue (and its dead-letter queue) exists before the stage is ready:
    declaring it at its type's first publish put a declaration on that stage's critical path."""
    wf = chain(("first", {"executable": "sleep", "args": ["30"]}),
               ("later", {"executable": "true"}))
    work = workdir_for(tmp_path, wf, ["later"])
    dag = build_dag(load_workflow(work))
    declared: list[bool] = []

    def look(engine: Engine) -> None:
        declared.append(all(queue_info(f"{namespace}.later{suffix}") is not None
                            for suffix in ("", ".dead")))
        raise KeyboardInterrupt  # the run's own Ctrl-C path: cancel, stop the job

    publisher = Publisher(settings)
    try:
        engine = Engine(dag, load_routing(work, namespace), settings, RunOptions(work_dir=work),
                        redis_client, publisher, on_progress=look)
        outcome = engine.run()
    finally:
        publisher.close()
    assert outcome.interrupted and declared == [True]
    # ... while its only task was still waiting for the first one
    assert [outcome.state.status[t.index] for t in dag.tasks] == [DISPATCHED, WAITING]


def test_failure_stops_the_run_with_a_report(tmp_path, namespace, start_worker):
    wf = chain(("prep", {"executable": "true"}),
               ("crunch", {"executable": "sh", "args": ["-c", "echo 'bad pixel' >&2; exit 4"]}),
               ("never", {"executable": "touch", "args": ["never-ran"]}))
    work = workdir_for(tmp_path, wf, ["crunch"])
    start_worker(f"{namespace}.crunch", work_dir=work)
    proc = run_cli(work, namespace, "--json-summary", str(tmp_path / "s.json"))
    assert proc.returncode == 1
    assert "task crunch (" in proc.stderr and "exit code 4" in proc.stderr
    assert "bad pixel" in proc.stderr and "Traceback" not in proc.stderr
    assert not (work / "never-ran").exists()
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["succeeded"], summary["failed"], summary["not_run"]) == (1, 1, 1)


def test_job_model_failure_report(tmp_path, namespace):
    wf = chain(("only", {"executable": "no-such-tool-here"}))
    work = workdir_for(tmp_path, wf, [])
    proc = run_cli(work, namespace)
    assert proc.returncode == 1
    assert "executable not found: 'no-such-tool-here'" in proc.stderr


@pytest.mark.parametrize("pooled", [True, False], ids=["pool", "job"])
def test_a_failing_task_report_says_where_its_logs_are(tmp_path, namespace, start_worker,
                                                       pooled):
    wf = chain(("only", {"executable": "sh", "args": ["-c", "echo to-the-log; exit 3"]}))
    work = workdir_for(tmp_path, wf, ["only"] if pooled else [])
    if pooled:
        start_worker(f"{namespace}.only", work_dir=work)
    proc = run_cli(work, namespace)
    assert proc.returncode == 1
    assert "1/1 task" not in proc.stderr and "0/1 task succeeded" in proc.stderr
    assert "failed after 1 attempt: exit code 3" in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.strip().startswith("logs: ")]
    stdout_log = Path(line.strip().removeprefix("logs: ").split(", ")[0])
    assert stdout_log.parent == work / "logs-hf" and stdout_log.name.endswith(".1.stdout")
    assert stdout_log.read_text() == "to-the-log\n"


def test_retries_with_backoff(tmp_path, namespace, start_worker):
    flaky = {"executable": "sh", "args": ["-c", "echo x >> tries; [ $(wc -l < tries) -ge 3 ]"]}
    work = workdir_for(tmp_path, chain(("flaky", flaky)), ["flaky"])
    start_worker(f"{namespace}.flaky", work_dir=work)
    proc = run_cli(work, namespace, "--attempts", "2", "--backoff", "0.1")
    assert proc.returncode == 1 and "after 2 attempts" in proc.stderr
    (work / "tries").unlink()
    started = time.monotonic()
    proc = run_cli(work, namespace, "--attempts", "3", "--backoff", "0.3")
    assert proc.returncode == 0, proc.stderr
    assert (work / "tries").read_text().count("x") == 3
    assert time.monotonic() - started >= 0.9  # backoff 0.3 s, then 0.6 s


def test_keep_going_runs_independent_branches(tmp_path, namespace):
    wf = {"processes": [
        {"name": "bad", "ins": [0], "outs": [1], "config": {"executor": {"executable": "false"}}},
        {"name": "after_bad", "ins": [1], "outs": [], "config": {"executor": {
            "executable": "touch", "args": ["after_bad"]}}},
        {"name": "good", "ins": [0], "outs": [], "config": {"executor": {
            "executable": "touch", "args": ["good"]}}}],
        "signals": [{"name": "in", "data": [{}]}, {"name": "mid"}]}
    work = workdir_for(tmp_path, wf, [])
    proc = run_cli(work, namespace, "--keep-going", "--json-summary", str(tmp_path / "s.json"))
    assert proc.returncode == 1
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["succeeded"], summary["failed"], summary["skipped"]) == (1, 1, 1)
    assert (work / "good").exists() and not (work / "after_bad").exists()


def test_a_failing_run_with_a_timeline_still_reports_the_failure(tmp_path, namespace):
    wf = chain(("only", {"executable": "false"}))
    work = workdir_for(tmp_path, wf, [])
    proc = run_cli(work, namespace, "--timeline", str(tmp_path / "t.html"))
    assert proc.returncode == 1, proc.stderr
    assert "workflow failed" in proc.stderr and (tmp_path / "t.html").exists()


def _default_sigint() -> None:
    """Give the engine the Ctrl-C a terminal user has. A shell starts background jobs with
    SIGINT ignored, children inherit that, and Python then installs no KeyboardInterrupt
    handler: the engine, correctly, ignored the test's SIGINT when the suite itself was
    started in the background."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_cleanly(tmp_path, namespace, start_worker):
    marker = f"hyperpool-test-{namespace}"
    wf = {"processes": [
        {"name": "slowjob", "ins": [0], "outs": [], "config": {"executor": {
            "executable": sys.executable,
            "args": ["-c", "open('job-started', 'w'); import time; time.sleep(60)", marker]}}},
        {"name": "pooled", "ins": [1], "outs": [], "config": {"executor": {
            "executable": "sh", "args": ["-c", "touch pool-$(date +%s%N); sleep 2"]}}}],
        "signals": [{"name": "a", "data": [{}]}, {"name": "b", "data": [{}] * 4}]}
    wf["processes"][1]["firingLimit"] = 4
    work = workdir_for(tmp_path, wf, ["pooled"])
    start_worker(f"{namespace}.pooled", work_dir=work)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperpool", "run", str(work), "--no-local-pools"],
        # faulthandler: if the engine hangs, SIGABRT makes it print where every thread is
        env=hyperpool_env(namespace, work, PYTHONFAULTHANDLER="1"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    wait_for(lambda: (work / "job-started").exists(), what="job start")
    wait_for(lambda: list(work.glob("pool-*")), what="first pool task")
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        time.sleep(2)
        proc.kill()
        try:
            _, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired as exc:  # the job's process still holds the pipe
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        pytest.fail(f"the engine did not exit within 20 s of Ctrl-C; its threads:\n{err[-6000:]}")
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
    time.sleep(0.5)
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]
    assert leftovers == []
    time.sleep(3)  # the running pool task finishes; the 3 queued ones are skipped, not run
    assert len(list(work.glob("pool-*"))) == 1


def test_ctrl_c_leaves_no_queued_work_behind_with_local_pools(tmp_path, namespace, settings):
    """The default path: the run's own pools stop with it, so nobody is left to skip its
    cancelled messages; they are withdrawn instead (once 32 stayed ready in a queue)."""
    wf = {"processes": [{"name": "pooled", "ins": [0], "outs": [], "firingLimit": 30,
                         "config": {"executor": {"executable": "sh", "args": [
                             "-c", "touch pool-$(date +%s%N); sleep 3"]}}}],
          "signals": [{"name": "a", "data": [{}] * 30}]}
    work = workdir_for(tmp_path, wf, ["pooled"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperpool", "run", str(work), "--budget-cpu", "1",
         "--cooldown", "1"], env=hyperpool_env(namespace, work), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    wait_for(lambda: list(work.glob("pool-*")), timeout=60, what="first pool task")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    started = len(list(work.glob("pool-*")))
    assert started < 30 and re.search(r"\d+ queued task messages? withdrawn", err), err
    assert ready_messages(settings, f"{namespace}.pooled") == 0


def test_withdrawing_a_run_keeps_other_runs_messages(namespace, settings):
    queue = f"{namespace}.shared"
    publisher = Publisher(settings)
    try:
        publisher.ensure_queue(queue)
        for run, count in (("mine", 5), ("theirs", 3)):
            publisher.publish_many(
                [(queue, {"executable": "true", "taskId": f"{run}:0:{i}"}, 1)
                 for i in range(count)], reply_to="nobody")
    finally:
        publisher.close()
    assert withdraw(settings, [queue], "mine") == 5
    left = []
    with broker_connection(settings) as conn:
        channel = conn.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            left.append(message.headers["id"])
    assert sorted(left) == [f"theirs:0:{i}#1" for i in range(3)]


def test_duplicate_completion_is_counted_once(tmp_path, namespace, settings, redis_client):
    work = workdir_for(tmp_path, chain(("a", {"executable": "true"})), [])
    dag = build_dag(load_workflow(work, env={}))
    engine = Engine(dag, load_routing(work, namespace), settings, RunOptions(work_dir=work),
                    redis_client)
    outcome = engine.run()
    assert outcome.ok
    again = TaskResult(task_id=engine.task_id(dag.tasks[0]), exit_code=0, started=0,
                       finished=1, worker="w", model="job")
    engine._on_result(again)
    engine._on_result(again)
    assert engine.state.duplicates == 2 and engine.state.counts[DONE] == 1


def test_late_success_of_an_earlier_attempt_counts(tmp_path, namespace, settings, redis_client):
    work = workdir_for(tmp_path, chain(("a", {"executable": "true"})), [])
    dag = build_dag(load_workflow(work, env={}))
    engine = Engine(dag, load_routing(work, namespace), settings,
                    RunOptions(work_dir=work, attempts=3, backoff=60), redis_client)
    engine._dispatch_ready = lambda: None  # drive the state machine by hand
    engine.state.attempt[0] = 1
    engine.state.set(0, DISPATCHED)
    task_id = engine.task_id(dag.tasks[0])
    engine._on_result(TaskResult(task_id=task_id, exit_code=1, started=0, finished=1,
                                 worker="w", model="job"))
    assert 0 in engine._retry_at  # waiting 60 s for attempt 2
    engine._on_result(TaskResult(task_id=task_id, exit_code=0, started=0, finished=2,
                                 worker="w", model="job"))
    assert engine.state.counts[DONE] == 1 and not engine._retry_at


def test_engine_lingers_between_small_reads_only_with_many_tasks_in_flight(
        tmp_path, namespace, settings, redis_client, monkeypatch):
    from hyperpool.engine import run as engine_run

    steps = [(f"s{i}", {"executable": "true"}) for i in range(engine_run.LINGER_IN_FLIGHT)]
    work = workdir_for(tmp_path, chain(*steps), [])
    dag = build_dag(load_workflow(work, env={}))
    engine = Engine(dag, load_routing(work, namespace), settings, RunOptions(work_dir=work),
                    redis_client)
    pauses: list[float] = []
    monkeypatch.setattr(engine_run.time, "sleep", pauses.append)
    engine.state.set(0, DISPATCHED)
    engine._linger(1)  # one task out (the latency case): never waits
    assert pauses == []
    for index in range(1, len(dag.tasks)):
        engine.state.set(index, DISPATCHED)
    engine._linger(engine_run.LINGER_BATCH)  # a read that brought a batch: go on at once
    assert pauses == []
    engine._linger(1)  # many out, one came back: let more gather
    assert pauses == [engine_run.LINGER_SECONDS]
