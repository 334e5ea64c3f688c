import pytest

from hyperpool.engine.timeline import TaskRecord, write_timeline
from hyperpool.errors import ConfigError


def records(n: int) -> list[TaskRecord]:
    return [TaskRecord(f"r:{i}:0", ["mProject", "mDiffFit"][i % 2], f"w{i % 3}", 100 + i * 0.1,
                       100.5 + i * 0.1, "pool", i != 3) for i in range(n)]


def test_png_timeline(tmp_path):
    path = tmp_path / "t.png"
    write_timeline(records(50), path, title="run")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_html_timeline_has_one_element_per_task(tmp_path):
    path = tmp_path / "t.html"
    write_timeline(records(37), path, title="run <x>")
    text = path.read_text()
    assert text.count('class="t"') == 37
    assert "run &lt;x&gt;" in text and "failed" in text  # escaped title; task 3 failed


def test_timeline_rejects_unknown_formats_and_empty_runs(tmp_path):
    with pytest.raises(ConfigError, match=".png or .html"):
        write_timeline(records(2), tmp_path / "t.svg", title="x")
    with pytest.raises(ConfigError, match="no task ran"):
        write_timeline([], tmp_path / "t.png", title="x")
