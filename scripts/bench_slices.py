"""bench_slices.py
===============
Cross-sections benchmark (shared design notes, docs/benchmarks.md, "Cross-sections (OReX inputs)"): shapes known
only on a few planes, reconstructed side by side, all methods in one process per input.

Inputs
  * ``cross_sections/orex/with_ref/*.csl`` with ``reference/<name>_scaled.stl`` (same frame as the CSL: checked
    by comparing bounds and by the reference's own contour fidelity, which must be ~1);
  * planes cut by ``slice_mesh`` from ``meshes/*.obj`` (layouts parallel along z, orthogonal, random; 10, 20, 30
    planes), scored against the source mesh. The cut planes are written to ``<out>/slices_inputs/*.csl``.
  ``--quick``: only eight_15, hand and the torus at 20 parallel planes.

Methods
  * ``naive``: nearest-slice extrusion (parallel planes only): each plane's polygons rasterised (even-odd) on an
    isotropic voxel grid (``--resolution`` voxels along the longest side of the contours' box padded 5 %) in the
    planes' common frame, each voxel slice copied from the nearest plane, empty more than half a spacing beyond
    the outermost planes; marching cubes on the zero-padded mask, mapped back to world.
  * ``itk``: ITK's morphological contour interpolation (what 3D Slicer's "fill between slices" runs; pip package
    ``itk-morphologicalcontourinterpolation``, NOT a fieldstudio dependency: skipped with a note when missing).
    Slicer's settings: label 0, heuristic alignment on, distance transform off, interpolation axis the planes'
    normal only (ITK counts axes in the reverse of NumPy's order). Labels only on the voxel slices holding a
    plane; the slice spacing is chosen so that every plane lies on a slice and at least one empty slice separates
    labelled ones. Parallel planes only. Its time excludes importing ITK (``meta.itk_import_seconds``).
  * ``fieldstudio``: a job of ``fieldstudio.api`` with the default field for cross-sections (Fourier MLP, 40,000
    parameters), ``--time-budget`` seconds for the whole fit, marching cubes at ``--resolution``.
  * ``hybrid``: the same with the NeuRBF hybrid preset for cross-sections (coarse grid + wide RBFs, 40,000).
  * ``orex``: the OReX-faithful configuration (its 31,436-parameter PE-MLP with 10 refinement iterations, Adam
    lr 1e-2 and weight decay 1e-3, its coarse-to-fine levels and gradient hinge) under the same budget; on a CPU it
    runs about 1.4 s per step, so it is far from converged here (OReX trains for hours on a GPU).
  Multi-label inputs are fitted as one object (their union), like the references.

Metrics per method: ``mesh_metrics`` against the reference, ``contour_fidelity`` (per-plane 2-D IoU of the mesh's
section with the input polygons; target >= 0.97 on every plane), ``roughness_deg`` (mean dihedral angle between
adjacent faces), watertightness, Euler number, wall time of the reconstruction (scoring excluded).

Writes ``<out>/slices.json`` and ``<out>/slices.md`` and the meshes under ``<out>/slices_runs/``.

    python scripts/bench_slices.py [--data ../shared/data] [--out results] [--time-budget 120] [--quick]

ITK's wrapped libraries can crash while the interpreter shuts down when several ITK threads ran (the shared
protocol notes it): once the results are written, the script leaves through ``os._exit`` when ITK was loaded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import torch
import trimesh

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fieldstudio.api import Request, configure_threads, fit_job  # noqa: E402
from fieldstudio.data.cross_sections import CrossSections, inside_2d, plane_basis, read_csl, write_csl  # noqa: E402
from fieldstudio.data.meshes import load_mesh  # noqa: E402
from fieldstudio.data.slicing import slice_mesh  # noqa: E402
from fieldstudio.errors import FieldStudioError  # noqa: E402
from fieldstudio.mesh import export_mesh, marching_cubes, transform_mesh  # noqa: E402
from fieldstudio.metrics import contour_fidelity, mesh_metrics, roughness_deg  # noqa: E402

METHODS = {"naive": "naive stacking", "itk": "ITK contour interp.", "orex": "OReX-faithful (31k)",
           "hybrid": "fieldstudio hybrid (40k)", "fieldstudio": "fieldstudio (MLP 40k)"}
# (field, params); None: what `fieldstudio fit` chooses (fieldstudio.api resolves the task's default field).
FIELDS = {"orex": ("orex", None), "hybrid": ("hybrid", 40_000), "fieldstudio": (None, None)}
LAYOUTS = ("parallel", "orthogonal", "random")
COUNTS = (10, 20, 30)
QUICK = {"orex": ["eight_15", "hand"], "sliced": [("odedstein_torus", "parallel", 20)]}
PAD = 0.05  # box padding of the voxel baselines, a fraction of the longest side


def default_data() -> Path:
    return ROOT.parent / "shared" / "data"


# ------------------------------------------------------------------------------------------------ inputs

@dataclass
class Input:
    name: str
    csl: Path               # the file fieldstudio fits
    cs: CrossSections       # the same contours (one object: the union of labels)
    reference: trimesh.Trimesh
    layout: str
    notes: list[str] = field(default_factory=list)


def _one_object(cs: CrossSections) -> CrossSections:
    return cs.union() if len(cs.labels()) > 1 else cs


def orex_inputs(data: Path, names: list[str] | None) -> list[Input]:
    folder = data / "cross_sections" / "orex" / "with_ref"
    out = []
    for path in sorted(folder.glob("*.csl")):
        if names is not None and path.stem not in names:
            continue
        ref_path = folder / "reference" / f"{path.stem}_scaled.stl"
        if not ref_path.exists():
            print(f"skip {path.name}: no reference {ref_path.name}", file=sys.stderr)
            continue
        cs = _one_object(read_csl(path))
        ref, _ = load_mesh(ref_path)
        normals = np.array([p.normal for p in cs.planes])
        families = len({tuple(np.round(np.abs(n), 3)) for n in normals})
        layout = "parallel" if families == 1 else ("2 directions" if families == 2 else "random")
        out.append(Input(path.stem, path, cs, ref, layout, list(cs.notes)))
    return out


def sliced_inputs(data: Path, out_dir: Path, quick: bool, meshes=None, layouts=LAYOUTS, counts=COUNTS) -> list[Input]:
    if quick:
        wanted = QUICK["sliced"]
    else:
        wanted = [(p.stem, layout, n) for p in sorted((data / "meshes").glob("*.obj"))
                  if meshes is None or p.stem in meshes for layout in layouts for n in counts]
    out, cache = [], {}
    for stem, layout, n in wanted:
        if stem not in cache:
            cache[stem] = load_mesh(data / "meshes" / f"{stem}.obj")[0]
        mesh = cache[stem]
        name = f"{stem}_{layout}_{n}"
        try:
            cs = slice_mesh(mesh, n, layout, axis="z", seed=0)
        except FieldStudioError as err:
            print(f"skip {name}: {err}", file=sys.stderr)
            continue
        path = write_csl(cs, out_dir / "slices_inputs" / f"{name}.csl")
        out.append(Input(name, path, cs, mesh, layout, list(cs.notes)))
    return out


def frame_check(inp: Input) -> dict:
    """Contours against the reference: how far the contours' box leaves the reference's (/ ref diagonal), and
    the reference's own contour fidelity (~1 when both are in one frame)."""
    ref_lo, ref_hi = inp.reference.bounds
    lo, hi = inp.cs.bounds()
    diag = float(np.linalg.norm(ref_hi - ref_lo))
    outside = float(np.max(np.concatenate([ref_lo - lo, hi - ref_hi]).clip(min=0)) / diag)
    fid = contour_fidelity(inp.reference, inp.cs)
    return {"contours_outside_ref_box": outside, "ref_contour_iou_min": fid["min"],
            "ref_contour_iou_mean": fid["mean"], "ref_roughness_deg": roughness_deg(inp.reference),
            "ref_bounds": np.asarray(inp.reference.bounds).tolist(), "contour_bounds": [lo.tolist(), hi.tolist()]}


# ------------------------------------------------------------------------------------------------ voxel baselines

@dataclass
class ParallelFrame:
    rotation: np.ndarray    # (3, 3): columns u, v, w (right-handed, w the common normal); world = rotation @ (a, b, c)
    offsets: np.ndarray     # (k,) each plane's w coordinate
    order: np.ndarray       # planes sorted by offset
    lo: np.ndarray          # contours' box in (a, b, c)
    hi: np.ndarray


def parallel_frame(cs: CrossSections) -> ParallelFrame | None:
    """The planes' common frame, or None if they are not all parallel."""
    planes = [p for p in cs.planes if p.loops]
    w = planes[0].normal
    if any(abs(float(p.normal @ w)) < 1.0 - 1e-9 for p in planes):
        return None
    u, v = plane_basis(w)
    rot = np.stack([u, v, w], axis=1)
    offsets = np.array([float(p.origin @ w) for p in planes])
    local = cs.all_vertices() @ rot
    return ParallelFrame(rot, offsets, np.argsort(offsets), local.min(axis=0), local.max(axis=0))


def _in_plane_grid(frame: ParallelFrame, resolution: int):
    """Isotropic voxel size and voxel-centre coordinates along a and b (padded box, ``resolution`` voxels along
    its longest side, the plane-normal direction included)."""
    ext = frame.hi - frame.lo
    pad = PAD * float(ext.max())
    h = float(ext.max() + 2 * pad) / resolution
    axes = []
    for k in range(2):
        n = int(math.ceil((ext[k] + 2 * pad) / h))
        start = 0.5 * (frame.lo[k] + frame.hi[k]) - 0.5 * n * h
        axes.append(start + (np.arange(n) + 0.5) * h)
    return h, pad, axes


def _rasterise(cs: CrossSections, frame: ParallelFrame, axes) -> list[np.ndarray]:
    """Each plane's polygons (even-odd) on the (a, b) grid, in ``frame.order``: (na, nb) bool masks."""
    planes = [p for p in cs.planes if p.loops]
    aa, bb = np.meshgrid(axes[0], axes[1], indexing="ij")
    masks = []
    for i in frame.order:
        p = planes[i]
        local = np.stack([aa.ravel(), bb.ravel(), np.full(aa.size, frame.offsets[i])], axis=1)
        world = local @ frame.rotation.T
        masks.append(inside_2d(p, p.to_2d(world)).reshape(aa.shape))
    return masks


def _mask_to_mesh(mask: np.ndarray, axes_abc: list[np.ndarray], rotation: np.ndarray) -> trimesh.Trimesh:
    """Marching cubes of a boolean mask on voxel centres ``axes_abc`` (uniform per axis), padded with one empty
    voxel on every side so the mesh is closed, mapped to world by ``rotation``."""
    vol = np.pad(np.where(mask, 0.0, 1.0).astype(np.float32), 1, constant_values=1.0)
    bounds = []
    for c in axes_abc:
        step = float(c[1] - c[0]) if len(c) > 1 else 1.0
        bounds.append((float(c[0]) - step, float(c[-1]) + step))
    mesh = marching_cubes(vol, level=0.5, bounds=bounds)
    m = np.eye(4)
    m[:3, :3] = rotation
    return transform_mesh(mesh, m)


def naive_stacking(cs: CrossSections, resolution: int) -> tuple[trimesh.Trimesh, dict]:
    frame = parallel_frame(cs)
    h, pad, axes = _in_plane_grid(frame, resolution)
    s = frame.offsets[frame.order]
    gaps = np.diff(s)
    first_half = 0.5 * (gaps[0] if len(gaps) else h)
    last_half = 0.5 * (gaps[-1] if len(gaps) else h)
    c_lo, c_hi = s[0] - first_half - pad, s[-1] + last_half + pad
    n_c = int(math.ceil((c_hi - c_lo) / h))
    c = c_lo + (np.arange(n_c) + 0.5) * h
    masks = np.stack(_rasterise(cs, frame, axes))                  # (k, na, nb)
    nearest = np.argmin(np.abs(c[:, None] - s[None, :]), axis=1)   # voxel slice -> nearest plane
    keep = (c >= s[0] - first_half) & (c <= s[-1] + last_half)
    vol = masks[nearest] & keep[:, None, None]                      # (nc, na, nb)
    vol = np.moveaxis(vol, 0, 2)                                    # (na, nb, nc)
    mesh = _mask_to_mesh(vol, [axes[0], axes[1], c], frame.rotation)
    return mesh, {"grid": list(vol.shape), "voxel": h}


def _itk_slices(s: np.ndarray, h: float) -> tuple[float, np.ndarray]:
    """Slice spacing and each plane's slice index (first plane at 0): planes on slices when evenly spaced, at
    least one unlabelled slice between labelled ones, spacing at most the in-plane voxel ``h``."""
    gaps = np.diff(s)
    if len(gaps) == 0:
        return h, np.zeros(1, dtype=np.int64)
    if np.ptp(gaps) <= 1e-3 * gaps.mean():
        per_gap = max(2, int(round(gaps.mean() / h)))
        hw = float(gaps.mean()) / per_gap
    else:
        hw = min(h, float(gaps.min()) / 2.0)
    idx = np.round((s - s[0]) / hw).astype(np.int64)
    assert np.all(np.diff(idx) >= 2), "labelled slices must be separated by an empty one"
    return hw, idx


def contour_interpolation(itk, labels: np.ndarray, axis: int) -> np.ndarray:
    """ITK's MorphologicalContourInterpolator with 3D Slicer's settings (all labels, heuristic alignment, no
    distance transform) filling between the labelled slices along NumPy ``axis``; a bool array."""
    flt = itk.MorphologicalContourInterpolator.New(itk.image_from_array(np.ascontiguousarray(labels)))
    flt.SetLabel(0)
    flt.SetHeuristicAlignment(True)
    flt.SetUseDistanceTransform(False)
    flt.SetAxis(2 - axis)  # ITK counts axes in the reverse NumPy order
    flt.Update()
    return itk.array_from_image(flt.GetOutput()) > 0


def itk_interpolation(cs: CrossSections, resolution: int, itk) -> tuple[trimesh.Trimesh, dict]:
    frame = parallel_frame(cs)
    h, _, axes = _in_plane_grid(frame, resolution)
    s = frame.offsets[frame.order]
    hw, idx = _itk_slices(s, h)
    n_c = int(idx[-1]) + 3  # one empty slice before the first plane and after the last
    masks = _rasterise(cs, frame, axes)
    labels = np.zeros((len(axes[0]), len(axes[1]), n_c), dtype=np.uint8)  # NumPy (a, b, c): ITK (c, b, a)
    for k, m in zip(idx, masks):
        labels[:, :, k + 1] = m
    filled = contour_interpolation(itk, labels, axis=2)  # c, the planes' normal
    c = s[0] + (np.arange(n_c) - 1) * hw
    mesh = _mask_to_mesh(filled, [axes[0], axes[1], c], frame.rotation)
    return mesh, {"grid": list(filled.shape), "voxel": h, "slice_spacing": hw}


def load_itk():
    """(itk module or None, seconds to import, note)."""
    t = time.perf_counter()
    try:
        import itk
        itk.MorphologicalContourInterpolator  # the lazy loader imports the module here
    except (ImportError, AttributeError) as err:
        return None, 0.0, (f"ITK contour interpolation unavailable ({type(err).__name__}: {err}); "
                           "pip install itk-morphologicalcontourinterpolation")
    return itk, time.perf_counter() - t, ""


# ------------------------------------------------------------------------------------------------ fieldstudio

def fieldstudio_fit(inp: Input, method: str, run_dir: Path, budget: float, resolution: int, seed: int,
                    overrides: dict | None = None):
    kind, params = FIELDS[method]
    request = Request(inp.csl, field=kind, params=params, labels="union", time_budget=budget, seed=seed,
                      resolution=resolution, overrides=dict(overrides or {}))
    result = fit_job(request, run_dir, overwrite=True).run()
    mesh = trimesh.load(result.files["mesh"], force="mesh", process=False)
    return mesh, {"params": result.metrics["params"], "steps": result.metrics["steps"],
                  "train_seconds": result.metrics["train_seconds"], "mesh_seconds": result.metrics["mesh_seconds"]}


# ------------------------------------------------------------------------------------------------ scoring

def score(mesh: trimesh.Trimesh, inp: Input, seed: int) -> dict:
    m = mesh_metrics(mesh, inp.reference, seed=seed)
    fid = contour_fidelity(mesh, inp.cs)
    return {"iou": m["iou"], "chamfer_l1": m["chamfer_l1"], "hd95": m["hd95"], "hausdorff": m["hausdorff"],
            "nae_deg": m["nae_deg"], "watertight": m["watertight_pred"],
            "euler": int(mesh.euler_number), "contour_iou_min": fid["min"], "contour_iou_mean": fid["mean"],
            "contour_iou": fid["per_plane"], "contour_open_chains": fid["open_chains"],
            "contour_missed_loops": len(fid["missed_loops"]),
            "roughness_deg": roughness_deg(mesh)}


def run_input(inp: Input, methods: list[str], args, itk_state) -> list[dict]:
    rows = []
    base = {"input": inp.name, "planes": len(inp.cs.planes), "layout": inp.layout}
    check = frame_check(inp)
    rows.append({**base, "method": "reference", **check})
    print(json.dumps({k: v for k, v in rows[-1].items() if "bounds" not in k}), flush=True)
    run_dir = args.out / "slices_runs" / inp.name
    run_dir.mkdir(parents=True, exist_ok=True)
    parallel = parallel_frame(inp.cs) is not None
    for method in methods:
        row = {**base, "method": method}
        if method in ("naive", "itk") and not parallel:
            row["skipped"] = f"planes not parallel ({inp.layout}); {METHODS[method]} takes parallel planes only"
        elif method == "itk" and itk_state[0] is None:
            row["skipped"] = itk_state[2]
        else:
            t = time.perf_counter()
            try:
                if method == "naive":
                    mesh, info = naive_stacking(inp.cs, args.resolution)
                elif method == "itk":
                    mesh, info = itk_interpolation(inp.cs, args.resolution, itk_state[0])
                else:
                    mesh, info = fieldstudio_fit(inp, method, run_dir / method, args.time_budget, args.resolution,
                                                 args.seed, args.overrides)
                row["seconds"] = round(time.perf_counter() - t, 2)
                row.update(info)
                if method not in FIELDS:
                    export_mesh(mesh, run_dir / f"{method}.ply")
                row.update(score(mesh, inp, args.seed))
            except Exception as err:  # a failed method is a result, not the end of the benchmark
                traceback.print_exc()
                row["error"] = f"{type(err).__name__}: {err}"
                row.setdefault("seconds", round(time.perf_counter() - t, 2))
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "contour_iou"}), flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ report

def _fmt(x, spec):
    return "" if x is None else format(x, spec)


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"Cross-sections, {meta['date']}, {meta['machine']}, fieldstudio budget {meta['time_budget_s']:.0f} s, "
             f"marching cubes / voxel grids {meta['resolution']}. Command: `{meta['command']}`", "",
             "| input | planes | method | time (s) | IoU | Chamfer-L1 | HD95 | Hausdorff | NAE (°) | "
             "contour IoU min / mean | roughness (°) | watertight | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['input']} | {r['planes']} {r['layout']} | "
        if r["method"] == "reference":
            lines.append(head + f"reference | | | | | | | {r['ref_contour_iou_min']:.3f} / {r['ref_contour_iou_mean']:.3f} "
                         f"| {r['ref_roughness_deg']:.2f} | | frame check: contours leave the ref box by "
                         f"{r['contours_outside_ref_box']:.1e} of its diagonal |")
            continue
        name = METHODS[r["method"]]
        if "skipped" in r:
            lines.append(head + f"{name} | | | | | | | | | | skipped: {r['skipped']} |")
            continue
        if "error" in r:
            lines.append(head + f"{name} | {r['seconds']:.1f} | | | | | | | | | failed: {r['error'][:200]} |")
            continue
        note = f"{r['steps']} steps" if "steps" in r else ""
        if r.get("contour_open_chains"):
            note += f" {r['contour_open_chains']} open section chains"
        if r.get("contour_missed_loops"):
            note += f" {r['contour_missed_loops']} contour(s) missing from the mesh"
        lines.append(head + f"{name} | {r['seconds']:.1f} | {r['iou']:.3f} | {r['chamfer_l1']:.2e} | "
                     f"{r['hd95']:.2e} | {r['hausdorff']:.2e} | {r['nae_deg']:.1f} | "
                     f"{r['contour_iou_min']:.3f} / {r['contour_iou_mean']:.3f} | {r['roughness_deg']:.2f} | "
                     f"{'yes' if r['watertight'] else 'no'} (χ {r['euler']}) | {note.strip()} |")
    if meta.get("itk_import_seconds"):
        lines += ["", f"Importing ITK took {meta['itk_import_seconds']:.1f} s (not in the ITK times)."]
    return "\n".join(lines) + "\n"


def parse_overrides(items: list[str]) -> dict:
    """``--set`` arguments (``KEY=VALUE``, the value read as JSON when it parses, else as text) as request
    overrides."""
    def value(text: str):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    bad = [item for item in items if "=" not in item]
    if bad:
        sys.exit(f"--set {bad[0]!r}: expected KEY=VALUE, e.g. slices.prior_weight=0")
    return {key: value(text) for key, text in (item.split("=", 1) for item in items)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    ap.add_argument("--time-budget", type=float, default=120.0, help="seconds per fieldstudio fit, all included")
    ap.add_argument("--resolution", type=int, default=256, help="marching cubes and voxel grids")
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--inputs", nargs="*", default=None, help="only inputs whose name contains one of these")
    ap.add_argument("--quick", action="store_true", help="eight_15, hand and the torus at 20 parallel planes")
    ap.add_argument("--meshes", nargs="*", default=None, help="meshes/ stems to cut (default: all)")
    ap.add_argument("--layouts", nargs="*", default=list(LAYOUTS), choices=list(LAYOUTS))
    ap.add_argument("--counts", nargs="*", type=int, default=list(COUNTS), help="plane counts of the cut inputs")
    ap.add_argument("--no-orex-inputs", action="store_true", help="only the inputs cut from meshes/")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides of the fieldstudio fits, e.g. slices.prior_weight=0")
    args = ap.parse_args()
    args.overrides = parse_overrides(args.set)
    if args.threads:
        configure_threads(args.threads)
    if not (args.data / "cross_sections").exists():
        sys.exit(f"missing {args.data / 'cross_sections'}; pass --data pointing at the shared data folder")
    args.out.mkdir(parents=True, exist_ok=True)

    itk_state = load_itk() if "itk" in args.methods else (None, 0.0, "not requested")
    if itk_state[2]:
        print(itk_state[2], file=sys.stderr)
    inputs = [] if args.no_orex_inputs else orex_inputs(args.data, QUICK["orex"] if args.quick else None)
    inputs += sliced_inputs(args.data, args.out, args.quick, args.meshes, args.layouts, args.counts)
    if args.inputs:
        inputs = [i for i in inputs if any(s in i.name for s in args.inputs)]

    rows = []
    for inp in inputs:
        rows += run_input(inp, args.methods, args, itk_state)

    machine = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
               f"({torch.get_num_threads()} threads)")
    meta = {"date": date.today().isoformat(), "machine": machine, "command": " ".join(sys.argv),
            "time_budget_s": args.time_budget, "resolution": args.resolution, "fields": FIELDS,
            "itk_import_seconds": round(itk_state[1], 2), "itk_note": itk_state[2]}
    (args.out / "slices.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    text = markdown(rows, meta)
    (args.out / "slices.md").write_text(text)
    print(text, flush=True)
    if itk_state[0] is not None:
        # ITK can crash during interpreter shutdown after multi-threaded filters; everything is written.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
