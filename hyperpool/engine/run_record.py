"""The run record in the work dir: which run ``--resume`` continues, and for which workflow."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hyperpool.engine.dag import Dag
from hyperpool.errors import ConfigError

RUN_META_DIR = ".hyperpool"
LAST_RUN_FILE = "last-run.json"


def workflow_digest(dag: Dag) -> str:
    try:
        return hashlib.sha256(Path(dag.workflow.source).read_bytes()).hexdigest()
    except OSError:
        return ""


def last_run(work_dir: Path, dag: Dag) -> str:
    """The run id to resume in ``work_dir``, checking the workflow did not change since."""
    path = work_dir / RUN_META_DIR / LAST_RUN_FILE
    try:
        meta = json.loads(path.read_text())
        run_id = str(meta["run_id"])
    except FileNotFoundError:
        raise ConfigError("nothing to resume: no earlier run was started in this directory",
                          source=str(work_dir)) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read the run record: {exc}", source=str(path)) from None
    if meta.get("workflow_sha256") and meta["workflow_sha256"] != workflow_digest(dag):
        raise ConfigError(f"workflow.json changed since run {run_id} started; cannot resume it",
                          source=str(work_dir))
    return run_id


