"""bench_sdf.py
============
SDF fitting benchmark (docs/benchmarks.md of the shared design notes): NeuRBF hybrid vs hash-grid only vs
Fourier-feature MLP at an equal parameter budget and an equal wall-clock budget, all in one process.

Writes ``results/sdf.json`` and ``results/sdf.md`` (the table quoted in docs/benchmarks.md).

    python scripts/bench_sdf.py [--data ../shared/data] [--time-budget 120] [--params 450000] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fieldstudio.api import Request, configure_threads, fit_job  # noqa: E402
from fieldstudio.errors import FieldStudioError  # noqa: E402
from bench_slices import parse_overrides  # noqa: E402

MESHES = ["odedstein_bunny.obj", "odedstein_armadillo.obj", "ajc_spot.obj", "ajc_fandisk.obj"]
METHODS = {"hybrid": "NeuRBF hybrid", "grid": "hash grid only", "mlp": "Fourier MLP"}


def default_data() -> Path:
    return ROOT.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--time-budget", type=float, default=120.0, help="seconds per fit, set-up and meshing included")
    ap.add_argument("--params", type=int, default=None, help="parameter budget (default: the task's, as `fit`)")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--meshes", nargs="*", default=MESHES)
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seeds", nargs="*", type=int, default=None,
                    help="fit each mesh once per seed (train.seed: samples, initial weights, batches); with more "
                         "than one, the table ends with the median and range per mesh and method")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides of every fit, e.g. mesh.smooth_iterations=0")
    args = ap.parse_args()
    overrides = parse_overrides(args.set)
    configure_threads(args.threads)

    runs_dir = args.out / "sdf_runs"
    seeds = args.seeds or [overrides.get("train.seed", 0)]
    rows = []
    for mesh_name in args.meshes:
        path = args.data / "meshes" / mesh_name
        if not path.exists():
            sys.exit(f"missing {path}; pass --data pointing at the shared data folder")
        for method, seed in ((m, s) for m in args.methods for s in seeds):
            request = Request(path, field=method, params=args.params, time_budget=args.time_budget,
                              resolution=args.resolution, overrides={**overrides, "train.seed": seed})
            run_name = f"{Path(mesh_name).stem}_{method}" + (f"_seed{seed}" if len(seeds) > 1 else "")
            t = time.perf_counter()
            try:
                m = fit_job(request, runs_dir / run_name, overwrite=True).run().metrics
            except FieldStudioError as err:  # e.g. a field with no surface yet: a result, not a crash
                rows.append({"mesh": mesh_name, "method": method, "seed": seed, "error": str(err),
                             "seconds": round(time.perf_counter() - t, 1)})
                print(json.dumps(rows[-1]), flush=True)
                continue
            rows.append({"mesh": mesh_name, "method": method, "seed": seed, "params": m["params"], "steps": m["steps"],
                         "seconds": round(time.perf_counter() - t, 1), "train_seconds": m["train_seconds"],
                         "mesh_seconds": m["mesh_seconds"], "iou": m["iou"],
                         "chamfer_l1": m["chamfer_l1"], "hausdorff": m["hausdorff"], "nae_deg": m["nae_deg"],
                         "watertight": m["mesh"]["watertight"]})
            print(json.dumps(rows[-1]), flush=True)

    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"date": date.today().isoformat(), "machine": machine, "command": " ".join(sys.argv),
            "time_budget_s": args.time_budget, "params": args.params, "resolution": args.resolution,
            "overrides": overrides}
    (args.out / "sdf.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"SDF fitting, {meta['date']}, {machine}, budget {args.time_budget:.0f} s and "
             f"{f'{args.params:,}' if args.params else 'the default'} params, "
             f"marching cubes {args.resolution}^3. Command: `{meta['command']}`", "",
             "| mesh | method | seed | params | steps | train / mesh / total (s) | IoU | Chamfer-L1 | Hausdorff | NAE (°) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {Path(r['mesh']).stem} | {METHODS[r['method']]} | {r['seed']} | | | {r['seconds']} | "
                         f"failed: {r['error']} | | | |")
            continue
        lines.append(f"| {Path(r['mesh']).stem} | {METHODS[r['method']]} | {r['seed']} | {r['params']:,} | {r['steps']} | "
                     f"{r['train_seconds']:.0f} / {r['mesh_seconds']:.0f} / {r['seconds']:.0f} | {r['iou']:.4f} | "
                     f"{r['chamfer_l1']:.2e} | {r['hausdorff']:.2e} | {r['nae_deg']:.2f} |")
    if len(seeds) > 1:
        lines += ["", spread_table(rows)]
    (args.out / "sdf.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def spread_table(rows: list[dict]) -> str:
    """Median [min, max] of each metric over the seeds of each mesh and method (fits that failed are counted)."""
    keys = (("iou", "{:.4f}"), ("chamfer_l1", "{:.2e}"), ("hausdorff", "{:.2e}"), ("nae_deg", "{:.2f}"))
    out = ["| mesh | method | fits | IoU | Chamfer-L1 | Hausdorff | NAE (°) |", "|---|---|---|---|---|---|---|"]
    for mesh, method in dict.fromkeys((r["mesh"], r["method"]) for r in rows):
        group = [r for r in rows if (r["mesh"], r["method"]) == (mesh, method)]
        done = [r for r in group if "error" not in r]
        cells = []
        for key, fmt in keys:
            v = np.array([r[key] for r in done])
            cells.append(" ".join([fmt.format(np.median(v)), "[" + fmt.format(v.min()), "-",
                                   fmt.format(v.max()) + "]"]) if len(v) else "")
        out.append(f"| {Path(mesh).stem} | {METHODS[method]} | {len(done)} of {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
