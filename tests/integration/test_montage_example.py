"""The main job on a small sky: real Montage tools through autoscaled local pools."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, hyperpool_env


def test_montage_mosaic_through_local_pools(tmp_path, namespace):
    out = tmp_path / "montage"
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "demo.py"), "--out", str(out), "--cols", "3",
         "--rows", "2", "--size", "120"],
        env=hyperpool_env(namespace, tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"demo: mosaic PNG: {out / 'mosaic.png'}" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    models = {name: v["model"] for name, v in summary["per_task_type"].items()}
    assert models == {"mProject": "pool", "mDiffFit": "pool", "mBackground": "pool",
                      "mImgtbl": "job", "mConcatFit": "job", "mBgModel": "job", "mAdd": "job",
                      "mViewer": "job"}
    assert summary["succeeded"] == summary["tasks_total"] == 6 + 11 + 6 + 6
    # check_mosaic printed the measured background spreads; after matching it is tiny.
    line = next(ln for ln in proc.stdout.splitlines() if "tile background spread" in ln)
    after = float(line.split("after ")[1].split(";")[0])
    assert after < 1.0, line
    assert (out / "mosaic.png").read_bytes()[:4] == b"\x89PNG"
