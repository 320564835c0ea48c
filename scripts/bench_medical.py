"""bench_medical.py
=================
Medical slices benchmark (docs/benchmarks.md, "Medical slices"):

* ``heart.nii.gz`` (TotalSegmentator, 1.5 mm isotropic): keep every k-th axial slice (k = 4, 8, 12) from each
  offset, reconstruct, and score Dice and HD95 (mm) on the original voxel grid against the full mask, for
  naive stacking (each kept slice extruded over its slab of k slices), ITK's morphological contour
  interpolation (what 3D Slicer's "fill between slices" runs), shape-based (cubic signed-distance) interpolation
  (``--methods sdf``, not in the default set) and ``fieldstudio fit`` (its default field);
* three orthogonal sparse families (``axial:6,sagittal:6,coronal:6``), which slice-stacking tools cannot take;
* ``rtss.dcm`` (dicompyler): each ROI's mesh volume against the contour-area estimate (sum of contour areas ×
  plane spacing), and how well the mesh reproduces each contour (IoU of its cross-section on the contour's plane).

    python scripts/bench_medical.py [--ks 4 8 12] [--offsets all|0,4] [--budget 120] [--methods naive itk fieldstudio]
                                    [--families axial:6,sagittal:6,coronal:6] [--rois Heart "Lt Lung"] [--out results/medical]

Writes ``<out>/medical.json`` (every row, written after each one, so an interrupted run keeps what it measured
and a rerun skips the rows it has) and ``<out>/medical.md`` (tables for docs/benchmarks.md).
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

from bench_slices import contour_interpolation, load_itk, parse_overrides  # noqa: E402
from fieldstudio.api import Request, fit_job  # noqa: E402
from fieldstudio.data.cross_sections import signed_area_2d  # noqa: E402
from fieldstudio.data.medical_readers import read_label_volume, read_rtstruct  # noqa: E402
from fieldstudio.errors import FieldStudioError  # noqa: E402
from fieldstudio.io import atomic_write_json, atomic_write_text  # noqa: E402
from fieldstudio.metrics import contour_fidelity, dice, hd95_mm  # noqa: E402


def default_data() -> Path:
    return Path(os.environ.get("FIELDSTUDIO_DATA", ROOT.parent / "shared" / "data")) / "medical"


# ------------------------------------------------------------------------------------------------ baselines

def kept_slices(n: int, k: int, offset: int) -> np.ndarray:
    return np.arange(offset, n, k)


def naive_stacking(mask: np.ndarray, axis: int, k: int, offset: int) -> np.ndarray:
    """Every kept slice stands for the slab of k slices around it (k//2 before, the rest after), as stacking
    thick segmentations does; nothing beyond the outer slabs."""
    m = np.moveaxis(mask, axis, 0)
    out = np.zeros_like(m)
    for j in kept_slices(m.shape[0], k, offset):
        lo, hi = max(0, j - k // 2), min(m.shape[0], j + (k - k // 2))
        out[lo:hi] = m[j]
    return np.moveaxis(out, 0, axis)


def itk_interpolation(mask: np.ndarray, axis: int, k: int, offset: int, itk) -> np.ndarray:
    """ITK's contour interpolation (bench_slices.contour_interpolation) on a volume holding only the kept slices."""
    sparse = np.zeros(mask.shape, dtype=np.uint8)
    sl = [slice(None)] * 3
    sl[axis] = kept_slices(mask.shape[axis], k, offset)
    sparse[tuple(sl)] = mask[tuple(sl)]
    return contour_interpolation(itk, sparse, axis)


def sdf_interpolation(mask: np.ndarray, axis: int, k: int, offset: int, cap: float = 30.0) -> np.ndarray:
    """Shape-based interpolation, cubic: every kept slice's 2-D signed distance (voxels, negative inside; an empty
    slice +``cap``, and distances clamped there so far background does not dominate), interpolated along the slice
    axis by Catmull-Rom through the kept slices on both sides (linear at the ends), inside where negative. It
    follows a bulge two planes imply (the curvature of the section's growth), which a linear blend of two slices
    cannot; nothing beyond the first and last kept slices."""
    from scipy.ndimage import distance_transform_edt as edt

    m = np.moveaxis(mask, axis, 0)
    kept = kept_slices(m.shape[0], k, offset)
    d = [np.minimum(edt(~m[j]) - edt(m[j]), cap) if m[j].any() else np.full(m.shape[1:], cap) for j in kept]
    out = np.zeros_like(m)
    for i in range(len(kept) - 1):
        p1, p2 = d[i], d[i + 1]
        p0 = d[i - 1] if i > 0 else 2 * p1 - p2
        p3 = d[i + 2] if i + 2 < len(kept) else 2 * p2 - p1
        for z in range(kept[i], kept[i + 1] + 1):
            t = (z - kept[i]) / (kept[i + 1] - kept[i])
            v = 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                       + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
            out[z] = v < 0
    return np.moveaxis(out, 0, axis)


def mask_mesh(mask: np.ndarray, affine: np.ndarray):
    """Marching cubes of a voxel mask at 0.5 (zero-padded, so it closes), in world mm, faces outward: what a
    viewer shows for a stacked segmentation."""
    import mcubes
    import trimesh

    v, f = mcubes.marching_cubes(np.pad(mask.astype(np.float64), 1), 0.5)
    mesh = trimesh.Trimesh((v - 1.0) @ affine[:3, :3].T + affine[:3, 3], f)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


# ------------------------------------------------------------------------------------------------ fieldstudio

OVERRIDES: dict = {}  # --set: config overrides of every fieldstudio fit


def fieldstudio_volume(input_path: Path, run_dir: Path, budget: float, seed: int, **slices) -> dict:
    """What `fieldstudio fit INPUT --time-budget B --seed S` does, with ``slices`` options (every, offset, planes,
    labels) as the request's."""
    request = Request(input_path, time_budget=budget, seed=seed, overrides=dict(OVERRIDES), **slices)
    t = time.perf_counter()
    result = fit_job(request, run_dir).run()
    seconds = time.perf_counter() - t
    obj = result.objects[0] if result.objects else result
    m = obj.metrics
    return {"dice": m["dice"], "hd95_mm": m["hd95_mm"], "time_s": seconds, "steps": obj.steps,
            "volume_ml": m.get("volume_ml"), "mask_volume_ml": m.get("mask_volume_ml"),
            "watertight": m.get("mesh", {}).get("watertight")}


# ------------------------------------------------------------------------------------------------ RTSTRUCT

def contour_volume_ml(cs) -> tuple[float, float]:
    """Contour-area estimate of one object's sections: sum over its planes of the loops' area (holes subtract)
    × the plane spacing (the median gap between planes), in ml; and that spacing in mm."""
    areas, offsets = [], []
    for plane in cs.planes:
        areas.append(sum((-1 if p.is_hole else 1) * abs(signed_area_2d(plane.to_2d(p.points))) for p in plane.loops))
        offsets.append(float(np.dot(plane.normal, plane.origin)))
    gaps = np.abs(np.diff(np.sort(offsets)))
    spacing = float(np.median(gaps)) if len(gaps) else 0.0
    return float(np.sum(areas)) * spacing / 1000.0, spacing


def rtss_rows(path: Path, rois: list[str], out: Path, budget: float, seed: int) -> list[dict]:
    from fieldstudio.data.cross_sections import CrossSections
    from fieldstudio.data.meshes import load_mesh

    cs, names = read_rtstruct(path)
    by_name = {v: k for k, v in names.items()}
    rows = []
    for roi in rois:
        if roi not in by_name:
            print(f"rtss: no ROI named {roi!r}; it has {sorted(names.values())}")
            continue
        sel = cs.select(by_name[roi])
        only = CrossSections([p for p in sel.planes if p.loops], sel.notes, sel.source)  # the ROI's own planes
        estimate, spacing = contour_volume_ml(only)
        run_dir = out / "runs" / f"rtss_{roi.replace(' ', '_')}"
        t = time.perf_counter()
        request = Request(path, time_budget=budget, seed=seed, roi=roi, overrides=dict(OVERRIDES))
        result = fit_job(request, run_dir).run()
        seconds = time.perf_counter() - t
        obj = result.objects[0] if result.objects else result
        mesh, _ = load_mesh(obj.files["mesh"])
        fid = contour_fidelity(mesh, only)
        rows.append({"roi": roi, "planes": len(only.planes), "spacing_mm": spacing, "contour_volume_ml": estimate,
                     "mesh_volume_ml": abs(float(mesh.volume)) / 1000.0, "time_s": seconds, "steps": obj.steps,
                     "watertight": bool(mesh.is_watertight), "contour_iou_mean": fid["mean"],
                     "contour_iou_min": fid["min"]})
        r = rows[-1]
        r["volume_ratio"] = r["mesh_volume_ml"] / estimate if estimate else float("nan")
        print(f"rtss {roi}: mesh {r['mesh_volume_ml']:.1f} ml vs contours {estimate:.1f} ml "
              f"(ratio {r['volume_ratio']:.3f}), {seconds:.0f} s", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ report

def summarise(rows: list[dict]) -> list[dict]:
    """Per (k, method): Dice at offset 0, mean and worst over offsets; HD95 at offset 0 and mean; mean time."""
    out = []
    for k in sorted({r["k"] for r in rows}):
        for method in ("naive", "itk", "sdf", "fieldstudio"):
            rs = sorted((r for r in rows if r["k"] == k and r["method"] == method), key=lambda r: r["offset"])
            if not rs:
                continue
            d = np.array([r["dice"] for r in rs])
            h = np.array([r["hd95_mm"] for r in rs])
            first = rs[0] if rs[0]["offset"] == 0 else None
            out.append({"k": k, "method": method, "offsets": [r["offset"] for r in rs],
                        "dice_offset0": first["dice"] if first else None, "dice_mean": float(d.mean()),
                        "dice_min": float(d.min()), "hd95_offset0": first["hd95_mm"] if first else None,
                        "hd95_mean": float(h.mean()), "hd95_max": float(h.max()),
                        "time_s": float(np.mean([r["time_s"] for r in rs]))})
    return out


def markdown(report: dict) -> str:
    f = lambda v, p=4: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = [f"Medical slices, {report['date']}, command `{report['command']}`", "",
             f"**{report['machine']}**", "",
             "| k (spacing) | method | offsets | Dice @0 | Dice mean | Dice worst | HD95 @0 (mm) | HD95 mean | HD95 worst | time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in report["summary"]:
        lines.append(f"| {s['k']} ({1.5 * s['k']:g} mm) | {s['method']} | {len(s['offsets'])} | {f(s['dice_offset0'])} | "
                     f"{f(s['dice_mean'])} | {f(s['dice_min'])} | {f(s['hd95_offset0'], 2)} | {f(s['hd95_mean'], 2)} | "
                     f"{f(s['hd95_max'], 2)} | {s['time_s']:.1f} |")
    if report["families"]:
        lines += ["", "| plane families | method | Dice | HD95 (mm) | time (s) | steps |", "|---|---|---|---|---|---|"]
        for r in report["families"]:
            lines.append(f"| {r['families']} | fieldstudio | {r['dice']:.4f} | {r['hd95_mm']:.2f} | {r['time_s']:.0f} | "
                         f"{r['steps']} |")
    if report["rtss"]:
        lines += ["", "| RTSTRUCT ROI | planes | spacing (mm) | contour estimate (ml) | mesh (ml) | ratio | "
                  "contour IoU mean / min | watertight | time (s) |", "|---|---|---|---|---|---|---|---|---|"]
        for r in report["rtss"]:
            lines.append(f"| {r['roi']} | {r['planes']} | {r['spacing_mm']:.2f} | {r['contour_volume_ml']:.1f} | "
                         f"{r['mesh_volume_ml']:.1f} | {r['volume_ratio']:.3f} | "
                         f"{r.get('contour_iou_mean', float('nan')):.3f} / {r.get('contour_iou_min', float('nan')):.3f} | "
                         f"{r['watertight']} | {r['time_s']:.0f} |")
    for f in report.get("failures", []):
        lines.append(f"\nFailed: k = {f['k']}, offset {f['offset']}: {f['error']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--ks", type=int, nargs="+", default=[4, 8, 12])
    ap.add_argument("--offsets", default="all", help="all, or a comma list applied to every k (values >= k skipped)")
    ap.add_argument("--fs-offsets", default=None, help="offsets for fieldstudio only (default: --offsets)")
    ap.add_argument("--methods", nargs="+", default=["naive", "itk", "fieldstudio"])
    ap.add_argument("--budget", type=float, default=120.0, help="fieldstudio wall-clock seconds per fit")
    ap.add_argument("--families", default="axial:6,sagittal:6,coronal:6", help="'' to skip")
    ap.add_argument("--rois", nargs="*", default=["Heart", "Lt Lung"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "medical")
    ap.add_argument("--figure-k", type=int, default=8, help="write the full-mask and naive meshes at this k, offset 0")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides of the fieldstudio fits, e.g. slices.prior_weight=0")
    args = ap.parse_args()
    OVERRIDES.update(parse_overrides(args.set))

    heart = args.data / "totalsegmentator" / "heart.nii.gz"
    rtss = args.data / "dicompyler_rtstruct" / "rtss.dcm"
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "medical.json"
    report = json.loads(json_path.read_text()) if json_path.exists() else {"rows": [], "families": [], "rtss": []}
    report.update({"date": str(date.today()), "command": "python scripts/bench_medical.py " + " ".join(sys.argv[1:]),
                   "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.get_num_threads()} threads"})
    done = {(r["k"], r["offset"], r["method"]) for r in report["rows"]}

    def save():
        report["summary"] = summarise(report["rows"])
        atomic_write_json(json_path, report, indent=1)
        atomic_write_text(args.out / "medical.md", markdown(report))

    vol = read_label_volume(heart)
    mask = vol.data > 0
    axis = vol.slice_axis()
    spacing = vol.spacing
    meshes = args.out / "meshes"
    meshes.mkdir(exist_ok=True)
    mask_mesh(mask, vol.affine).export(meshes / "full_mask.stl")
    if args.figure_k:
        mask_mesh(naive_stacking(mask, axis, args.figure_k, 0), vol.affine).export(meshes / f"naive_k{args.figure_k}_o0.stl")
    itk, itk_import_s, note = load_itk() if "itk" in args.methods else (None, 0.0, "")
    if note:
        print(note)
    report["itk_import_s"] = itk_import_s

    def offsets_for(k: int, text: str) -> list[int]:
        return list(range(k)) if text == "all" else [o for o in map(int, text.split(",")) if o < k]

    for method in args.methods:
        for k in args.ks:
            chosen = offsets_for(k, args.fs_offsets or args.offsets if method == "fieldstudio" else args.offsets)
            for o in chosen:
                if (k, o, method) in done:
                    continue
                t = time.perf_counter()
                if method == "naive":
                    pred, extra = naive_stacking(mask, axis, k, o), {}
                elif method == "sdf":
                    pred, extra = sdf_interpolation(mask, axis, k, o), {}
                elif method == "itk":
                    if itk is None:
                        continue
                    pred, extra = itk_interpolation(mask, axis, k, o, itk), {}
                else:
                    try:
                        extra = fieldstudio_volume(heart, args.out / "runs" / f"heart_k{k}_o{o}", args.budget,
                                                   args.seed, every=k, offset=o)
                    except FieldStudioError as err:  # a failed fit is a result too: recorded, not fatal
                        report.setdefault("failures", []).append({"k": k, "offset": o, "error": str(err)})
                        print(f"k={k} offset={o} fieldstudio FAILED: {err}", flush=True)
                        save()
                        continue
                    pred = None
                row = {"k": k, "offset": o, "method": method}
                if pred is not None:
                    row.update(dice=dice(pred, mask), hd95_mm=hd95_mm(pred, mask, spacing),
                               time_s=time.perf_counter() - t)
                row.update(extra)
                report["rows"].append(row)
                print(f"k={k} offset={o} {method}: Dice {row['dice']:.4f} HD95 {row['hd95_mm']:.2f} mm "
                      f"({row['time_s']:.1f} s)", flush=True)
                save()

    if args.families and "fieldstudio" in args.methods and not any(r["families"] == args.families
                                                                   for r in report["families"]):
        tag = args.families.replace(":", "").replace(",", "_")
        row = fieldstudio_volume(heart, args.out / "runs" / f"heart_{tag}", args.budget, args.seed,
                                 planes=args.families)
        report["families"].append({"families": args.families, **row})
        print(f"{args.families}: Dice {row['dice']:.4f} HD95 {row['hd95_mm']:.2f} mm", flush=True)
        save()

    todo = [r for r in args.rois if r not in {x["roi"] for x in report["rtss"]}]
    if todo and "fieldstudio" in args.methods:
        report["rtss"] += rtss_rows(rtss, todo, args.out, args.budget, args.seed)
    save()
    print(markdown(report))


if __name__ == "__main__":
    main()
