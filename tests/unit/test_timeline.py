"""The timeline draws every task once, in the right lane, fast enough for 20,000 tasks."""

from __future__ import annotations

import time
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest

from hyperpool.engine.timeline import (
    TaskRecord,
    check_timeline_path,
    layout,
    palette,
    records_from_run,
    write_timeline,
)
from hyperpool.errors import ConfigError
from hyperpool.models import TaskResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def records(n: int, *, jobs_every: int = 0) -> list[TaskRecord]:
    """``n`` tasks of two types on three pool workers; every ``jobs_every``-th a job task."""
    out = []
    for i in range(n):
        job = jobs_every and i % jobs_every == 0
        out.append(TaskRecord(f"r:{i}:0", ["mProject", "mDiffFit"][i % 2],
                              f"host:{1000 + i}" if job else f"w{i % 3}", 100 + i * 0.1,
                              100.5 + i * 0.1, "job" if job else "pool", i != 3))
    return out


class TaskDivs(HTMLParser):
    """Counts ``<div class="t">`` elements and collects their tooltips."""

    def __init__(self) -> None:
        super().__init__()
        self.titles: list[str] = []
        self.failed = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "div" and a.get("class") == "t":
            self.titles.append(a.get("title") or "")
            self.failed += "data-failed" in a


def test_png_timeline(tmp_path):
    path = tmp_path / "t.png"
    assert write_timeline(records(50), path, title="run") == 50
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


def test_html_timeline_has_one_element_per_task(tmp_path):
    path = tmp_path / "t.html"
    write_timeline(records(37), path, title="run <x>")
    text = path.read_text()
    parsed = TaskDivs()
    parsed.feed(text)
    assert len(parsed.titles) == text.count('class="t"') == 37
    assert parsed.failed == 1 and "r:3:0" in next(t for t in parsed.titles if "failed" in t)
    assert "run &lt;x&gt;" in text and "<script" not in text  # escaped, self-contained
    assert all(f">w{i}<" in text for i in range(3))  # lanes are labelled with the worker


def test_records_may_be_dicts_or_objects(tmp_path):
    dicts = [{"task_id": "a", "task_type": "t", "worker": "w", "started": 1, "finished": 2}]
    objects = [SimpleNamespace(task_id="b", task_type="t", worker="w", started=2, finished=3,
                               model="pool", ok=False)]
    assert write_timeline(dicts + objects, tmp_path / "t.html", title="x") == 2
    with pytest.raises(ValueError, match="lacks finished"):
        TaskRecord.coerce({"task_id": "a", "task_type": "t", "worker": "w", "started": 1})


def test_pool_workers_are_lanes_and_job_tasks_share_slots():
    lay = layout(records(40, jobs_every=4))
    pool_lanes = [lane for lane in lay.lanes if not lane.startswith("job slot")]
    assert sorted(pool_lanes) == ["w0", "w1", "w2"]
    # job tasks (0.5 s long, one every 0.4 s) overlap pairwise at most: two slots, not ten lanes
    assert [lane for lane in lay.lanes if lane.startswith("job slot")] == ["job slot 1",
                                                                            "job slot 2"]
    by_lane: dict[int, list[TaskRecord]] = {}
    for record, lane in zip(lay.records, lay.lane_of, strict=True):
        by_lane.setdefault(lane, []).append(record)
    for lane, tasks in by_lane.items():
        if lay.lanes[lane].startswith("job slot"):
            for a, b in zip(tasks, tasks[1:], strict=False):
                assert a.finished <= b.started  # no two bars of one slot overlap
        else:
            assert {t.worker for t in tasks} == {lay.lanes[lane]}


def test_colours_are_distinct_beyond_the_palette():
    colours = palette(45)
    assert len(set(colours)) == 45 and all(len(c) == 7 and c[0] == "#" for c in colours)


def test_records_from_run_skips_tasks_that_ran_nowhere():
    tasks = [SimpleNamespace(task_type=t) for t in ("stage", "crunch", "exit")]
    results = {
        0: TaskResult(task_id="r:0:0", exit_code=0, started=1, finished=2, worker="h:1"),
        1: TaskResult(task_id="r:1:0", exit_code=3, started=2, finished=4, worker="h:2",
                      model="job"),
        2: TaskResult(task_id="r:2:0", exit_code=0, started=4, finished=4, worker="engine",
                      model="none"),
    }
    engine = SimpleNamespace(dag=SimpleNamespace(tasks=tasks))
    got = records_from_run(engine, SimpleNamespace(state=SimpleNamespace(results=results)))
    assert got == [TaskRecord("r:0:0", "stage", "h:1", 1, 2, "pool", True),
                   TaskRecord("r:1:0", "crunch", "h:2", 2, 4, "job", False)]


def test_twenty_thousand_tasks_are_fast(tmp_path):
    many = records(20_000, jobs_every=7)
    started = time.monotonic()
    write_timeline(many, tmp_path / "t.png", title="big")
    write_timeline(many, tmp_path / "t.html", title="big")
    assert time.monotonic() - started < 30  # ~3 s here; one draw call per task would be minutes
    assert (tmp_path / "t.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "t.html").read_text().count('class="t"') == 20_000


def test_timeline_rejects_unknown_formats_and_empty_runs(tmp_path):
    with pytest.raises(ConfigError, match=".png or .html"):
        write_timeline(records(2), tmp_path / "t.svg", title="x")
    with pytest.raises(ConfigError, match=".png or .html"):
        check_timeline_path("timeline")
    assert check_timeline_path("run.HTML").name == "run.HTML"
    with pytest.raises(ConfigError, match="no task ran"):
        write_timeline([], tmp_path / "t.png", title="x")
    with pytest.raises(ConfigError, match="directory .* does not exist"):
        write_timeline(records(2), tmp_path / "missing" / "t.html", title="x")
    (tmp_path / "dir.html").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        check_timeline_path(tmp_path / "dir.html")
