"""The live progress table: rebuilt as often as it is drawn, not after every read."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from hyperpool.engine.dag import build_dag
from hyperpool.engine.loader import load_workflow
from hyperpool.engine.report import TABLE_PER_SECOND, Progress, write_summary
from hyperpool.engine.run import Engine, RunOptions
from hyperpool.engine.state import DONE
from hyperpool.errors import ConfigError
from hyperpool.routing import load_routing
from hyperpool.settings import Settings


class CountingProgress(Progress):
    """Progress on a pretend terminal, counting the tables it builds."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.tty = True
        self.tables = 0
        self.clock = 100.0

    def _table(self, engine):
        self.tables += 1
        return super()._table(engine)


def engine_for(tmp_path: Path, tasks: int) -> Engine:
    """``tasks`` independent tasks, none dispatched: the table needs only the state."""
    (tmp_path / "workflow.json").write_text(json.dumps({
        "name": "flat", "signals": [{"name": f"s{i}"} for i in range(tasks)], "ins": [],
        "processes": [{"name": "t", "ins": [], "outs": [i],
                       "config": {"executor": {"executable": "true"}}} for i in range(tasks)]}))
    dag = build_dag(load_workflow(tmp_path))
    return Engine(dag, load_routing(tmp_path, "ns"), Settings(), RunOptions(work_dir=tmp_path),
                  client=None, publisher=None)  # type: ignore[arg-type]


def test_the_table_is_rebuilt_at_most_at_its_redraw_rate(tmp_path, monkeypatch):
    engine = engine_for(tmp_path, 50)
    progress = CountingProgress()
    monkeypatch.setattr("hyperpool.engine.report.time.monotonic", lambda: progress.clock)
    for _ in range(100):  # a burst of reads within one redraw interval
        progress(engine)
    assert progress.tables == 1
    progress.clock += 1 / TABLE_PER_SECOND
    progress(engine)
    assert progress.tables == 2
    engine.state.set(0, DONE)
    progress.close(engine)  # the last table shows the final state, however recent the last
    assert progress.tables == 3
    assert "1/50 done" in progress.stream.getvalue()


def test_a_summary_that_cannot_be_written_is_a_clear_error(tmp_path):
    """Checked before the run, the directory can still vanish while it runs: the command
    then warns (the run's outcome stands) instead of ending in a traceback."""
    path = tmp_path / "gone" / "s.json"
    with pytest.raises(ConfigError, match=r"s\.json: cannot write the JSON summary: No such file"):
        write_summary(path, {"tasks_total": 1})
