"""Generate the HyperFlow workflow.json of the Montage pipeline for a sky made by make_sky.py.

The DAG is static, as HyperFlow needs: overlapping tile pairs are known from the tile grid
(8-neighbours), and the image tables list images in a fixed order (``mImgtbl -t``) so the
``cntr`` ids that mConcatFit and mBgModel match on are known when the workflow is written.

    mProject xN -> mImgtbl -> (mDiffFit x pairs -> mConcatFit) -> mBgModel
                -> mBackground xN -> mImgtbl -> mAdd -> mViewer

mProject, mDiffFit and mBackground run in worker pools (executionModels.json); the rest runs in
the job model. Every command runs in the workflow directory with relative paths and no shell.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

POOLED = ["mProject", "mDiffFit", "mBackground"]


def table(path: Path, names: list[str]) -> None:
    """An IPAC table with one ``fname`` column (mImgtbl -t keeps this order)."""
    width = max(len(n) for n in names) + 2
    lines = [f"| {'fname':<{width}}|", f"| {'char':<{width}}|"] + [f"  {n}" for n in names]
    path.write_text("\n".join(lines) + "\n")


def pairs(rows: int, cols: int) -> list[tuple[int, int]]:
    out = []
    for a in range(rows * cols):
        for b in range(a + 1, rows * cols):
            ra, ca, rb, cb = a // cols, a % cols, b // cols, b % cols
            if abs(ra - rb) <= 1 and abs(ca - cb) <= 1:
                out.append((a, b))
    return out


class Builder:
    def __init__(self) -> None:
        self.processes: list[dict] = []
        self.signals: dict[str, dict] = {}

    def signal(self, name: str) -> str:
        self.signals.setdefault(name, {"name": name})
        return name

    def add(self, task_type: str, executable: str, args: list[str], ins: list[str],
            outs: list[str]) -> None:
        self.processes.append({
            "name": task_type, "type": "dataflow", "function": "command", "firingLimit": 1,
            "config": {"executor": {"executable": executable, "args": args}},
            "ins": [self.signal(i) for i in ins], "outs": [self.signal(o) for o in outs]})


def make_workflow(out: Path) -> dict:
    truth = json.loads((out / "truth.json").read_text())
    rows, cols = truth["rows"], truth["cols"]
    tiles = [f"tile_{r}_{c}.fits" for r in range(rows) for c in range(cols)]
    for sub in ("proj", "corr", "diffs", "stats"):
        (out / sub).mkdir(exist_ok=True)
    projected = [f"proj/p_{t}" for t in tiles]
    corrected = [f"corr/c_{t}" for t in tiles]
    table(out / "plist.tbl", projected)
    table(out / "clist.tbl", corrected)
    overlaps = pairs(rows, cols)
    stat_lines = ["| cntr1 | cntr2 | stat                 |",
                  "| int   | int   | char                 |"]
    stat_lines += [f"  {a:5d}   {b:5d}   fit.{a}.{b}.txt" for a, b in overlaps]
    (out / "statfiles.tbl").write_text("\n".join(stat_lines) + "\n")

    wf = Builder()
    for tile, proj in zip(tiles, projected, strict=True):
        wf.add("mProject", "mProjectPP", [f"raw/{tile}", proj, "region.hdr"],
               [f"raw/{tile}", "region.hdr"], [proj])
    wf.add("mImgtbl", "mImgtbl", ["-t", "plist.tbl", ".", "pimages.tbl"],
           [*projected, "plist.tbl"], ["pimages.tbl"])
    fits = []
    for a, b in overlaps:
        stat = f"stats/fit.{a}.{b}.txt"
        fits.append(stat)
        wf.add("mDiffFit", "mDiffFit", ["-s", stat, projected[a], projected[b],
                                        f"diffs/diff.{a}.{b}.fits", "region.hdr"],
               [projected[a], projected[b], "region.hdr"], [stat])
    wf.add("mConcatFit", "mConcatFit", ["statfiles.tbl", "fits.tbl", "stats"],
           [*fits, "statfiles.tbl"], ["fits.tbl"])
    wf.add("mBgModel", "mBgModel", ["pimages.tbl", "fits.tbl", "corrections.tbl"],
           ["pimages.tbl", "fits.tbl"], ["corrections.tbl"])
    for proj, corr in zip(projected, corrected, strict=True):
        wf.add("mBackground", "mBackground",
               ["-t", proj, corr, "pimages.tbl", "corrections.tbl"],
               [proj, "pimages.tbl", "corrections.tbl"], [corr])
    wf.add("mImgtbl", "mImgtbl", ["-t", "clist.tbl", ".", "cimages.tbl"],
           [*corrected, "clist.tbl"], ["cimages.tbl"])
    wf.add("mAdd", "mAdd", ["cimages.tbl", "region.hdr", "mosaic.fits"],
           ["cimages.tbl", "region.hdr"], ["mosaic.fits"])
    wf.add("mViewer", "mViewer", ["-gray", "mosaic.fits", "-1s", "max", "gaussian-log",
                                  "-out", "mosaic.png"], ["mosaic.fits"], ["mosaic.png"])

    produced = {o for p in wf.processes for o in p["outs"]}
    signals = [dict(s, data=[{}]) if s["name"] not in produced else s
               for s in wf.signals.values()]
    names = [s["name"] for s in signals]
    doc = {"name": f"montage-{rows}x{cols}", "processes": wf.processes, "signals": signals,
           "ins": [n for n in names if n not in produced], "outs": ["mosaic.png"]}
    (out / "workflow.json").write_text(json.dumps(doc, indent=1))
    (out / "workflow.config.executionModels.json").write_text(
        json.dumps([{"name": n} for n in POOLED], indent=1))
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    doc = make_workflow(parser.parse_args().outdir)
    counts: dict[str, int] = {}
    for proc in doc["processes"]:
        counts[proc["name"]] = counts.get(proc["name"], 0) + 1
    print(f"workflow.json: {len(doc['processes'])} tasks "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
