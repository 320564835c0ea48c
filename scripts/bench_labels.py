"""bench_labels.py
================
Several labels in one input (docs/benchmarks.md, "Several labels"): the same input fitted with
``--multi-label joint`` (one field for all labels) and ``--multi-label separate`` (one field per label, in turn) at
the same time budget, default settings otherwise. Per label: steps, seconds, faces, watertight, and for label maps
Dice and HD95 (mm) of the mesh voxelised on the input grid against the full mask of that label.

    python scripts/bench_labels.py INPUT [--labels each|1,2,3] [--budget 300] [--modes joint separate]
                                         [--out results/labels] [--name NAME]

Writes ``<out>/<name>.json`` (every run, written after each) and ``<out>/<name>.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fieldstudio.api import Request, fit_job  # noqa: E402
from fieldstudio.errors import FieldStudioError  # noqa: E402
from fieldstudio.io import atomic_write_json, atomic_write_text  # noqa: E402


def run(input_path: Path, mode: str, labels: str, budget: float, run_dir: Path) -> dict:
    shutil.rmtree(run_dir, ignore_errors=True)
    job = fit_job(Request(input_path, labels=labels, multi_label=mode, time_budget=budget), run_dir)
    t0 = time.perf_counter()
    error = None
    try:
        job.run()
    except FieldStudioError as err:  # objects without a surface: the others are still measured
        error = str(err)
    return {"mode": mode, "seconds": round(time.perf_counter() - t0, 1), "error": error,
            **collect(input_path, run_dir)}


def collect(input_path: Path, run_dir: Path) -> dict:
    """Per object of a finished run folder: steps, faces, watertight, Dice / HD95 (label maps) and, for CSL inputs,
    the mean IoU of the mesh's sections with the label's contours on the planes where either has area."""
    import trimesh

    from fieldstudio.data.cross_sections import read_csl
    from fieldstudio.metrics import contour_fidelity

    top = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    cs = read_csl(input_path) if input_path.suffix == ".csl" else None
    rows = []
    for obj in top.get("objects", []):
        row = {"name": obj["name"], "label": obj["label"], "ok": "error" not in obj}
        sub = run_dir / obj["name"] / "metrics.json"
        if row["ok"] and sub.exists():
            m = json.loads(sub.read_text())
            row.update({"steps": m.get("steps"), "faces": m["mesh"]["n_faces"],
                        "watertight": m["mesh"]["watertight"], "dice": m.get("dice"), "hd95_mm": m.get("hd95_mm"),
                        "seconds": m.get("total_seconds", obj.get("total_seconds"))})
            if cs is not None:
                own = cs.select(obj["label"])
                fid = contour_fidelity(trimesh.load(run_dir / obj["name"] / "mesh.ply", process=False), own)
                scored = [iou for p, iou in zip(own.planes, fid["per_plane"]) if p.loops or iou < 1.0]
                row["contour_iou"] = float(np.mean(scored))
        else:
            row["error"] = obj.get("error", "")[:120]
        rows.append(row)
    return {"steps": top.get("steps"), "notes": top.get("notes", []), "objects": rows}


def table(results: list[dict]) -> str:
    modes = [r["mode"] for r in results]
    names = [o["name"] for o in results[0]["objects"]]
    what = "Dice, HD95 mm" if any(o.get("dice") is not None for o in results[0]["objects"]) else "contour IoU"
    head = "| label | " + " | ".join(f"{m}: steps, watertight, {what}" for m in modes) + " |"
    lines = [head, "|---|" + "---|" * len(modes)]

    def cell(o):
        if not o.get("ok"):
            return "no surface"
        dice = f", {o['dice']:.3f}, {o['hd95_mm']:.1f}" if o.get("dice") is not None else ""
        contour = f", {o['contour_iou']:.3f}" if o.get("contour_iou") is not None else ""
        return f"{o['steps']}, {'yes' if o['watertight'] else 'NO'}{dice}{contour}"

    for name in names:
        cells = [cell(next((o for o in r["objects"] if o["name"] == name), {})) for r in results]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    summary = []
    for r in results:
        done = [o for o in r["objects"] if o.get("ok")]
        dices = [o["dice"] for o in done if o.get("dice") is not None]
        text = (f"{r['mode']}: {r['seconds']:.0f} s, {len(done)} of {len(r['objects'])} meshed, "
                f"{sum(bool(o.get('watertight')) for o in done)} watertight")
        if dices:
            text += f", mean Dice {np.mean(dices):.3f} over the meshed ones"
        contour = [o["contour_iou"] for o in done if o.get("contour_iou") is not None]
        if contour:
            text += f", mean contour IoU {np.mean(contour):.3f} over the meshed ones"
        summary.append(text)
    return "\n".join(lines) + "\n\n" + "; ".join(summary) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", type=Path)
    ap.add_argument("--labels", default="each")
    ap.add_argument("--budget", type=float, default=300.0)
    ap.add_argument("--modes", nargs="+", default=["joint", "separate"])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "labels")
    ap.add_argument("--name", default=None)
    ap.add_argument("--rescore", action="store_true", help="score the run folders already in --out again, no fits")
    args = ap.parse_args()
    name = args.name or args.input.name.split(".")[0]
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    if args.rescore:
        old = {r["mode"]: r for r in json.loads((args.out / f"{name}.json").read_text())["results"]}
        results = [{**old[m], **collect(args.input, args.out / f"{name}_{m}")} for m in args.modes]
        atomic_write_text(args.out / f"{name}.md", table(results))
        print(table(results))
        return
    for mode in args.modes:
        print(f"{name}: {mode} ...", flush=True)
        results.append(run(args.input, mode, args.labels, args.budget, args.out / f"{name}_{mode}"))
        atomic_write_json(args.out / f"{name}.json", {
            "date": date.today().isoformat(), "machine": f"{platform.node()} ({platform.processor() or 'cpu'})",
            "command": " ".join(sys.argv), "budget": args.budget, "results": results})
        print(f"  {results[-1]['seconds']} s, error: {results[-1]['error']}", flush=True)
    atomic_write_text(args.out / f"{name}.md", table(results))
    print(table(results))


if __name__ == "__main__":
    main()
