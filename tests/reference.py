"""Reference data that lives outside the repository, found through one setting.

Real HyperFlow workflow files (``workflows/``), the KEDA and Prometheus Operator CRD schemas
(``crds/``) and the HyperFlow Worker Pool Operator's design documents (``seeds/``) are not the
project's to ship. Tests that need them ask :func:`reference_file`, which skips the test, naming
the setting and the data, when they are absent; ``.ci/run`` refuses to start without them, so CI
never skips these tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SETTING = "HYPERPOOL_REFERENCE_DIR"
WHAT = {
    "workflows": "real HyperFlow workflow files",
    "crds": "the KEDA and Prometheus Operator CRD schemas",
    "seeds": "the HyperFlow Worker Pool Operator's design documents",
}


def reference_dir() -> Path:
    """``$HYPERPOOL_REFERENCE_DIR``, or ``../shared`` beside the clone when it is unset."""
    return Path(os.environ.get(SETTING) or REPO.parent / "shared").expanduser()


def missing(part: str, path: Path) -> str:
    """Why a test or benchmark cannot run without ``path``, and what to do."""
    return (f"needs {WHAT[part]} ({path} does not exist): set {SETTING} to the directory "
            f"that holds {part}/ (default: ../shared beside the clone)")


def reference_file(part: str, name: str) -> Path:
    """The file ``name`` of the reference data's ``part``; skips the test when it is absent."""
    path = reference_dir() / part / name
    if not path.is_file():
        pytest.skip(missing(part, path))
    return path


def workflow_file(name: str) -> Path:
    """A real HyperFlow workflow: ``soykb-52`` is ``workflows/soykb-52.workflow.json``."""
    return reference_file("workflows", f"{name}.workflow.json")
