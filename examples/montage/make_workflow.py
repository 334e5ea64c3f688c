"""Generate the HyperFlow workflow.json of the Montage pipeline for a sky made by make_sky.py.

    mProject xN -> mImgtbl -> mDiffFit x pairs -> mConcatFit -> mBgModel
                -> mBackground xN -> mImgtbl -> mAdd -> mViewer (PNG)

A HyperFlow DAG is static, so everything data-dependent is decided here, as Montage's own
workflow generators do: the overlapping pairs come from running mImgtbl + mOverlaps over the
*raw* tiles now (falling back to the tile grid's 8-neighbours when Montage is not installed,
e.g. for stub runs), and the image tables list images in a fixed order (``mImgtbl -t``) so the
``cntr`` ids that mConcatFit and mBgModel match on are known before anything runs.

mProject (the mProjectPP executable), mDiffFit and mBackground run in worker pools
(workflow.config.executionModels.json); the rest runs in the job model. Every command runs in
the workflow directory with relative paths, argv as a list, no shell. Files each tool reads
without naming them (``*_area.fits`` beside every image) are declared as signals too, so the
DAG is honest for an engine that stages files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

POOLED = ["mProject", "mDiffFit", "mBackground"]
SUBDIRS = ("proj", "corr", "diffs", "stats")  # the tools write into these; they don't mkdir


def area(fits: str) -> str:
    """Montage's weight image beside ``fits``."""
    return fits.removesuffix(".fits") + "_area.fits"


def table(path: Path, names: list[str]) -> None:
    """An IPAC table with one ``fname`` column (mImgtbl -t keeps this order)."""
    width = max(len(n) for n in names) + 2
    lines = [f"| {'fname':<{width}}|", f"| {'char':<{width}}|"] + [f"  {n}" for n in names]
    path.write_text("\n".join(lines) + "\n")


def ipac_rows(path: Path) -> list[list[str]]:
    """Data rows of an IPAC table, split on whitespace (names here hold no spaces)."""
    return [line.split() for line in path.read_text().splitlines()
            if line.strip() and line[0] not in "|\\"]


def grid_pairs(rows: int, cols: int) -> list[tuple[int, int]]:
    """Overlapping tile pairs of make_sky's grid (75% step: 8-neighbours overlap)."""
    out = []
    for a in range(rows * cols):
        for b in range(a + 1, rows * cols):
            ra, ca, rb, cb = a // cols, a % cols, b // cols, b % cols
            if abs(ra - rb) <= 1 and abs(ca - cb) <= 1:
                out.append((a, b))
    return out


def montage_pairs(out: Path, raw: list[str]) -> list[tuple[int, int]]:
    """Overlapping pairs by Montage itself: mImgtbl -t (ids = list order) + mOverlaps."""
    table(out / "raw" / "list.tbl", raw)
    for argv in (["mImgtbl", "-t", "raw/list.tbl", ".", "raw/images.tbl"],
                 ["mOverlaps", "raw/images.tbl", "raw/overlaps.tbl"]):
        done = subprocess.run(argv, cwd=out, capture_output=True, text=True)
        if done.returncode != 0 or 'stat="OK"' not in done.stdout:
            raise SystemExit(f"make_workflow: {' '.join(argv)}: {done.stdout}{done.stderr}")
    ids = [(int(r[0]), int(r[1])) for r in ipac_rows(out / "raw" / "overlaps.tbl")]
    return sorted({(min(a, b), max(a, b)) for a, b in ids})


class Builder:
    """Collects processes and their signals (by file name) in HyperFlow's current format."""

    def __init__(self) -> None:
        self.processes: list[dict[str, Any]] = []
        self.signals: dict[str, dict[str, Any]] = {}

    def add(self, task_type: str, executable: str, args: list[str], ins: list[str],
            outs: list[str]) -> None:
        for name in (*ins, *outs):
            self.signals.setdefault(name, {"name": name})
        self.processes.append({
            "name": task_type, "type": "dataflow", "function": "command", "firingLimit": 1,
            "config": {"executor": {"executable": executable, "args": args}},
            "ins": list(ins), "outs": list(outs)})

    def document(self, name: str, outs: list[str]) -> dict[str, Any]:
        """The workflow: signals nobody produces are initial inputs (``data: [{}]``)."""
        produced = {o for p in self.processes for o in p["outs"]}
        signals = [s if s["name"] in produced else s | {"data": [{}]}
                   for s in self.signals.values()]
        return {"name": name, "processes": self.processes, "signals": signals,
                "ins": [s["name"] for s in signals if "data" in s], "outs": outs}


def make_workflow(out: Path, use_montage: bool | None = None) -> dict[str, Any]:
    """Write workflow.json, executionModels and the static tables into ``out``.

    ``use_montage`` None: compute overlaps with mOverlaps when it is installed.
    """
    truth = json.loads((out / "truth.json").read_text())
    rows, cols = truth["rows"], truth["cols"]
    tiles = [f"tile_{r}_{c}.fits" for r in range(rows) for c in range(cols)]
    for sub in SUBDIRS:
        (out / sub).mkdir(exist_ok=True)
    raw = [f"raw/{t}" for t in tiles]
    projected = [f"proj/p_{t}" for t in tiles]
    corrected = [f"corr/c_{t}" for t in tiles]
    if use_montage is None:
        use_montage = shutil.which("mOverlaps") is not None and shutil.which("mImgtbl") is not None
    overlaps = montage_pairs(out, raw) if use_montage else grid_pairs(rows, cols)
    # Static inputs of the job-model steps: image lists (fixing cntr ids) and the fit list.
    table(out / "plist.tbl", projected)
    table(out / "clist.tbl", corrected)
    stat_lines = ["| cntr1 | cntr2 | stat                 |",
                  "| int   | int   | char                 |"]
    stat_lines += [f"  {a:5d}   {b:5d}   fit.{a}.{b}.txt" for a, b in overlaps]
    (out / "statfiles.tbl").write_text("\n".join(stat_lines) + "\n")

    wf = Builder()
    for source, proj in zip(raw, projected, strict=True):
        wf.add("mProject", "mProjectPP", [source, proj, "region.hdr"],
               [source, "region.hdr"], [proj, area(proj)])
    wf.add("mImgtbl", "mImgtbl", ["-t", "plist.tbl", ".", "pimages.tbl"],
           [*projected, "plist.tbl"], ["pimages.tbl"])
    fits = []
    for a, b in overlaps:
        stat = f"stats/fit.{a}.{b}.txt"
        fits.append(stat)
        pa, pb = projected[a], projected[b]
        wf.add("mDiffFit", "mDiffFit",
               ["-s", stat, pa, pb, f"diffs/diff.{a}.{b}.fits", "region.hdr"],
               [pa, area(pa), pb, area(pb), "region.hdr"], [stat])
    wf.add("mConcatFit", "mConcatFit", ["statfiles.tbl", "fits.tbl", "stats"],
           [*fits, "statfiles.tbl"], ["fits.tbl"])
    wf.add("mBgModel", "mBgModel", ["pimages.tbl", "fits.tbl", "corrections.tbl"],
           ["pimages.tbl", "fits.tbl"], ["corrections.tbl"])
    for proj, corr in zip(projected, corrected, strict=True):
        wf.add("mBackground", "mBackground",
               ["-t", proj, corr, "pimages.tbl", "corrections.tbl"],
               [proj, area(proj), "pimages.tbl", "corrections.tbl"], [corr, area(corr)])
    wf.add("mImgtbl", "mImgtbl", ["-t", "clist.tbl", ".", "cimages.tbl"],
           [*corrected, "clist.tbl"], ["cimages.tbl"])
    wf.add("mAdd", "mAdd", ["cimages.tbl", "region.hdr", "mosaic.fits"],
           ["cimages.tbl", "region.hdr", *corrected, *map(area, corrected)], ["mosaic.fits"])
    wf.add("mViewer", "mViewer", ["-gray", "mosaic.fits", "-1s", "max", "gaussian-log",
                                  "-out", "mosaic.png"], ["mosaic.fits"], ["mosaic.png"])

    doc = wf.document(f"montage-{cols}x{rows}", ["mosaic.fits", "mosaic.png"])
    (out / "workflow.json").write_text(json.dumps(doc, indent=1))
    (out / "workflow.config.executionModels.json").write_text(
        json.dumps([{"name": n} for n in POOLED], indent=1))
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--grid-overlaps", action="store_true",
                        help="take overlaps from the tile grid instead of running mOverlaps")
    args = parser.parse_args()
    doc = make_workflow(args.outdir, False if args.grid_overlaps else None)
    counts: dict[str, int] = {}
    for proc in doc["processes"]:
        counts[proc["name"]] = counts.get(proc["name"], 0) + 1
    print(f"workflow.json: {len(doc['processes'])} tasks: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
