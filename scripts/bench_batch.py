"""bench_batch.py
==============
Throughput of ``fieldstudio batch`` on one machine: the same manifest (default ``examples/throughput.toml``,
fixed steps per item) with the local pool at 1 worker x all cores, N workers x 1 thread, and Ray (a private
instance, 1 CPU per task). Each configuration starts from an empty output folder; wall time is the whole command
(start-up, worker imports and the report included). Run it on a quiet machine.

    python scripts/bench_batch.py [--manifest examples/throughput.toml] [--repeats 1] [-o results/batch]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=ROOT / "examples" / "throughput.toml")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "results" / "batch")
    ap.add_argument("--only", default=None, help="run only the configurations whose name contains this")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    configs = {f"local 1 x {cores} threads": ["--workers", "1", "--threads", str(cores)],
               f"local {cores} x 1 thread": ["--workers", str(cores), "--threads", "1"],
               "ray, 1 CPU per task": ["--executor", "ray", "--threads", "1"]}
    rows = []
    for name, options in configs.items():
        if args.only and args.only not in name:
            continue
        for r in range(args.repeats):
            out = args.output / "runs" / name.split(",")[0].replace(" ", "_")
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "fieldstudio.app.cli", "batch", str(args.manifest),
                                   "-o", str(out), *options], capture_output=True, text=True)
            wall = time.perf_counter() - t
            report = json.loads((out / "report.json").read_text())
            items = report["items"]
            ok = sum(i["status"] == "done" for i in items)
            rows.append({"config": name, "repeat": r, "wall_s": round(wall, 1), "items": len(items), "done": ok,
                         "items_per_hour": round(3600 * len(items) / wall, 1), "exit": done.returncode,
                         "item_seconds": {i["name"]: i["seconds"] for i in items}})
            print(f"{name:28s} {wall:7.1f} s  {ok}/{len(items)} done  {rows[-1]['items_per_hour']:.1f} items/h",
                  flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"bench_batch{'_' + args.only.split()[0] if args.only else ''}.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d %H:%M"), "cores": cores, "manifest": str(args.manifest), "rows": rows},
        indent=2))


if __name__ == "__main__":
    main()
