"""A real run's timeline: the engine with real Redis, job processes and a real pool worker."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hyperpool.engine.dag import build_dag
from hyperpool.engine.loader import load_workflow
from hyperpool.engine.run import Engine, RunOptions
from hyperpool.engine.timeline import layout, records_from_run, write_timeline
from hyperpool.executor.publisher import Publisher
from hyperpool.routing import EXECUTION_MODELS_FILE, load_routing

FAN = 5  # firings of each stage


def fan_workdir(tmp_path: Path, pooled: list[str]) -> Path:
    """``stage`` fires once per input element, ``crunch`` once per ``stage`` output."""
    work = tmp_path / "wf"
    work.mkdir()
    workflow = {
        "name": "fan", "ins": [0], "outs": [2],
        "signals": [{"name": "inputs", "data": list(range(FAN))}, {"name": "staged"},
                    {"name": "crunched"}],
        "processes": [
            {"name": "stage", "ins": [0], "outs": [1], "config": {"executor": {
                "executable": "true"}}},
            {"name": "crunch", "ins": [1], "outs": [2], "config": {"executor": {
                "executable": "true"}}},
        ],
    }
    (work / "workflow.json").write_text(json.dumps(workflow))
    (work / EXECUTION_MODELS_FILE).write_text(json.dumps([{"name": n} for n in pooled]))
    return work


def drawn_tasks(path: Path) -> int:
    return path.read_text().count('class="t"')


def test_job_model_run_timeline_has_every_task(tmp_path, namespace, settings, redis_client):
    work = fan_workdir(tmp_path, [])
    dag = build_dag(load_workflow(work, env={}))
    engine = Engine(dag, load_routing(work, namespace), settings,
                    RunOptions(work_dir=work, max_jobs=3, stub_sleep=0.2), redis_client)
    outcome = engine.run()
    assert outcome.ok and len(dag.tasks) == 2 * FAN

    records = records_from_run(engine, outcome)
    assert len(records) == len(dag.tasks)
    assert sorted(r.task_type for r in records) == sorted(t.task_type for t in dag.tasks)
    assert all(r.model == "job" and r.ok and r.finished >= r.started for r in records)
    assert len({r.worker for r in records}) == len(records)  # a fresh process per task
    assert write_timeline(records, tmp_path / "t.html", title="fan") == len(dag.tasks)
    assert drawn_tasks(tmp_path / "t.html") == len(dag.tasks)
    write_timeline(records, tmp_path / "t.png", title="fan")
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    # one lane per concurrently running job, never more than --max-jobs
    assert 1 <= len(layout(records).lanes) <= 3


def test_pool_run_timeline_lanes_are_the_pool_processes(tmp_path, namespace, settings,
                                                        redis_client, start_worker):
    work = fan_workdir(tmp_path, ["crunch"])
    start_worker(f"{namespace}.crunch", concurrency=2, work_dir=work)
    dag = build_dag(load_workflow(work, env={}))
    publisher = Publisher(settings)
    try:
        engine = Engine(dag, load_routing(work, namespace), settings,
                        RunOptions(work_dir=work, max_jobs=2, stub_sleep=0.1), redis_client,
                        publisher)
        outcome = engine.run()
    finally:
        publisher.close()
    assert outcome.ok
    records = records_from_run(engine, outcome)
    assert len(records) == len(dag.tasks)
    pooled = [r for r in records if r.task_type == "crunch"]
    assert {r.model for r in pooled} == {"pool"} and len(pooled) == FAN
    workers = {r.worker for r in pooled}
    assert 1 <= len(workers) <= 2  # the worker's two slots, "host:pid/slot"
    assert all(re.fullmatch(r"[^:]+:\d+/\d+", w) for w in workers), workers
    lanes = layout(records).lanes
    assert workers <= set(lanes) and len(lanes) <= len(workers) + 2
    write_timeline(records, tmp_path / "t.html", title="fan")
    assert drawn_tasks(tmp_path / "t.html") == len(dag.tasks)
