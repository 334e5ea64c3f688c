"""The command runner on its own: real subprocesses, no broker."""

import os
import stat

from hyperpool.executor.runner import LOG_DIR, run_message
from hyperpool.models import TaskMessage


def run(tmp_path, **fields):
    fields.setdefault("taskId", "t1")
    return run_message(TaskMessage.model_validate(fields), default_work_dir=str(tmp_path))


def test_exit_zero_and_logs(tmp_path):
    result = run(tmp_path, executable="sh", args=["-c", "echo out; echo err >&2"])
    assert result.ok and result.exit_code == 0
    assert (tmp_path / LOG_DIR / "t1.1.stdout").read_text() == "out\n"
    assert result.stderr_tail == "err\n"
    assert result.finished >= result.started


def test_non_zero_exit_is_a_result(tmp_path):
    result = run(tmp_path, executable="sh", args=["-c", "echo boom >&2; exit 7"])
    assert not result.ok and result.exit_code == 7 and "boom" in result.stderr_tail


def test_redirect_files(tmp_path):
    (tmp_path / "app.log").write_text("old\n")
    run(tmp_path, executable="echo", args=["hello"], stdout="out.txt", stdoutAppend="app.log")
    assert (tmp_path / "out.txt").read_text() == "hello\n"
    assert (tmp_path / "app.log").read_text() == "old\nhello\n"
    run(tmp_path, executable="sh", args=["-c", "echo e >&2"], stderr="sub/err.txt")
    assert (tmp_path / "sub" / "err.txt").read_text() == "e\n"


def test_shell_true_interprets_pipes(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / name).write_text("")
    run(tmp_path, executable="ls", args=["|", "sort", "-r"], shell=True, stdout="o.txt")
    # sorted in reverse by `sort -r`: proof that the pipe ran (o.txt is written afterwards)
    assert (tmp_path / "o.txt").read_text().split() == ["logs-hf", "c", "b", "a"]


def test_list_args_with_pipe_are_not_interpreted(tmp_path):
    result = run(tmp_path, executable="echo", args=["a", "|", "sort", ";", "rm", "-rf", "x"],
                 stdout="o.txt")
    assert result.ok
    assert (tmp_path / "o.txt").read_text() == "a | sort ; rm -rf x\n"


def test_missing_executable(tmp_path):
    result = run(tmp_path, executable="no-such-binary-xyz")
    assert result.exit_code == 127
    assert "executable not found: 'no-such-binary-xyz'" in result.error


def test_not_executable(tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    os.chmod(script, stat.S_IRUSR | stat.S_IWUSR)
    result = run(tmp_path, executable="./script.sh")
    assert result.exit_code == 126 and "permission denied" in result.error


def test_relative_executable_runs_in_work_dir(tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\npwd > where.txt\n")
    script.chmod(0o755)
    assert run(tmp_path, executable="./job.sh").ok
    assert (tmp_path / "where.txt").read_text().strip() == str(tmp_path)


def test_killed_by_signal_is_reported(tmp_path):
    result = run(tmp_path, executable="sh", args=["-c", "kill -9 $$"])
    assert result.exit_code == 137 and result.error == "killed by signal 9"


def test_stub_sleep_runs_nothing(tmp_path):
    result = run(tmp_path, executable="no-such-binary", stub_sleep=0.05)
    assert result.ok and result.seconds >= 0.05
    assert not (tmp_path / LOG_DIR).exists()
