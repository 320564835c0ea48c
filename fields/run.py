"""run.py
======
A run folder end to end, in stages: prepare (read the input, build the task and field), train, mesh, score.

Faces do not call this module directly: they build a request and run it as a job (``fieldstudio.api``), which
reports stages and progress, cancels and pauses. Layout of ``RUN_DIR``: ``config.toml`` (resolved config),
``checkpoint.pt`` (field, optimiser, step, frame), ``mesh.ply`` (in the input's frame), ``metrics.json`` (written
last: a folder with it holds a finished run). Every file is written atomically.

What a rerun does with a folder: finished -> refused unless ``overwrite``; trained but not meshed (killed or
cancelled while meshing or scoring) -> meshed and scored again from the checkpoint; training unfinished ->
training resumes from the checkpoint, with the saved config.
"""

from __future__ import annotations

import copy
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import fieldstudio
from fieldstudio import kernels
from fieldstudio.config import RUN_CONFIG_HEADER, RunConfig, from_dict, load_run_config, save_toml, to_dict, validate
from fieldstudio.control import check_cancel
from fieldstudio.control import current as current_control
from fieldstudio.data.meshes import BoxFrame
from fieldstudio.errors import FieldStudioError
from fieldstudio.field import Field, resolve_budget
from fieldstudio.io import atomic_write_json, ensure_writable_dir, json_ready, remove_stale_temporaries
from fieldstudio.mesh import export_mesh, extract_mesh, mesh_report, transform_mesh
from fieldstudio.tasks import registry
from fieldstudio.train import Callback, load_checkpoint, resolve_device, train

RUN_FILES = ("checkpoint.pt", "metrics.json", "mesh.ply", "mesh.stl", "config.toml", "reconstruction.png",
             "reconstruction.exr", "error.png")


@dataclass
class FitResult:
    run_dir: Path
    config: RunConfig
    steps: int
    elapsed: float
    interrupted: bool
    resumed: bool
    cancelled: bool = False
    ended_by: str = ""  # steps | time_budget | cancelled | interrupted
    metrics: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    objects: list = field(default_factory=list)  # one FitResult per object of a multi-label run

    @property
    def finished(self) -> bool:
        return bool(self.metrics) and not self.interrupted and not self.cancelled


def fit(cfg: RunConfig, run_dir: str | Path, callbacks: list[Callback] = (), overwrite: bool = False) -> FitResult:
    """Fit ``cfg.input`` (a resolved config, see ``fieldstudio.api.resolve``) into ``run_dir``.

    Inputs with several labels give one object per label, each a run of its own in ``run_dir/<name>/``, listed in
    ``run_dir/metrics.json`` (see ``_fit_objects``). Raises ``fieldstudio.control.Cancelled`` when the job is
    cancelled outside training (the folder stays resumable); a cancel during training returns with
    ``cancelled=True`` after saving a checkpoint.
    """
    t_start = time.perf_counter()  # the time budget counts from here: planning reads the input too
    cfg = validate(copy.deepcopy(cfg))  # planning fills in fields (the chosen label); the caller's config stays
    if cfg.train.steps is None and cfg.train.time_budget is None:
        raise FieldStudioError("give a step count or a time budget (or both)")
    spec = registry.get(cfg.task)
    control = current_control()
    if control is not None:
        control.enter("prepare")
    objects, skipped, extents = spec.plan_objects(cfg) if spec.plan_objects else ([], [], {})
    run_dir = Path(run_dir)
    if objects and _joint(cfg, run_dir, overwrite):
        from fieldstudio.tasks.joint_slices import OverlappingLabels

        try:
            return _fit_joint(cfg, objects, skipped, run_dir, callbacks, overwrite, t_start)
        except OverlappingLabels as err:  # said before anything is written: fit them one by one instead
            skipped = skipped + [str(err)]
            cfg.slices.multi_label = "separate"
    if objects:
        return _fit_objects(cfg, objects, skipped, extents, run_dir, callbacks, overwrite, t_start)
    return _fit_one(cfg, run_dir, callbacks, overwrite, t_start)


def _joint(cfg: RunConfig, run_dir: Path, overwrite: bool) -> bool:
    """Whether several objects are fitted as one field (``slices.multi_label``). A folder that holds an unfinished
    run of either kind resumes as it began; OReX's field has one output and always fits them one by one."""
    if not overwrite and (run_dir / "checkpoint.pt").exists():
        return True
    if not overwrite and any(run_dir.glob("*/checkpoint.pt")):
        return False
    return cfg.slices.multi_label == "joint" and cfg.field.kind != "orex"


def clear_run(run_dir: Path) -> None:
    """Remove what a run wrote in ``run_dir`` (``--overwrite``): its files, and those of its objects' folders."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for sub in {p.parent for pattern in ("*/checkpoint.pt", "*/metrics.json", "*/mesh.ply") for p in
                run_dir.glob(pattern)}:
        clear_run(sub)


def _refuse_finished(run_dir: Path) -> None:
    raise FieldStudioError(f"{run_dir} already holds a finished run; choose a new folder, or pass --overwrite "
                           "to replace it")


def _fit_objects(cfg: RunConfig, objects: list[tuple[str, int]], skipped: list[str], extents: dict[int, float],
                 run_dir: Path, callbacks, overwrite: bool, t_start: float) -> FitResult:
    """One run per object in ``run_dir/<name>/``, sharing ``cfg.train.time_budget`` evenly among the objects
    still to fit, meshed with one voxel size in world units. Finished objects are kept on a rerun (resume); an
    object that fails is reported at the end without stopping the others; a cancel stops at once."""
    ensure_writable_dir(run_dir)
    remove_stale_temporaries(run_dir)
    if overwrite:
        clear_run(run_dir)
    finished = [(run_dir / name / "metrics.json").exists() for name, _ in objects]
    if all(finished):
        _refuse_finished(run_dir)
    # Objects whose meshing failed last time ("no surface") are trained again with the settings given now; an
    # object killed while meshing is only meshed again.
    failed_before = _failed_objects(run_dir / "metrics.json")
    save_toml(cfg, run_dir / "config.toml", RUN_CONFIG_HEADER)
    result = FitResult(run_dir, cfg, 0, 0.0, False, False)
    rows, failed = [], []
    control = current_control()

    def status(i: int, text: str) -> None:  # each object's status, for faces that list them
        if control is not None:
            control.sink("object", object=objects[i][0], message=text, done=i, total=len(objects))

    for i in range(len(objects)):
        status(i, "done" if finished[i] else "waiting")
    for i, (name, label) in enumerate(objects):
        sub_dir = run_dir / name
        if finished[i]:
            sub = FitResult(sub_dir, cfg, 0, 0.0, False, True,
                            metrics=json.loads((sub_dir / "metrics.json").read_text()),
                            files={"mesh": sub_dir / "mesh.ply"})
        else:
            sub_cfg = copy.deepcopy(cfg)
            sub_cfg.slices.label = label
            # One voxel size in world units for all objects: the largest gets the configured resolution.
            sub_cfg.mesh.resolution = max(64, round(cfg.mesh.resolution * extents[label] / max(extents.values())))
            if cfg.train.time_budget is not None:
                left = cfg.train.time_budget - (time.perf_counter() - t_start)
                sub_cfg.train.time_budget = max(left / sum(not f for f in finished[i:]), 1.0)
            for cb in callbacks:
                cb.on_object(name, i, len(objects))
            if control is not None:
                control.object = f"{name} ({i + 1}/{len(objects)})"
            try:
                sub = _fit_one(sub_cfg, sub_dir, callbacks, overwrite=name in failed_before)
            except FieldStudioError as err:  # one object failing must not cost the others
                failed.append(f"{name}: {str(err).split(';')[0]}")
                rows.append({"name": name, "label": label, "error": str(err)})
                status(i, f"failed: {str(err).split(';')[0]}")
                continue
        result.objects.append(sub)
        result.steps += sub.steps
        result.elapsed += sub.elapsed
        result.resumed |= sub.resumed
        if not sub.finished:
            result.interrupted, result.cancelled, result.ended_by = sub.interrupted, sub.cancelled, sub.ended_by
            return result
        result.files[name] = sub.files["mesh"]
        status(i, "done")
        rows.append({"name": name, "label": label, "mesh_file": str(sub.files["mesh"]),
                     **{k: sub.metrics[k] for k in ("params", "steps", "total_seconds", "mesh", "ended_by")
                        if k in sub.metrics}})
    if control is not None:
        control.object = ""
    result.metrics = json_ready({"objects": rows, "notes": skipped,
                                 "total_seconds": round(time.perf_counter() - t_start, 2)})
    atomic_write_json(run_dir / "metrics.json", result.metrics)
    result.files["metrics"] = run_dir / "metrics.json"
    if failed:
        raise FieldStudioError(f"{len(failed)} of {len(objects)} objects failed ({'; '.join(failed)}). The others "
                               f"are done and kept in {run_dir}; rerun the same command with a larger "
                               "--time-budget (about 60 s per object on 2 cores) to redo only the failed ones")
    return result


def _fit_joint(cfg: RunConfig, objects: list[tuple[str, int]], notes: list[str], run_dir: Path, callbacks,
               overwrite: bool, t_start: float) -> FitResult:
    """Every object in one field with an output per label (``fieldstudio.tasks.joint_slices``), trained once on the
    whole time budget, then meshed object by object into ``run_dir/<name>/`` as a run of several objects is (the
    same metrics.json rows, so faces and reports read both alike); the checkpoint is ``run_dir``'s own."""
    cfg.field.out_dim = len(objects) + 1
    control = current_control()
    if control is not None:
        for i, (name, _) in enumerate(objects):
            control.sink("object", object=name, message="training (one field for all)", done=i, total=len(objects))
    return _fit_one(cfg, run_dir, callbacks, overwrite, t_start, notes=notes)


def _failed_objects(metrics_path: Path) -> set[str]:
    try:
        return {row["name"] for row in json.loads(metrics_path.read_text()).get("objects", []) if "error" in row}
    except (OSError, ValueError, AttributeError):
        return set()


def _fit_one(cfg: RunConfig, run_dir: Path, callbacks: list[Callback], overwrite: bool,
             t_start: float | None = None, notes: list[str] = ()) -> FitResult:
    t_start = time.perf_counter() if t_start is None else t_start
    ensure_writable_dir(run_dir)
    remove_stale_temporaries(run_dir)
    if overwrite:
        clear_run(run_dir)
    if (run_dir / "metrics.json").exists():
        _refuse_finished(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    resumed = ckpt_path.exists()
    if resumed:
        # Resume with the saved config: what the user typed the second time is only the way back in.
        cfg = from_dict(RunConfig, load_checkpoint(ckpt_path)["run_config"])
    spec = registry.get(cfg.task)
    control = current_control()
    if control is not None:
        control.enter("prepare")
    if not resumed:
        cfg.field = resolve_budget(cfg.field)
    prepared = spec.build(cfg)
    check_cancel()
    if cfg.field.fourier.sigma == "auto":  # resolved once from the data; a resumed run reads the number back
        cfg.field.fourier.sigma = prepared.fourier_sigma
    model = Field(cfg.field, seed=cfg.train.seed)
    callbacks = list(callbacks)
    budget = None
    if cfg.train.time_budget is not None:
        budget = _BudgetAfterSetup(model, cfg, spec, prepared, t_start)  # may lower a default mesh resolution
        callbacks.insert(0, budget)
        if budget.stepped_down:
            logging.getLogger("fieldstudio").info(
                f"meshing at {cfg.mesh.resolution}^3 (not the default {budget.stepped_down}^3, which would take more "
                f"than half of the {cfg.train.time_budget:g} s budget); --resolution chooses")
    save_toml(cfg, run_dir / "config.toml", RUN_CONFIG_HEADER)
    extra = {"run_config": to_dict(cfg), "frame": prepared.frame.to_dict(), "input_report": prepared.report}
    if prepared.objects:  # a joint fit: which output is which object, and the box each is meshed in
        extra["objects"] = [{"name": name, "label": label, "channel": box.channel, "lo": box.lo.tolist(),
                             "side": box.side} for name, label, box in prepared.objects]
    setup_seconds = time.perf_counter() - t_start
    if control is not None:
        control.live = {"model": model, "cfg": cfg, "frame": prepared.frame, "task": prepared.task}
    state = train(model, prepared.task, cfg.train, callbacks, ckpt_path, extra)
    result = FitResult(run_dir, cfg, state.step, state.elapsed, state.interrupted, resumed,
                       cancelled=state.stop, ended_by=state.ended_by)
    if not state.done:
        return result

    if spec.finish is not None:
        metrics, files = spec.finish.write(cfg, model, prepared, run_dir)
        metrics["frame"] = prepared.frame.to_dict()
    elif prepared.objects:
        metrics, files = _mesh_objects(cfg, spec, model, extra["objects"], prepared, run_dir, state)
        metrics["notes"] = list(notes)
        result.objects = [FitResult(run_dir / name, cfg, state.step, state.elapsed, False, resumed,
                                    files={"mesh": path}) for name, path in files.items()]
    else:
        metrics, files = _mesh_and_score(cfg, spec, model, prepared, run_dir, state)
    result.files.update(files)
    metrics.update({
        "params": model.param_count(), "steps": state.step, "train_seconds": round(state.elapsed, 2),
        "ended_by": state.ended_by, "limits": {"steps": cfg.train.steps, "time_budget": cfg.train.time_budget},
        # What the time budget kept back for meshing and scoring (estimated when training started).
        "reserved_seconds": getattr(budget, "reserved", None),
        **({"mesh_resolution": cfg.mesh.resolution} if spec.finish is None else {}),  # the grid a mesh was made on
        "total_seconds": round(time.perf_counter() - t_start, 2), "final_loss": state.loss,
        "setup_seconds": round(setup_seconds, 2),
        # A first use's kernel compile, inside the set-up but outside the time budget (0 once they are cached).
        "compile_seconds": round(kernels.compile_seconds_since(t_start), 2),
        "input": prepared.report,
        "versions": {"fieldstudio": fieldstudio.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "history": state.history,
    })
    metrics = json_ready(metrics)
    check_cancel()
    atomic_write_json(run_dir / "metrics.json", metrics)
    result.metrics, result.files["metrics"] = metrics, run_dir / "metrics.json"
    failed = [f"{row['name']}: {row['error'].split(';')[0]}" for row in metrics.get("objects", []) if "error" in row]
    if failed:
        raise FieldStudioError(f"{len(failed)} of {len(metrics['objects'])} objects failed ({'; '.join(failed)}). The "
                               f"others are done and kept in {run_dir}; rerun with --overwrite and a larger "
                               "--time-budget, or with --multi-label separate")
    return result


def object_resolution(side: float, largest_side: float, resolution: int) -> int:
    """Grid points per axis for an object's mesh box of ``side``: one voxel size for every object of a joint fit,
    the largest box getting ``resolution``."""
    return max(32, int(np.ceil(side / largest_side * (resolution - 1))) + 1)


def _mesh_objects(cfg: RunConfig, spec, model: Field, objects: list[dict], prepared, run_dir: Path,
                  state) -> tuple[dict, dict]:
    """A joint fit's end: each object meshed in its box into ``run_dir/<name>/mesh.ply`` and scored there
    (``metrics.json`` per object, as a separate fit writes). Objects already meshed (a rerun after a kill while
    meshing) are kept; one without a surface is reported in its row without stopping the others."""
    control = current_control()
    largest = max(o["side"] for o in objects)
    rows, files = [], {}

    def status(i: int, text: str) -> None:
        if control is not None:
            control.sink("object", object=objects[i]["name"], message=text, done=i, total=len(objects))

    for i, obj in enumerate(objects):
        name, sub_dir = obj["name"], run_dir / obj["name"]
        t0 = time.perf_counter()
        if (sub_dir / "metrics.json").exists() and (sub_dir / "mesh.ply").exists():
            m = json.loads((sub_dir / "metrics.json").read_text())
        else:
            if control is not None:
                control.object = f"{name} ({i + 1}/{len(objects)})"
                control.enter("mesh")
            r = object_resolution(obj["side"], largest, cfg.mesh.resolution)
            try:
                mesh = _extract(model, cfg, prepared.frame, r, obj, _sections(cfg, prepared, obj["label"]))
            except FieldStudioError as err:
                rows.append({"name": name, "label": obj["label"],
                             "error": f"{err} (after {state.step} steps in {state.elapsed:.0f} s)"})
                status(i, f"failed: {str(err).split(';')[0]}")
                continue
            ensure_writable_dir(sub_dir)
            path = export_mesh(mesh, sub_dir / "mesh.ply")
            if control is not None:
                control.enter("score")
            t_score = time.perf_counter()
            sub_cfg = copy.deepcopy(cfg)
            sub_cfg.slices.label = obj["label"]
            m, extra = spec.score(sub_cfg, mesh, prepared, sub_dir)
            m.update({"label": obj["label"], "resolution": r, "mesh": mesh_report(mesh),
                      "mesh_seconds": round(t_score - t0, 2), "score_seconds": round(time.perf_counter() - t_score, 2),
                      "params": model.param_count(), "steps": state.step, "multi_label": "joint",
                      "mesh_file": str(path), **{f"{k}_file": str(v) for k, v in extra.items()}})
            atomic_write_json(sub_dir / "metrics.json", json_ready(m))
        files[name] = sub_dir / "mesh.ply"
        rows.append({"name": name, "label": obj["label"], "mesh_file": str(files[name]), "steps": state.step,
                     "total_seconds": round(time.perf_counter() - t0, 2),
                     **{k: m[k] for k in ("params", "mesh") if k in m}})
        status(i, "done")
    if control is not None:
        control.object = ""
    return {"objects": rows, "multi_label": "joint"}, files


def _mesh_and_score(cfg: RunConfig, spec, model: Field, prepared, run_dir: Path, state) -> tuple[dict, dict]:
    """Shape tasks' end: the mesh in the input's frame (``mesh.ply``), scored by the task."""
    control = current_control()
    if control is not None:
        control.enter("mesh")
    t_mesh = time.perf_counter()
    try:
        out = _extract(model, cfg, prepared.frame, cfg.mesh.resolution, sections=_sections(cfg, prepared))
    except FieldStudioError as err:
        raise FieldStudioError(f"{err} (after {state.step} steps in {state.elapsed:.0f} s). The trained field is "
                               f"saved in {run_dir}; rerun with more --steps or a larger --time-budget and "
                               "--overwrite") from None
    files = {"mesh": export_mesh(out, run_dir / "mesh.ply")}
    if control is not None:
        control.enter("score")
    t_score = time.perf_counter()
    metrics, extra = spec.score(cfg, out, prepared, run_dir)
    files.update(extra)
    metrics.update({"mesh_seconds": round(t_score - t_mesh, 2),
                    "score_seconds": round(time.perf_counter() - t_score, 2), "mesh": mesh_report(out),
                    "frame": {"box_from_world": prepared.frame.to_dict(), "mesh_frame": "input"}})
    return metrics, files


# A distance band's meshing cost (SDFs), measured on 2 cores (armadillo and bunny, 256^3 to 640^3): BAND_POINTS
# field evaluations per cell of a 64^3 grid the surface crosses, scaled by (g / 64)^2 (the doubling grids' bands,
# 12.9-13.2 measured); VOXEL_SECONDS per grid point for the whole-grid passes (interpolation, the band's selection,
# marching cubes); FACE_SECONDS per face for the clean-up, smoothing, export and scoring (the mesh has about one face
# per 6 band points).
STEP_DOWN = (384, 256)  # the coarser grids a default mesh resolution may take for a small time budget
BAND_POINTS = 13.5
VOXEL_SECONDS = 3e-8
FACE_SECONDS = 5e-6


def grid_cells(points: torch.Tensor, r: int) -> torch.Tensor:
    """Flat (row-major) index of the cell of an r^3 grid over the box [-1, 1]^3 that holds each point."""
    cell = ((points.clamp(-1, 1) + 1) * (r - 1) / 2).long()
    return (cell[:, 0] * r + cell[:, 1]) * r + cell[:, 2]


def surface_cells(surface: torch.Tensor | None) -> int | None:
    """How many cells of a 64^3 grid hold ``surface`` samples (box frame), a measure of the surface's area (the
    bunny: 11,689, the armadillo: 8,238; at 512^3 one mesh has 1.6M faces, the other 1.1M); None with under 100k
    samples, too few to find every cell."""
    if surface is None or len(surface) < 100_000:
        return None
    return len(torch.unique(grid_cells(surface, 64)))


def distance_band_points(cells: int | None, g: int, fine_share: float) -> float:
    """About how many fine points a distance band evaluates at g^3 (the doubling grids' bands, not the coarse grid):
    BAND_POINTS per ``surface_cells`` per (g / 64)^2; without them, ``fine_share`` of the grid at 256^3, falling as
    1/g."""
    if cells is not None:
        return min(BAND_POINTS * cells * (g / 64) ** 2, g**3)
    return min(fine_share * 256 / g, 1.0) * g**3


class _BudgetAfterSetup(Callback):
    """Make ``--time-budget`` cover the whole fit: set-up, training, meshing and scoring.

    Made after set-up (data loading, RBF placement and neighbour tables), it probes what meshing will cost; on
    start it keeps that back, with the task's time for scoring and export (``MeshPlan.score_seconds``). Meshing
    evaluates a coarse grid over the whole box, then the fine grid's points near the surface (``MeshPlan.fine_share``
    of them): the first are timed on random box points, the second on points of the expected surface visited in
    grid order as meshing visits them. On the bunny (hybrid, 256^3) random points alone cost 3.1 us per point
    where meshing took 1.65 (RBF neighbour queries of nearby points share cache), so a budget of 60 s ended
    after 50. A default resolution (``mesh.auto_resolution``) steps down to 384^3 or 256^3 while its meshing would
    take more than half of the budget.
    """

    def __init__(self, model: Field, cfg: RunConfig, spec: registry.TaskSpec, prepared, t_start: float):
        self.model, self.budget, self.t_start = model, cfg.train.time_budget, t_start
        self.plan, self.finish = spec.mesh_plan, spec.finish
        self.surface, self.finish_points = prepared.surface, None
        self.objects = [box.side for _, _, box in prepared.objects] if prepared.objects else None
        if spec.finish is not None:
            self.finish_points = spec.finish.points(cfg, prepared)
        self.cells = surface_cells(self.surface) if self.finish is None and self.plan.band_cells > 0 else None
        self.reserved = None
        self.stepped_down = None  # the default resolution given up for a coarser one, if any
        self.coarse = self.sample = None  # seconds per random box point, and surface points to time (see _allowance)
        self.allowance = self._allowance(cfg.mesh.resolution)
        if cfg.mesh.auto_resolution and self.finish is None:
            # A small budget spent mostly on meshing trains too little, so a default resolution steps down until
            # meshing takes at most half of it. Armadillo at 30 s: 512^3 trained 7.5 s and ended at 35.6 s (NAE
            # 4.92 deg), 384^3 4.84, 256^3 5.48; at 60 s, 512^3 4.25 against 384^3's 4.48 (docs/benchmarks.md).
            r = cfg.mesh.resolution
            for lower in (x for x in STEP_DOWN if x < r):
                if self.allowance <= self.budget / 2:
                    break
                self.stepped_down = self.stepped_down or r
                cfg.mesh.resolution = lower
                self.allowance = self._allowance(lower)

    def _grids(self, r: int) -> list[int]:
        """The grids meshing will evaluate: one, or one per object of a joint fit (each in its own box)."""
        if self.objects:
            return [object_resolution(side, max(self.objects), r) for side in self.objects]
        return [r]

    def _seconds_per_point(self, x: torch.Tensor) -> float:
        device = next(self.model.parameters()).device
        x = x.to(device)
        best = float("inf")
        with torch.no_grad():
            for _ in range(3):  # the fastest of three: other load on the machine only ever slows a run down
                t = time.perf_counter()
                self.model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                best = min(best, time.perf_counter() - t)
        return best / len(x)

    def on_start(self, state) -> None:
        self.reserved = round(self.allowance, 2)
        # A first use's kernel compile (about 20 s) is left out: the fit then trains as much as any later one.
        setup = time.perf_counter() - self.t_start - kernels.compile_seconds_since(self.t_start)
        # A budget smaller than set-up plus meshing cannot be met; train for a quarter of it rather than not at all.
        state.time_budget = max(self.budget - setup - self.allowance, 0.25 * self.budget)

    def _allowance(self, r: int) -> float:
        """Seconds to keep back for meshing at r^3 (or the task's own end) and scoring."""
        if self.coarse is None:  # box points and the surface sample do not depend on the grid: drawn and timed once
            g = torch.Generator().manual_seed(0)
            self.coarse = self._seconds_per_point(torch.rand(2**14, self.model.cfg.dim, generator=g) * 2 - 1)
            if self.surface is not None and len(self.surface):
                self.sample = self.surface[torch.randint(len(self.surface), (min(2**16, len(self.surface)),),
                                                         generator=g)]
        coarse = self.coarse
        if self.finish is not None:  # not a mesh: one evaluation per point the task's end makes
            per_point = 1.1 * coarse + self.finish.seconds_per_point
            return per_point * self.finish_points + self.finish.seconds
        fine = coarse
        if self.sample is not None:  # visited in grid order, as meshing visits them
            fine = self._seconds_per_point(self.sample[torch.argsort(grid_cells(self.sample, r))])
        grids = self._grids(r)
        if self.plan.band_cells > 0:
            allowance = sum(self._distance_band_seconds(g, coarse, fine, self.cells) for g in grids)
        else:
            # The fine points lie in a band around the surface, so their share of g^3 falls with g: fine_share is
            # the share at 256^3, falling as 1/sqrt(g) (1/g kept 3-4 s too little at 384^3 when SDFs were meshed
            # this way: marching cubes and the clean-up cost something per grid point too).
            allowance = sum(coarse * (g // self.plan.coarse_factor) ** 3
                            + fine * min(1.0, self.plan.fine_share * (256 / g) ** 0.5) * g**3 for g in grids)
        # Scoring an object costs about its box's volume (Dice voxelises the mesh there): 41 labels of a label map
        # scored in 2.3 s, where 2 s per object would have kept 80 s back.
        score = sum(max((g / max(grids)) ** 3, 0.01) for g in grids) * self.plan.score_seconds
        return 1.1 * allowance + score

    def _distance_band_seconds(self, g: int, coarse: float, fine: float, cells: int | None) -> float:
        """Meshing one g^3 grid with a distance band (``evaluate_grid_narrow_band`` on doubling grids)."""
        band = distance_band_points(cells, g, self.plan.fine_share)
        return (coarse * (g // self.plan.coarse_factor) ** 3 + fine * band + VOXEL_SECONDS * g**3
                + FACE_SECONDS * band / 6)


def field_function(model: Field, cfg: RunConfig, frame=None, channel: int | None = None):
    """The field as ``fn(points) -> values`` for meshing: CPU points in, CPU values out, whatever the field's
    device, scaled and offset as the task's mesh plan says (negative inside). A joint multi-label field gives the
    object of output ``channel`` (1..L), or without one the union of its objects (previews)."""
    plan = registry.get(cfg.task).mesh_plan
    scale, offset = plan.value_scale(cfg), plan.value_offset(cfg, frame)
    device = next(model.parameters()).device
    cells = _cell_list(model, cfg)
    joint = cfg.task == "slices" and model.cfg.out_dim > 1
    if joint:
        from fieldstudio.tasks.joint_slices import object_value

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device)
        out = model(x) if cells is None else model(x, cells.query(x))
        value = object_value(out, channel) if joint else out[:, 0]
        return (value * scale + offset).to("cpu")
    return fn


def _cell_list(model: Field, cfg: RunConfig):
    """RBF neighbours on the field's device for NeRF fields (their RBFs sit on a density, queried anew for every
    point), else None (the exact k-d tree of the RBF layer)."""
    if getattr(model, "rbf", None) is None or cfg.task != "nerf":
        return None
    from fieldstudio.encoders.cells import CellNeighbours

    return CellNeighbours(model.rbf.centers.detach(), model.rbf.k)


def _extract(model: Field, cfg: RunConfig, frame: BoxFrame, resolution: int, obj: dict | None = None,
             sections=None):
    """The run's mesh in the input's frame, evaluated on the task's narrow band (its ``MeshPlan``); progress and
    cancel through the job's control. Occupancy meshes then get their vertices moved onto the zero level
    (marching cubes interpolates a logit linearly, which is not linear across a cell). ``obj``: one object of a
    joint fit (its output ``channel``, meshed in the cube ``lo``, ``side`` of the field box). ``sections``: the
    object's cross-sections in the box frame, or None; small parts near their contours survive the clean-up, and
    ``slices.contour_bound`` imposes what neighbouring contours decide (tasks/contour_bound.py)."""
    from fieldstudio.control import report
    from fieldstudio.tasks.slices import refine_vertices

    plan = registry.get(cfg.task).mesh_plan
    fn = field_function(model, cfg, frame, None if obj is None else obj["channel"])
    if sections is not None and cfg.task == "slices" and cfg.slices.contour_bound != "off":
        from fieldstudio.tasks.contour_bound import ContourBound

        bound = ContourBound(sections, cfg.slices.contour_bound, margin=cfg.slices.prior_margin,
                             cap_slope=cfg.slices.prior_cap_slope)
        if bound:
            fn = bound.bound(fn)
    side, bounds = 2.0, (-1.0, 1.0)
    if obj is not None:
        side = obj["side"]
        bounds = [(lo, lo + side) for lo in obj["lo"]]
        fn = _closed_in_cube(fn, np.asarray(obj["lo"]), side)
    # Contour vertices: a small mesh part near them is one the contours show, not a floater (bunny, 10 random planes:
    # a 0.4 % part around a contour of 0.004 units^2 was dropped by the 2 % size rule, and Hausdorff was 0.23).
    anchors = None if sections is None else sections.all_vertices()
    mesh = extract_mesh(fn, resolution, bounds=bounds, narrow_band=True, band_cells=plan.band_cells,
                        coarse_factor=plan.coarse_factor, min_component_ratio=cfg.mesh.min_component_ratio,
                        smooth_iterations=cfg.mesh.smooth_iterations, progress=report, keep_near=anchors)
    check_cancel()
    if plan.refine and cfg.slices.refine_iterations > 0:
        mesh.vertices = refine_vertices(fn, np.asarray(mesh.vertices), max_step=0.5 * side / (resolution - 1),
                                        iterations=cfg.slices.refine_iterations)
    return transform_mesh(mesh, frame.to_world_matrix())


def _object_sections(cs_box, label: int | None):
    """The cross-sections (box frame) of the object meshed: one label's, or all of them."""
    return cs_box.select(label) if label is not None else cs_box


def _sections(cfg: RunConfig, prepared, label: int | None = None):
    """``_object_sections`` of a fit's task, or None (not a slices run)."""
    cs = getattr(prepared.task, "cs", None) if cfg.task == "slices" else None
    return None if cs is None else _object_sections(cs, label)


def _closed_in_cube(fn, lo: np.ndarray, side: float):
    """``fn`` made outside on the faces of the cube ``lo`` + [0, side]^3, so that an object meshed in that cube is
    closed along its faces wherever it reaches them. The cube surrounds the object's padded hull, beyond which the
    data say the object is absent (as a label map's border is closed as if padded with background)."""
    lo_t = torch.as_tensor(lo, dtype=torch.float32)
    hi_t = lo_t + side
    tol = 1e-5 * side

    def closed(x: torch.Tensor) -> torch.Tensor:
        value = fn(x)
        on_face = ((x - lo_t).abs() < tol).any(dim=1) | ((x - hi_t).abs() < tol).any(dim=1)
        return torch.where(on_face.to(value.device), value.abs().clamp_min(1e-6), value)
    return closed


def run_task(run_dir: str | Path) -> str:
    """The task of a run folder, from its config.toml (cheap: the checkpoint stays unread)."""
    path = Path(run_dir) / "config.toml"
    if not path.exists():
        load_run(run_dir)  # says what is wrong with the folder
    return load_run_config(path).task


def load_run(run_dir: str | Path) -> tuple[RunConfig, Field, BoxFrame]:
    """Rebuild the trained field of a run directory (for meshing at another resolution, rendering, ...)."""
    return _load_run(run_dir)[1:]


def _load_run(run_dir: str | Path) -> tuple[dict, RunConfig, Field, BoxFrame]:
    """``load_run`` with the checkpoint it read (a joint fit's objects are in it)."""
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
    model = Field(cfg.field, seed=cfg.train.seed)
    model.load_state_dict(ckpt["field"])
    model.to(resolve_device(cfg.train.device))
    model.eval()
    return ckpt, cfg, model, frame_from_dict(ckpt["frame"])


def frame_from_dict(d: dict):
    """A run's frame as saved: a picture's pixel frame or a shape's box frame."""
    if d.get("kind") == "image":
        from fieldstudio.tasks.image import ImageFrame

        return ImageFrame.from_dict(d)
    if d.get("kind") == "nerf":
        from fieldstudio.tasks.nerf import NeRFFrame

        return NeRFFrame.from_dict(d)
    return BoxFrame.from_dict(d)


def mesh_from_run(run_dir: str | Path, out_path: str | Path, resolution: int | None = None,
                  level: float | None = None, object_name: str | None = None,
                  contour_bound: str | None = None) -> tuple[Path, dict]:
    """Mesh a trained run at ``resolution`` (default: the run's) into ``out_path``, in the input's frame; NeRF runs
    at the density ``level`` (per world unit; default ``[nerf] mesh_level``); a joint multi-label run, its object
    ``object_name`` (``resolution`` is then that of the largest object's box, as in the fit); cross-sections with
    ``contour_bound`` (default: the run's ``[slices] contour_bound``)."""
    ckpt, cfg, model, frame = _load_run(run_dir)
    objects = ckpt.get("objects") or []
    obj = None
    if objects or object_name is not None:
        by_name = {o["name"]: o for o in objects}
        if object_name not in by_name:
            listed = ", ".join(by_name) if by_name else "none: it is a run of one object"
            raise FieldStudioError(f"{run_dir} holds one field for several objects; give one with --object "
                                   f"(its objects: {listed})" if object_name is None else
                                   f"{run_dir} has no object {object_name!r} (its objects: {listed})")
        obj = by_name[object_name]
    if registry.get(cfg.task).mesh_plan is None:
        raise FieldStudioError(f"{run_dir} is an {cfg.task} run, which has no surface to mesh; use fieldstudio "
                               "render for pictures")
    if level is not None:
        if cfg.task != "nerf":
            raise FieldStudioError(f"--level cuts a NeRF's density; {run_dir} is a {cfg.task} run, meshed at its "
                                   "zero level")
        cfg.nerf.mesh_level = level
    if contour_bound is not None:
        if cfg.task != "slices":
            raise FieldStudioError(f"--contour-bound applies to cross-section runs, and {run_dir} is a run of the "
                                   f"{cfg.task} task; leave it out")
        cfg.slices.contour_bound = contour_bound
    if resolution is not None:
        cfg.mesh.resolution = resolution
    validate(cfg)
    control = current_control()
    if control is not None:
        control.enter("mesh")
    r = cfg.mesh.resolution
    if obj is not None:
        r = object_resolution(obj["side"], max(o["side"] for o in objects), r)
    mesh = _extract(model, cfg, frame, r, obj, _input_sections(cfg, frame, None if obj is None else obj["label"]))
    path = export_mesh(mesh, out_path)
    return path, mesh_report(mesh)


def _input_sections(cfg: RunConfig, frame: BoxFrame, label: int | None):
    """The object's cross-sections (box frame) from a run's input read again (its file moved: None, small parts then
    go by size alone and no contour bound applies); None without reading it when nothing needs them."""
    if cfg.task != "slices" or (cfg.mesh.min_component_ratio <= 0 and cfg.slices.contour_bound == "off"):
        return None
    from fieldstudio.tasks.sections_input import load_sections
    from fieldstudio.tasks.slices import to_box

    try:
        cs = load_sections(cfg)[0]
    except (FieldStudioError, OSError):
        lost = []
        if cfg.mesh.min_component_ratio > 0:
            lost.append(f"parts under {cfg.mesh.min_component_ratio:.0%} of the largest part's area are dropped, "
                        "even where a contour shows them")
        if cfg.slices.contour_bound != "off":
            lost.append("no contour bound applies")
        logging.getLogger("fieldstudio").info(f"the run's input {cfg.input} cannot be read: {'; '.join(lost)}")
        return None
    return _object_sections(to_box(cs, frame), label if label is not None else cfg.slices.label)


# ------------------------------------------------------------------------------------------------ previews

EARLY_PREVIEW_SHARE = 10.0  # percent of the box shown as inside while a field has no zero level yet


def preview_mesh(model: Field, cfg: RunConfig, frame: BoxFrame, resolution: int = 48):
    """A coarse mesh of the field as it is now, in the input's frame (no narrow band, no refinement, no clean-up).
    Cheap: 48^3 points; an empty trimesh when the field has no surface at all.

    A field that has no zero level yet (an occupancy field starts everywhere "outside" and crosses zero only
    after some training) is shown at the level that puts its lowest ``EARLY_PREVIEW_SHARE`` % inside, so the
    shape it is forming shows from the first steps; ``mesh.metadata["level"]`` then says which level it is."""
    import trimesh

    from fieldstudio.mesh import evaluate_grid, marching_cubes

    volume = evaluate_grid(field_function(model, cfg, frame), resolution)
    level = 0.0
    if not volume.min() < 0.0 < volume.max():
        level = float(np.percentile(volume, EARLY_PREVIEW_SHARE))
    try:
        mesh = marching_cubes(volume, level=level, overwrite_input=True)
    except FieldStudioError:
        return trimesh.Trimesh()
    mesh = transform_mesh(mesh, frame.to_world_matrix())
    mesh.metadata["level"] = level
    return mesh


@torch.no_grad()  # library callers need no no_grad of their own (Job.preview has one too)
def preview_values(model: Field, cfg: RunConfig, frame: BoxFrame, points: np.ndarray) -> np.ndarray:
    """The field's values (negative inside) at ``points`` (N, 3) in the input's frame, as a float32 array; points
    outside the field's box get +1 (outside)."""
    box = frame.to_box(np.asarray(points, dtype=np.float64))
    values = np.ones(len(box), np.float32)
    inside = np.all(np.abs(box) <= 1.0, axis=1)
    fn = field_function(model, cfg, frame)
    rows = np.flatnonzero(inside)
    for s in range(0, len(rows), 2**15):  # chunks: bounded memory on large slices
        part = rows[s:s + 2**15]
        values[part] = fn(torch.as_tensor(box[part], dtype=torch.float32)).numpy()
    return values


@torch.no_grad()  # library callers need no no_grad of their own (Job.preview has one too)
def preview_slice(model: Field, cfg: RunConfig, frame: BoxFrame, axis: int = 2, position: float = 0.0,
                  size: int = 128) -> dict:
    """The field's values on the box plane ``x[axis] = position`` (box units, -1..1), ``size`` x ``size`` samples.

    Returns ``{"values": (size, size) float32 array (rows: the first other axis, columns: the second; negative
    inside), "axis", "position", "corners_world": (4, 3) world coordinates of the image's corners}``.
    """
    others = [a for a in range(3) if a != axis]
    t = torch.linspace(-1.0, 1.0, size)
    a, b = torch.meshgrid(t, t, indexing="ij")
    x = torch.zeros(size * size, 3)
    x[:, others[0]], x[:, others[1]], x[:, axis] = a.reshape(-1), b.reshape(-1), position
    values = field_function(model, cfg, frame)(x).reshape(size, size).numpy().astype(np.float32)
    corners = np.zeros((4, 3))
    for i, (u, v) in enumerate(((-1, -1), (-1, 1), (1, -1), (1, 1))):
        corners[i, others[0]], corners[i, others[1]], corners[i, axis] = u, v, position
    m = frame.to_world_matrix()
    return {"values": values, "axis": axis, "position": position, "corners_world": corners @ m[:3, :3].T + m[:3, 3]}


def preview_image(model: Field, cfg: RunConfig, frame, max_side: int = 256, crop=None, size=None) -> np.ndarray:
    """An image run's field as a picture, (h, w, C) float32 in [0, 1] units: ``crop`` (x, y, w, h in input pixels;
    default all) at ``size`` (w, h), by default scaled so that its longer side is at most ``max_side``."""
    from fieldstudio.tasks.image import render

    crop = crop or (0, 0, frame.width, frame.height)
    if size is None:
        f = min(1.0, max_side / max(crop[2], crop[3]))
        size = (max(1, round(crop[2] * f)), max(1, round(crop[3] * f)))
    return render(model, frame, crop, size)


def preview_view(model: Field, cfg: RunConfig, frame, camera=None, split: str = "test", index: int = 0,
                 max_side: int = 128, task=None, renderer=None) -> dict:
    """A NeRF run's render of one camera as it is now: ``camera`` (a ``fieldstudio.data.nerf_scenes.Camera``, e.g.
    a free camera from the window) or the ``index``-th camera of ``split``, its longer side at most ``max_side``
    pixels. Returns {"rgb": (h, w, 3) float32, "depth": (h, w) world units, "opacity": (h, w), "camera": the camera
    rendered, "reference": (h, w, 3) float32 picture of that camera at that size or None}. ``task`` (the training
    task, given by jobs) lends its occupancy grid and RBF neighbours so that nothing is rebuilt; a face showing a
    loaded run passes the ``renderer`` it keeps (``fieldstudio.tasks.nerf.Renderer``)."""
    from fieldstudio.data.nerf_scenes import load_picture
    from fieldstudio.tasks.nerf import Renderer, preview_camera

    cam, factor = preview_camera(cfg, camera, split, index, max_side)
    if renderer is None:
        renderer = Renderer(model, cfg, frame, occupancy=getattr(task, "occupancy", None),
                            cells=getattr(task, "cells", None))
    out = renderer.view(cam)
    reference = None
    if camera is None and cam.path is not None and Path(cam.path).exists():
        reference = load_picture(cam, factor, frame.background)[:cam.height, :cam.width]
    return {**out, "camera": cam, "reference": reference}
