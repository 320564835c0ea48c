"""run.py
======
A run directory end to end: load the input, build task and field, train (resumable), mesh, score, write files.

Both faces (CLI, GUI) call ``fit`` and ``mesh_from_run``; neither prints. Layout of ``RUN_DIR``:
``config.toml`` (resolved config), ``checkpoint.pt`` (field, optimiser, step, frame), ``metrics.json``,
``mesh.ply`` (in the input's frame). Every file is written atomically.
"""

from __future__ import annotations

import copy
import json
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import fieldstudio
from fieldstudio.config import RunConfig, from_dict, label_list, save_toml, to_dict, validate
from fieldstudio.data.medical import RTSTRUCT_SUFFIXES, VOLUME_SUFFIXES, is_label_map, suffix_of
from fieldstudio.data.meshes import MESH_SUFFIXES, BoxFrame, load_mesh
from fieldstudio.errors import FieldStudioError
from fieldstudio.field import Field, resolve_budget
from fieldstudio.io import atomic_write_json, ensure_writable_dir, json_ready
from fieldstudio.mesh import export_mesh, extract_mesh, mesh_report, transform_mesh
from fieldstudio.metrics import mask_report, mesh_metrics
from fieldstudio.tasks.sdf import SDFTask
from fieldstudio.tasks.slices import SlicesTask, fourier_sigma, refine_vertices
from fieldstudio.train import Callback, load_checkpoint, resolve_device, train

TASK_BY_SUFFIX = {**{s: "sdf" for s in MESH_SUFFIXES}, ".csl": "slices",
                  **{s: "slices" for s in VOLUME_SUFFIXES + RTSTRUCT_SUFFIXES}}
SHAPE_TASKS = ("sdf", "slices")


def detect_task(path: str | Path) -> str:
    suffix = suffix_of(path)
    if Path(path).is_dir():  # a DICOM series folder
        return "slices"
    if suffix not in TASK_BY_SUFFIX:
        known = ", ".join(sorted(TASK_BY_SUFFIX))
        raise FieldStudioError(f"cannot tell the task from {Path(path).name!r}; inputs with suffix {known} are "
                               "supported, or pass --task")
    return TASK_BY_SUFFIX[suffix]


@dataclass
class FitResult:
    run_dir: Path
    config: RunConfig
    steps: int
    elapsed: float
    interrupted: bool
    resumed: bool
    metrics: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    objects: list = field(default_factory=list)  # one FitResult per object of a multi-label run


def fit(cfg: RunConfig, run_dir: str | Path, callbacks: list[Callback] = (), mesh_progress=None,
        overwrite: bool = False) -> FitResult:
    """Fit ``cfg.input``; resume when ``run_dir`` holds an unfinished run of the same config.

    Cross-sections with several labels give one object per label (``slices.labels``): each is a run of its own
    in ``run_dir/label_<N>/`` and ``run_dir/metrics.json`` lists them (see ``_fit_objects``).
    """
    cfg = validate(copy.deepcopy(cfg))  # planning fills in fields (the chosen label); the caller's config stays
    objects, skipped, extents = plan_objects(cfg)
    if objects:
        return _fit_objects(cfg, objects, skipped, extents, Path(run_dir), callbacks, mesh_progress, overwrite)
    return _fit_one(cfg, run_dir, callbacks, mesh_progress, overwrite)


def plan_objects(cfg: RunConfig) -> tuple[list[tuple[str, int]], list[str], dict[int, float]]:
    """The (name, label) objects a run reconstructs separately, notes on labels left out, and each object's
    world extent (largest side of its contours' box, for one voxel size across objects).

    An empty list means one object: inputs with one label, ``labels = "union"``, or a run of one label (then
    ``cfg.slices.label`` is set here). Labels with contours on fewer than two planes cannot make a volume and
    are left out with a note, unless the user asked for them by number (then it is an error).
    """
    if cfg.task != "slices" or cfg.slices.label is not None or cfg.slices.labels.strip().lower() == "union":
        return [], [], {}
    cs, names = load_sections(cfg)
    labels = cs.labels()
    asked = label_list(cfg.slices.labels)
    if cfg.slices.rois:
        by_name = {v.lower(): k for k, v in names.items()}
        wanted_names = [t.strip() for t in cfg.slices.rois.split(",") if t.strip()]
        unknown = [n for n in wanted_names if n.lower() not in by_name]
        if unknown:
            raise FieldStudioError(f"ROI(s) {unknown} are not in {Path(cfg.input).name}; its ROIs are "
                                   f"{', '.join(repr(names[k]) for k in labels if k in names)}")
        asked = sorted(by_name[n.lower()] for n in wanted_names)
    if asked:
        missing = [lab for lab in asked if lab not in labels]
        if missing:
            raise FieldStudioError(f"label(s) {missing} do not occur in {Path(cfg.input).name}; its labels are "
                                   f"{labels}")
    elif len(labels) == 1:
        return [], [], {}
    planes_with = {lab: sum(any(lp.label == lab for lp in p.loops) for p in cs.planes) for lab in labels}
    wanted, skipped = [], []
    for lab in asked or labels:
        if planes_with[lab] >= 2:
            wanted.append(lab)
        elif asked:
            raise FieldStudioError(f"label {lab} has contours on {planes_with[lab]} plane(s); a volume needs at "
                                   "least two")
        else:
            skipped.append(f"label {lab} left out: it has contours on one plane only")
    if not wanted:
        raise FieldStudioError("no label has contours on two or more planes; nothing can be reconstructed")
    if len(wanted) == 1:
        cfg.slices.label = wanted[0]
        return [], skipped, {}
    extents = {lab: float(np.ptp(cs.select(lab).all_vertices(), axis=0).max()) for lab in wanted}
    return [(object_name(lab, names), lab) for lab in wanted], skipped, extents


def object_name(label: int, names: dict[int, str]) -> str:
    """Folder name of a label's object: its ROI name made file-safe, else ``label_<N>``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", names.get(label, "")).strip("_.")
    return name or f"label_{label}"


def load_sections(cfg: RunConfig):
    """The input's cross-sections (CSL, label-map slices or RTSTRUCT contours) and structure names by label
    (RTSTRUCT ROI names, DICOM SEG segment labels)."""
    from fieldstudio.data.cross_sections import read_csl
    from fieldstudio.data.medical import read_label_volume, read_rtstruct, volume_sections

    suffix = suffix_of(cfg.input)
    if suffix == ".csl":
        return read_csl(cfg.input), {}
    if suffix in RTSTRUCT_SUFFIXES and not is_label_map(cfg.input):
        return read_rtstruct(cfg.input)
    sl = cfg.slices
    vol = read_label_volume(cfg.input)
    labels = [sl.label] if sl.label is not None else None
    cs = volume_sections(vol, labels, every=sl.every, offset=sl.slice_offset, families=sl.families)
    cs.notes.append(f"world frame {vol.world}, mm")
    return cs, vol.names


def _fit_objects(cfg: RunConfig, objects: list[tuple[str, int]], skipped: list[str], extents: dict[int, float],
                 run_dir: Path, callbacks, mesh_progress, overwrite: bool) -> FitResult:
    """One run per object in ``run_dir/<name>/``, sharing ``cfg.train.time_budget`` evenly among the objects
    still to fit, meshed with one voxel size in world units. Finished objects are kept on a rerun (resume); an
    object that fails is reported at the end without stopping the others; an interruption stops at once."""
    t_start = time.perf_counter()
    ensure_writable_dir(run_dir)
    finished = [(run_dir / name / "metrics.json").exists() for name, _ in objects]
    if all(finished) and not overwrite:
        raise FieldStudioError(f"{run_dir} already holds a finished run; choose a new folder, or pass --overwrite "
                               "to replace it")
    save_toml(cfg, run_dir / "config.toml")
    result = FitResult(run_dir, cfg, 0, 0.0, False, False)
    rows, failed = [], []
    for i, (name, label) in enumerate(objects):
        sub_dir = run_dir / name
        if finished[i] and not overwrite:
            sub = FitResult(sub_dir, cfg, 0, 0.0, False, True,
                            json.loads((sub_dir / "metrics.json").read_text()), {"mesh": sub_dir / "mesh.ply"})
        else:
            sub_cfg = copy.deepcopy(cfg)
            sub_cfg.slices.label = label
            # One voxel size in world units for all objects: the largest gets the configured resolution.
            sub_cfg.mesh.resolution = max(64, round(cfg.mesh.resolution * extents[label] / max(extents.values())))
            if cfg.train.time_budget is not None:
                left = cfg.train.time_budget - (time.perf_counter() - t_start)
                sub_cfg.train.time_budget = max(left / sum(not f for f in finished[i:]), 1.0)
            for cb in callbacks:
                getattr(cb, "on_object", lambda *_: None)(name, i, len(objects))
            # A finished training whose meshing failed before is retrained with the settings given now.
            redo = overwrite or _trained(sub_dir)
            try:
                sub = _fit_one(sub_cfg, sub_dir, callbacks, mesh_progress, redo)
            except FieldStudioError as err:  # one object failing must not cost the others
                failed.append(f"{name}: {str(err).split(';')[0]}")
                rows.append({"name": name, "label": label, "error": str(err)})
                continue
        result.objects.append(sub)
        result.steps += sub.steps
        result.elapsed += sub.elapsed
        result.resumed |= sub.resumed
        if sub.interrupted or not sub.metrics:
            result.interrupted = sub.interrupted
            return result
        result.files[name] = sub.files["mesh"]
        rows.append({"name": name, "label": label, "mesh_file": str(sub.files["mesh"]),
                     **{k: sub.metrics[k] for k in ("params", "steps", "total_seconds", "mesh") if k in sub.metrics}})
    result.metrics = json_ready({"objects": rows, "notes": skipped,
                                 "total_seconds": round(time.perf_counter() - t_start, 2)})
    atomic_write_json(run_dir / "metrics.json", result.metrics)
    result.files["metrics"] = run_dir / "metrics.json"
    if failed:
        raise FieldStudioError(f"{len(failed)} of {len(objects)} objects failed ({'; '.join(failed)}). The others "
                               f"are done and kept in {run_dir}; rerun the same command with a larger "
                               "--time-budget (about 60 s per object on 2 cores) to redo only the failed ones")
    return result


def _trained(run_dir: Path) -> bool:
    """A run folder whose training finished (its meshing may still have failed)."""
    ckpt = run_dir / "checkpoint.pt"
    return ckpt.exists() and bool(load_checkpoint(ckpt).get("done"))


def _fit_one(cfg: RunConfig, run_dir: str | Path, callbacks: list[Callback], mesh_progress,
             overwrite: bool) -> FitResult:
    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    ensure_writable_dir(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    resumed = False
    if ckpt_path.exists():
        if overwrite:
            ckpt_path.unlink()
        else:
            ckpt = load_checkpoint(ckpt_path)
            saved = from_dict(RunConfig, ckpt["run_config"])
            if ckpt.get("done"):
                raise FieldStudioError(f"{run_dir} already holds a finished run; choose a new folder, "
                                       "or pass --overwrite to replace it")
            # Resume with the saved config: what the user typed the second time is only the way back in.
            cfg, resumed = saved, True
    if cfg.task not in SHAPE_TASKS:
        raise FieldStudioError(f"task {cfg.task!r} is not available; supported: {', '.join(SHAPE_TASKS)}")

    torch.manual_seed(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if not resumed:
        cfg.field = resolve_budget(cfg.field)
        if cfg.sdf.loss == "auto":  # see SDFTaskConfig.loss
            cfg.sdf.loss = "l1" if cfg.field.kind == "mlp" else "mape"
    task, reference, report = make_task(cfg)
    if cfg.field.fourier.sigma == "auto":  # resolved once; a resumed run reads the number back
        cfg.field.fourier.sigma = fourier_sigma(task.cs) if isinstance(task, SlicesTask) else 1.0
    model = Field(cfg.field)
    save_toml(cfg, run_dir / "config.toml")
    callbacks = list(callbacks)
    if cfg.train.time_budget is not None:
        callbacks.insert(0, _BudgetAfterSetup(model, cfg.train.time_budget, t_start, cfg.mesh.resolution,
                                                MESH_PLANS[cfg.task]))
    extra = {"run_config": to_dict(cfg), "frame": task.frame.to_dict(), "input_report": report}
    setup_seconds = time.perf_counter() - t_start
    state = train(model, task, cfg.train, callbacks, ckpt_path, extra)
    result = FitResult(run_dir, cfg, state.step, state.elapsed, state.interrupted, resumed)
    if state.interrupted or not state.done:
        return result

    t_mesh = time.perf_counter()
    try:
        out = _extract(model, cfg, task.frame, cfg.mesh.resolution, mesh_progress)
    except FieldStudioError as err:
        raise FieldStudioError(f"{err} (after {state.step} steps in {state.elapsed:.0f} s). The trained field is "
                               f"saved in {run_dir}; rerun with more --steps or a larger --time-budget and "
                               "--overwrite") from None
    result.files["mesh"] = export_mesh(out, run_dir / "mesh.ply")
    t_score = time.perf_counter()
    metrics = {}
    if cfg.task == "slices" and is_label_map(cfg.input):
        # Label maps: an STL beside the PLY (what planning tools import), and scores against the full mask.
        from fieldstudio.data.medical import read_label_volume

        result.files["stl"] = export_mesh(out, run_dir / "mesh.stl")
        vol = read_label_volume(cfg.input)
        label = cfg.slices.label if cfg.slices.label is not None else vol.labels()[0]
        metrics.update(mask_report(out, vol.data == label, vol.affine))
        metrics["world_frame"] = vol.world
    elif cfg.task == "slices" and suffix_of(cfg.input) in RTSTRUCT_SUFFIXES:
        result.files["stl"] = export_mesh(out, run_dir / "mesh.stl")
        metrics.update({"volume_ml": abs(float(out.volume)) / 1000.0, "area_mm2": float(out.area),
                        "world_frame": "LPS"})
    if reference is not None:
        # Score in the box frame against the normalised input (distances are relative to its diagonal anyway).
        box_mesh = transform_mesh(out, np.linalg.inv(task.frame.to_world_matrix()))
        metrics = mesh_metrics(box_mesh, reference, seed=cfg.train.seed)
    metrics.update({
        "params": model.param_count(), "steps": state.step, "train_seconds": round(state.elapsed, 2),
        "total_seconds": round(time.perf_counter() - t_start, 2), "final_loss": state.loss,
        "mesh_seconds": round(t_score - t_mesh, 2), "score_seconds": round(time.perf_counter() - t_score, 2),
        "setup_seconds": round(setup_seconds, 2),
        "mesh": mesh_report(out),
        "input": report,
        "frame": {"box_from_world": task.frame.to_dict(), "mesh_frame": "input"},
        "versions": {"fieldstudio": fieldstudio.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "history": state.history,
    })
    metrics = json_ready(metrics)
    atomic_write_json(run_dir / "metrics.json", metrics)
    result.metrics, result.files["metrics"] = metrics, run_dir / "metrics.json"
    return result


def make_task(cfg: RunConfig):
    """Read ``cfg.input`` and build its task. Returns (task, reference mesh in the box or None, input report)."""
    if cfg.task == "sdf":
        mesh, report = load_mesh(cfg.input)
        task = SDFTask(mesh, report["watertight"], cfg.sdf, seed=cfg.train.seed)
        return task, task.mesh, report
    cs, names = load_sections(cfg)
    report = {**cs.summary(), "notes": list(cs.notes)}
    if cfg.slices.label is not None:
        # Planes without this label's loops stay: they say the object is absent there.
        cs = cs.select(cfg.slices.label)
        report["label"] = cfg.slices.label
        if cfg.slices.label in names:
            report["roi"] = names[cfg.slices.label]
    elif len(cs.labels()) > 1:
        report["notes"].append(f"labels {cs.labels()} reconstructed as one object (their union)")
        cs = cs.union()
    return SlicesTask(cs, cfg.slices, seed=cfg.train.seed), None, report


@dataclass(frozen=True)
class _MeshPlan:
    """How a task's field is meshed, and the share of the fine grid that this evaluates (for time budgets)."""

    band_cells: float    # distance band in coarse-cell diagonals; 0 = band of sign-changing coarse cells
    coarse_factor: int
    fine_share: float    # measured: 16 % on the bunny at 256^3 (SDF); occupancy bands are wider


# SDFs get a distance band; occupancy logits are not distance-like (a distance band missed parts of a torus even
# scaled by the gradient cap 1/alpha), so they get sign-changing cells of a 2x coarser grid (thin parts such as
# finger bones must show there).
MESH_PLANS = {"sdf": _MeshPlan(2.0, 4, 0.22), "slices": _MeshPlan(0.0, 2, 0.3)}


class _BudgetAfterSetup(Callback):
    """Make ``--time-budget`` cover the whole fit: set-up, training, meshing and scoring.

    On start (after data loading and RBF placement) it times a forward pass and keeps back what narrow-band
    meshing will need (the coarse grid plus the task's share of the fine grid, see ``MESH_PLANS``), plus a few
    seconds for scoring and export.
    """

    def __init__(self, model: Field, budget: float, t_start: float, resolution: int, plan: _MeshPlan):
        self.model, self.budget, self.t_start, self.resolution, self.plan = model, budget, t_start, resolution, plan

    def on_start(self, state) -> None:
        device = next(self.model.parameters()).device
        x = (torch.rand(2**14, 3) * 2 - 1).to(device)
        per_point = float("inf")
        with torch.no_grad():
            for _ in range(3):  # the fastest of three: other load on the machine only ever slows a run down
                t = time.perf_counter()
                self.model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                per_point = min(per_point, (time.perf_counter() - t) / len(x))
        r = self.resolution
        points = (r // self.plan.coarse_factor) ** 3 + self.plan.fine_share * r**3
        # 1.3: near-surface RBF neighbour queries cost more than the random points timed here
        # (bunny, 120 s: 7 s over budget without it).
        allowance = 1.3 * per_point * points + 5.0
        setup = time.perf_counter() - self.t_start
        # A budget smaller than set-up plus meshing cannot be met; train for a quarter of it rather than not at all.
        state.time_budget = max(self.budget - setup - allowance, 0.25 * self.budget)


def _extract(model: Field, cfg: RunConfig, frame: BoxFrame, resolution: int, progress):
    """The run's mesh in the input's frame, evaluated on the task's narrow band (``MESH_PLANS``).

    Occupancy meshes then get their vertices moved onto the zero level (marching cubes interpolates a logit
    linearly, which is not linear across a cell).
    """
    occupancy = cfg.task == "slices"
    scale = 1.0 / cfg.slices.hinge_alpha if occupancy else 1.0
    device = next(model.parameters()).device

    def fn(x: torch.Tensor) -> torch.Tensor:  # CPU points in, CPU values out, whatever the field's device
        return model(x.to(device))[:, 0].to(x.device) * scale

    plan = MESH_PLANS[cfg.task]
    mesh = extract_mesh(fn, resolution, narrow_band=True, band_cells=plan.band_cells,
                        coarse_factor=plan.coarse_factor, min_component_ratio=cfg.mesh.min_component_ratio,
                        smooth_iterations=cfg.mesh.smooth_iterations, progress=progress)
    if occupancy and cfg.slices.refine_iterations > 0:
        mesh.vertices = refine_vertices(fn, np.asarray(mesh.vertices), max_step=1.0 / (resolution - 1),
                                        iterations=cfg.slices.refine_iterations)
    return transform_mesh(mesh, frame.to_world_matrix())


def load_run(run_dir: str | Path) -> tuple[RunConfig, Field, BoxFrame]:
    """Rebuild the trained field of a run directory (for meshing at another resolution, rendering, ...)."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    if not ckpt_path.exists():
        parts = sorted(p.parent.name for p in run_dir.glob("*/checkpoint.pt"))
        if parts:
            raise FieldStudioError(f"{run_dir} holds one run per object; give one of its folders: "
                                   f"{', '.join(str(run_dir / p) for p in parts)}")
        raise FieldStudioError(f"{run_dir} holds no checkpoint.pt; is it a fieldstudio run folder?")
    ckpt = load_checkpoint(ckpt_path)
    cfg = from_dict(RunConfig, ckpt["run_config"])
    model = Field(cfg.field)
    model.load_state_dict(ckpt["field"])
    model.to(resolve_device(cfg.train.device))
    model.eval()
    return cfg, model, BoxFrame.from_dict(ckpt["frame"])


def mesh_from_run(run_dir: str | Path, out_path: str | Path, resolution: int | None = None,
                  progress=None) -> tuple[Path, dict]:
    cfg, model, frame = load_run(run_dir)
    if resolution is not None:
        cfg.mesh.resolution = resolution
    validate(cfg)
    mesh = _extract(model, cfg, frame, cfg.mesh.resolution, progress)
    path = export_mesh(mesh, out_path)
    return path, mesh_report(mesh)
