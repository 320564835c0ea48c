"""spec.py
=======
What a task is made of (``TaskSpec``), what building one from an input gives (``Prepared``), and how its field is
meshed (``MeshPlan``). The registry (``fieldstudio.tasks.registry``) holds the tasks by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from fieldstudio.data.medical_readers import suffix_of  # noqa: F401  (one definition: .nii.gz is one suffix)


@dataclass(frozen=True)
class MeshPlan:
    """How a task's field is meshed, and the share of the fine grid this evaluates (time budgets keep it back).

    band_cells: distance band in coarse-cell diagonals; 0 = the band of sign-changing coarse cells.
    fine_share: the share of a 256^3 fine grid evaluated (a band around the surface: smaller on finer grids).
    value_scale: the field value is multiplied by this before marching cubes (occupancy logits: 1 / hinge alpha,
    so that the band and the Newton refinement see distance-like values).
    refine: move the vertices onto the zero level with Newton steps (logits are not linear across a cell).
    """

    band_cells: float
    coarse_factor: int
    fine_share: float
    value_scale: Callable[[Any], float] = lambda cfg: 1.0
    refine: bool = False
    # Added after the scale, from the run's config and frame (NeRF: the density level the user cut at).
    value_offset: Callable[[Any, Any], float] = lambda cfg, frame: 0.0
    score_seconds: float = 2.0  # kept back for scoring and export (measured on 2 cores, see the specs)


@dataclass(frozen=True)
class Finish:
    """What a task writes after training instead of a mesh (images: the reconstruction and its scores).

    write(cfg, model, prepared, run_dir) -> (metrics, files); points(cfg, prepared) -> how many field evaluations
    it makes, which a time budget keeps back (with ``seconds`` for the rest: scores, files)."""

    write: Callable[..., tuple[dict, dict]]
    points: Callable[[Any, Any], int]
    seconds: float = 0.5
    seconds_per_point: float = 0.0  # beyond the field's evaluation (scores and files per point)


@dataclass
class Prepared:
    """A task built from its input: the training task, the input's frame, a reference to score against (or None),
    and the input report stored in ``metrics.json``."""

    task: Any
    frame: Any
    reference: Any = None
    report: dict = field(default_factory=dict)
    fourier_sigma: float = 1.0  # what fourier.sigma = "auto" becomes for this input
    surface: Any = None  # (n, 3) box points on the expected surface: time budgets probe meshing cost there
    # A field of several objects (a joint multi-label fit): (folder name, label, box) per object, meshed one by one
    # in its box (fieldstudio.tasks.joint_slices.LabelBox).
    objects: list = field(default_factory=list)


@dataclass(frozen=True)
class TaskSpec:
    """One task. ``build(cfg) -> Prepared``. Shape tasks mesh their field (``mesh_plan``) and
    ``score(cfg, mesh, prepared, run_dir) -> (metrics, files)`` scores the mesh in the input's frame and may write
    extra files (an STL for planning tools); other tasks give ``finish`` instead (images: a reconstruction)."""

    name: str
    inputs: str                         # what a user gives, for messages and --help
    suffixes: tuple[str, ...]
    default_field: str
    default_params: int | Callable[[Any], int]  # or from the input (path -> parameters)
    build: Callable[[Any], Prepared]
    score: Callable[..., tuple[dict, dict]] | None = None
    mesh_plan: MeshPlan | None = None
    mesh_resolution: int = 256          # the marching-cubes grid when neither a file nor --resolution sets it
    mesh_smoothing: int = 0             # Taubin passes on the mesh when no config sets [mesh] smooth_iterations
    finish: Finish | None = None
    accepts_folders: bool = False       # a folder input (a DICOM series)
    # The field's input and output dimensions for an input (path -> (dim, out_dim)); shapes: (3, 1).
    field_shape: Callable[[Any], tuple[int, int]] | None = None
    # Input-dependent field defaults (field config, path) -> None, applied to the task's preset only.
    tune_field: Callable[[Any, Any], None] | None = None
    # Several objects in one input (labels of a CSL or label map): cfg -> (objects, notes, extents); see
    # fieldstudio.tasks.sections_input.plan_objects.
    plan_objects: Callable[[Any], tuple[list, list, dict]] | None = None
    # Inputs this task recognises by content before suffixes are looked at (path -> bool): NeRF scene folders.
    claims: Callable[[Any], bool] | None = None
    # ``fieldstudio render`` for this task's runs: fn(run_dir, out_path, **options) -> what was written.
    render: Callable[..., dict] | None = None
