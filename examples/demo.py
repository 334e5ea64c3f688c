"""`make run`: the main job — a real Montage mosaic through autoscaled local worker pools.

1. synthesise a small sky of overlapping FITS tiles with injected background offsets;
2. write its HyperFlow workflow.json (mProject, mDiffFit, mBackground in pools; the rest in
   the job model);
3. `hyperpool run` it: the engine starts local pools at zero, they scale up as tasks arrive
   and back to zero after the cooldown;
4. check the mosaic is real (the offsets were removed) and print where the PNG is.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE / "montage"))

from check_mosaic import main as check_mosaic  # noqa: E402
from make_sky import make_sky  # noqa: E402
from make_workflow import make_workflow  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "montage-demo")
    parser.add_argument("--cols", type=int, default=4)
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--size", type=int, default=200)
    args, extra = parser.parse_known_args()
    missing = [t for t in ("mProjectPP", "mDiffFit", "mBackground", "mAdd", "mViewer")
               if shutil.which(t) is None]
    if missing:
        print(f"demo: Montage tools missing ({', '.join(missing)}); run `make services` "
              "(it installs Debian's montage and montage-gridtools)", file=sys.stderr)
        return 2
    shutil.rmtree(args.out, ignore_errors=True)
    truth = make_sky(args.out, args.cols, args.rows, args.size, seed=7)
    doc = make_workflow(args.out)
    print(f"demo: {len(truth['tiles'])} tiles, {len(doc['processes'])} tasks in {args.out}",
          flush=True)
    summary = args.out / "summary.json"
    run = subprocess.run([sys.executable, "-m", "hyperpool", "run", str(args.out),
                          "--cooldown", "5", "--json-summary", str(summary), *extra])
    if run.returncode != 0:
        return run.returncode
    data = json.loads(summary.read_text())
    print(f"demo: makespan {data['makespan_seconds']:.2f}s; per task type: " + ", ".join(
        f"{k} {v['count']}x {v['model']}" for k, v in data["per_task_type"].items()))
    sys.argv = ["check_mosaic", str(args.out)]
    code = check_mosaic()
    if code == 0:
        print(f"demo: mosaic PNG: {args.out / 'mosaic.png'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
