"""registry.py
===========
The tasks a run can do, by name: which inputs each reads, its default field, how its input becomes a training
task, how its field is meshed and how the result is scored. A new task (image fitting, NeRF) is one module plus one
``register(TaskSpec(...))`` here; nothing else switches on task names.

Builders import their task modules lazily, so looking a task up costs nothing (open3d, pydicom stay unloaded).
"""

from __future__ import annotations

from pathlib import Path

from fieldstudio.errors import FieldStudioError
from fieldstudio.tasks.spec import MeshPlan, Prepared, TaskSpec, suffix_of


_TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    _TASKS[spec.name] = spec
    return spec


def names() -> list[str]:
    return list(_TASKS)


def get(name: str) -> TaskSpec:
    """The task called ``name``; an unknown one is a user error listing what there is."""
    if name not in _TASKS:
        known = "; ".join(f"{s.name} ({s.inputs})" for s in _TASKS.values())
        raise FieldStudioError(f"task {name!r} is not available in this version; available tasks: {known}")
    return _TASKS[name]


def for_input(path: str | Path) -> TaskSpec:
    """The task that reads ``path``, from its suffix (a folder: the task that reads folders). Suffixes that
    several tasks read are told apart by their content (NIfTI: float values of both signs are signed distances,
    anything else a label map)."""
    for spec in _TASKS.values():
        if spec.claims is not None and spec.claims(path):
            return spec
    if Path(path).is_dir():
        for spec in _TASKS.values():
            if spec.accepts_folders:
                return spec
    suffix = suffix_of(path)
    sniff = _SNIFFERS.get(suffix)
    name = sniff(path) if sniff is not None and Path(path).is_file() else None
    if name in _TASKS:
        return _TASKS[name]
    for spec in _TASKS.values():
        if suffix in spec.suffixes:
            return spec
    known = ", ".join(sorted({s for spec in _TASKS.values() for s in spec.suffixes}))
    raise FieldStudioError(f"cannot tell the task from {Path(path).name!r}; inputs with suffix {known} are "
                           "supported (or a DICOM series folder), or pass --task")


def _nifti_task(path) -> str:
    from fieldstudio.data.sdf_readers import nifti_holds_sdf

    return "sdf" if nifti_holds_sdf(path) else "slices"


# suffix -> fn(path) -> task name, for suffixes that more than one task reads
_SNIFFERS = {".nii": _nifti_task, ".nii.gz": _nifti_task}


# ------------------------------------------------------------------------------------------------ sdf

def _build_sdf(cfg) -> Prepared:
    """Meshes (sampled with the open3d oracle), or signed distances given as a grid or samples
    (``fieldstudio.tasks.sdf_inputs``)."""
    from fieldstudio.data.sdf_readers import input_kind

    if input_kind(cfg.input) != "mesh":
        from fieldstudio.tasks import sdf_inputs

        return sdf_inputs.build(cfg)
    if cfg.sdf.reference:
        raise FieldStudioError("--reference ([sdf] reference) is for signed distance inputs (grids, samples); a "
                               "mesh input is scored against itself, so leave it out")

    from fieldstudio.data.meshes import load_mesh
    from fieldstudio.tasks.sdf import SDFTask

    mesh, report = load_mesh(cfg.input)
    task = SDFTask(mesh, report["watertight"], cfg.sdf, seed=cfg.train.seed)
    return Prepared(task, task.frame, task.mesh, report, surface=task.points[task.sdf == 0])


def _score_sdf(cfg, mesh, prepared: Prepared, run_dir: Path) -> tuple[dict, dict]:
    """Scores in the box frame against the normalised input (distances are relative to its diagonal anyway); SDF
    inputs against their samples (``fieldstudio.tasks.sdf_inputs.score``)."""
    import numpy as np

    if prepared.report.get("kind") in ("sdf_grid", "sdf_samples"):
        from fieldstudio.tasks import sdf_inputs

        return sdf_inputs.score(cfg, mesh, prepared, run_dir)

    from fieldstudio.control import check_cancel
    from fieldstudio.mesh import transform_mesh
    from fieldstudio.metrics import mesh_metrics

    check_cancel()
    box_mesh = transform_mesh(mesh, np.linalg.inv(prepared.frame.to_world_matrix()))
    return mesh_metrics(box_mesh, prepared.reference, seed=cfg.train.seed), {}


def _tune_sdf_field(field_cfg, path) -> None:
    """Meshes: the hybrid's finest grid level 1024, not NeuRBF's 2048. With a 2^14 table (450k parameters) the
    2048 level's cells collide on the surface and add noise; 1024 lowered NAE on all four benchmark meshes, two seeds
    each, and a step is faster (docs/benchmarks.md, session 16). Given distances (grids, samples) keep 2048: not
    measured there."""
    from fieldstudio.data.meshes import MESH_SUFFIXES

    if field_cfg.kind == "hybrid" and suffix_of(Path(path)) in MESH_SUFFIXES:
        field_cfg.grid.max_resolution = 1024


def _register_builtin() -> None:
    from fieldstudio.data.meshes import MESH_SUFFIXES
    from fieldstudio.data.sdf_readers import GRID_SUFFIXES
    from fieldstudio.tasks import sections_input as sections

    register(TaskSpec(
        name="sdf", inputs="meshes: " + " ".join(MESH_SUFFIXES) + "; signed distances (negative inside): grids "
                           ".npy .npz, float NIfTI .nii .nii.gz, samples .npz (points, sdf)",
        # NIfTI is also the slices task's: for_input tells them apart by content (_SNIFFERS).
        suffixes=tuple(MESH_SUFFIXES) + GRID_SUFFIXES,
        default_field="hybrid", default_params=450_000, build=_build_sdf, score=_score_sdf, tune_field=_tune_sdf_field,
        # SDFs get a distance band, narrowed on grids that double from 64^3 (coarse_factor 8): 10.4 % of the fine
        # grid at 256^3 and 5.4 % at 512^3 on the armadillo.
        # Scoring (200k surface points per mesh, 400k IoU points) takes 1.7-4.0 s on 2 cores for 0.6-1.6M faces:
        # about 1 s, and a part per face that run.FACE_SECONDS keeps back with the meshing.
        mesh_plan=MeshPlan(band_cells=2.0, coarse_factor=8, fine_share=0.11, score_seconds=1.0),
        # Fine detail needs fine cells: the exact SDF of the armadillo meshed at 256^3 has a normal error of 4.4 deg,
        # at 384^3 3.1, at 512^3 2.4 (docs/benchmarks.md, "Session 11: what limits fine detail"). At 120 s a fit
        # meshed at 512^3 ends 0.25-0.3 deg under one meshed at 384^3, though it trains 8 % fewer steps
        # ("Session 18").
        mesh_resolution=512,
        # Taubin passes lower the normal error on all four benchmark meshes (armadillo 4.53 -> 4.35 deg with 2 at
        # 384^3; 4.02 -> 3.99 deg with 3 instead of 2 at 512^3) and keep IoU; Hausdorff grows (2-14 % on the same
        # fields, 17-32 % in fresh fits; docs/benchmarks.md, "Session 13: smoothing the SDF mesh").
        mesh_smoothing=3))
    register(TaskSpec(
        name="slices", inputs="cross-sections .csl, label maps .nii .nii.gz .nrrd, DICOM SEG/RTSTRUCT .dcm, "
                              "a DICOM series folder",
        suffixes=sections.SUFFIXES,
        # The best field measured for cross-sections (docs/benchmarks.md): the hybrid's hash grid is unconstrained
        # between planes (IoU 0.37 on a 12-plane torus) where a small Fourier MLP reaches 0.91.
        default_field="mlp", default_params=40_000, build=sections.build, score=sections.score,
        # Occupancy logits are not distance-like (a distance band missed parts of a torus even scaled by the
        # gradient cap 1/alpha): sign-changing cells of a 2x coarser grid (thin parts such as finger bones
        # must show there), then Newton refinement of the vertices.
        # Measured fine shares: 1.6 % (hand.csl), 5.5 % (heart.nii.gz) of 256^3; 0.1 also covers the Newton
        # refinement of the vertices (a forward and a backward pass each).
        mesh_plan=MeshPlan(band_cells=0.0, coarse_factor=2, fine_share=0.1,
                           value_scale=lambda cfg: 1.0 / cfg.slices.hinge_alpha, refine=True),
        accepts_folders=True, plan_objects=sections.plan_objects))


def _register_image() -> None:
    from fieldstudio.data.images import IMAGE_SUFFIXES
    from fieldstudio.tasks.spec import Finish

    def lazy(name):  # the image module imports torch: only when a run needs it
        def call(*args, **kwargs):
            from fieldstudio.tasks import image
            return getattr(image, name)(*args, **kwargs)
        return call

    register(TaskSpec(
        name="image", inputs="pictures: " + " ".join(IMAGE_SUFFIXES), suffixes=IMAGE_SUFFIXES,
        default_field="hybrid", default_params=lazy("default_params"), build=lazy("build"),
        # Rendering costs one evaluation per pixel; scoring and writing the files measured 0.4-1.0 s for
        # 768 x 512 pixels on 2 cores (SSIM and PNG encoding): 2.5 us per pixel kept back.
        finish=Finish(write=lazy("finish"), points=lazy("finish_points"), seconds=0.5, seconds_per_point=2.5e-6),
        field_shape=lazy("field_shape"), tune_field=lazy("tune_field"), render=lazy("render_run")))


def _register_nerf() -> None:
    import math

    from fieldstudio.data.nerf_scenes import is_scene
    from fieldstudio.tasks.spec import Finish

    def lazy(name):  # the nerf module imports torch: only when a run needs it
        def call(*args, **kwargs):
            from fieldstudio.tasks import nerf
            return getattr(nerf, name)(*args, **kwargs)
        return call

    def level_offset(cfg, frame):  # the field's first output is log density - bias; cut at the user's level
        from fieldstudio.tasks.nerf import density_bias
        return math.log(cfg.nerf.mesh_level / frame.scale) - density_bias(cfg)

    register(TaskSpec(
        name="nerf", inputs="NeRF scenes: a folder with transforms_train.json (Blender) or transforms.json "
                            "(nerfstudio, instant-ngp), or that json", suffixes=(".json",),
        # Voxels by default: on a CPU they beat the hash grid and both hybrids at equal time and at equal steps
        # (docs/benchmarks.md, "NeRF"); --field hybrid adds adaptive RBFs to them.
        default_field="voxels", default_params=10_000_000, build=lazy("build"),
        # Rendering the held-out views: ~32 evaluations per pixel (lego), PSNR/SSIM and PNGs ~20 us per pixel.
        finish=Finish(write=lazy("finish"), points=lazy("finish_points"), seconds=1.0, seconds_per_point=0.0),
        field_shape=lambda path: (3, 4), accepts_folders=False, claims=is_scene, render=lazy("render_run"),
        # The density's level set: sign-changing cells of a 2x coarser grid (log densities are not distances).
        mesh_plan=MeshPlan(band_cells=0.0, coarse_factor=2, fine_share=0.1, value_scale=lambda cfg: -1.0,
                           value_offset=level_offset)))


_register_builtin()
_register_image()
_register_nerf()

__all__ = ["TaskSpec", "MeshPlan", "Prepared", "register", "get", "names", "for_input", "suffix_of"]
