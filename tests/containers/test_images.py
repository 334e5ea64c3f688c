"""The executor and operator images, run as the controller's pods run them.

A worker container consumes from the real broker and reports to the real Redis stream;
``docker stop`` is a warm shutdown (the running task finishes, its message is acknowledged
once, never redelivered); the Montage image runs Montage; the operator image runs the
controller's CLI.
"""

from __future__ import annotations

import importlib.util
import time

from tests.conftest import REPO, ready_messages, wait_for
from tests.containers.conftest import GENERIC, MONTAGE, OPERATOR, RESTRICTED


def logs(container) -> str:
    return container.logs().decode(errors="replace")[-3000:]


def test_the_worker_image_runs_restricted_and_reports_a_task(run_container, stream, namespace,
                                                             work):
    queue = f"{namespace}.generic"
    container = run_container(GENERIC, ["--queue", queue, "--loglevel", "INFO"], **RESTRICTED)
    stream.send(queue, "restricted", executable="sh", args=[
        "-c", "id -u > whoami; touch /opt/probe 2>/dev/null || echo read-only > rootfs"])
    result = stream.wait("restricted", timeout=120)
    assert result.exit_code == 0, logs(container)
    assert (work / "whoami").read_text().strip() == "1000"
    assert (work / "rootfs").read_text().strip() == "read-only"
    container.reload()
    host = container.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert container.attrs["Config"]["User"] == "1000:1000"


def test_docker_stop_is_a_warm_shutdown(run_container, stream, namespace, work, settings):
    queue = f"{namespace}.drain"
    container = run_container(GENERIC, ["--queue", queue, "--loglevel", "INFO"], **RESTRICTED)
    stream.send(queue, "long", executable="sh",
                args=["-c", "touch started; sleep 3; echo done > finished"])
    wait_for(lambda: (work / "started").exists(), timeout=120, what="the task to start")
    container.stop(timeout=60)  # SIGTERM, then (not needed here) SIGKILL after 60 s
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, logs(container)
    assert (work / "finished").read_text().strip() == "done", logs(container)
    result = stream.wait("long", timeout=10)
    assert result.exit_code == 0
    # Acknowledged once: nothing left in the queue to redeliver, no second result.
    assert ready_messages(settings, queue) == 0
    time.sleep(1.0)
    assert [r for r in stream.reader.read(block_ms=500) if r.task_id == "long"] == []


def test_the_montage_image_runs_montage(run_container, stream, namespace, work):
    spec = importlib.util.spec_from_file_location(
        "make_sky", REPO / "examples" / "montage" / "make_sky.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    module.make_sky(work, 2, 1, 64, seed=7)
    (work / "proj").mkdir(mode=0o777)
    (work / "proj").chmod(0o777)
    queue = f"{namespace}.mProject"
    container = run_container(MONTAGE, ["--queue", queue], **RESTRICTED)
    stream.send(queue, "project", executable="mProjectPP",
                args=["raw/tile_0_0.fits", "proj/p.fits", "region.hdr"])
    result = stream.wait("project", timeout=120)
    assert result.exit_code == 0, f"{result.stderr_tail}\n{logs(container)}"
    assert (work / "proj" / "p.fits").read_bytes()[:6] == b"SIMPLE"  # a FITS image


def test_the_operator_image_runs_the_controller(docker_client):
    out = docker_client.containers.run(OPERATOR, ["controller", "--help"], remove=True,
                                       user="1000:1000", read_only=True, cap_drop=["ALL"])
    assert b"Usage: hyperpool controller" in out and b"--all-namespaces" in out
