"""config.py
=========
Dataclass configs for a run (field, task, training) that round-trip through plain TOML.

A field is a config, not a class zoo: ``FieldConfig.kind`` picks which encoders feed the decoder.
TOML has no ``None``: fields left at ``None`` are omitted when saving and come back as the default.

Checks: ``from_dict`` refuses unknown keys and values of the wrong type (from the fields' annotations; an integer
is accepted for a float), ``validate`` refuses values out of range. Messages name the file (when known), the table
and the key, e.g. ``config my.toml: [train] lr must be > 0, got -1``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import tomllib
import types
import typing
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import tomli_w

from fieldstudio.errors import FieldStudioError

FIELD_KINDS = ("hybrid", "neurbf", "grid", "mlp", "orex", "voxels")
# The RBF kernels that the layers and the fused kernels implement; kept here so that reading a config does not
# import torch (tests/test_config.py checks them against fieldstudio.encoders.rbf.KERNELS).
RBF_KERNELS = ("nlin_s", "ivq_a", "gauss_a")
# What neighbouring parallel contours may impose on a cross-section mesh (fieldstudio.tasks.contour_bound).
CONTOUR_BOUNDS = ("off", "inside", "both")


@dataclass
class GridConfig:
    """Multi-resolution grid (dense coarse levels, hashed fine levels)."""

    n_levels: int = 16
    n_features: int = 2
    base_resolution: int = 16
    max_resolution: int = 2048
    log2_hashmap_size: int = 19
    # fieldstudio (the built-in grid: PyTorch reference, fused CPU and CUDA kernels) | tcnn (tiny-cuda-nn's hash
    # grid on a CUDA GPU; its checkpoints do not convert, see fieldstudio.encoders.tcnn_grid)
    backend: str = "fieldstudio"


@dataclass
class RBFConfig:
    """Adaptive radial bases (NeuRBF). ``n_rbf="auto"`` fills the field's parameter budget."""

    n_rbf: int | str = "auto"
    n_features: int = 16
    k: int = 8
    kernel: str = "nlin_s"
    freq_min: float = 1.0
    freq_max: float = 8.0
    normalize: bool = True
    kmeans_iters: int = 10
    # Upper clamp of the kernel widths set by k-means (box units; NeuRBF's default is a tenth of the box).
    # Cross-sections need wider kernels: their centres sit on the planes and must reach the gaps between them.
    max_width: float = 0.2


@dataclass
class FourierConfig:
    n_frequencies: int = 128
    # Std of the Gaussian frequencies (cycles per box unit). "auto" (cross-sections): from the plane spacing, see
    # fieldstudio.tasks.slices.fourier_sigma; resolved when a run starts and saved as a number.
    sigma: float | str = 1.0


@dataclass
class OReXConfig:
    """OReX's network (orex.md 2.1-2.2): learned-frequency PE, a weight-tied MLP run ``iterations`` times, each
    pass adding a residual to the logit and replacing a hidden state."""

    n_frequencies: int = 5
    hidden: int = 64
    n_layers: int = 7
    state: int = 32
    iterations: int = 10


@dataclass
class DecoderConfig:
    """MLP decoder; ``sine`` adds NeuRBF's composition h + sin(h * m0) after the first layer. ``kind = "sum"``: no
    MLP, the output is the sum of the encoders' blocks of ``out_dim`` features (voxel fields; NeRF's hybrid)."""

    kind: str = "mlp"
    hidden: int = 64
    n_hidden_layers: int = 2
    sine: bool = True
    sine_freq_min: float = 30.0
    sine_freq_max: float = 300.0


@dataclass
class FieldConfig:
    """What the field is.

    kind: ``hybrid`` (grid + adaptive RBF, NeuRBF's full model), ``neurbf`` (adaptive RBF only),
    ``grid`` (multires grid only, Instant-NGP style), ``mlp`` (Fourier features + MLP), ``orex`` (OReX's
    learned-frequency PE and iterative MLP; its size is fixed by ``orex``, not by ``params``).
    params: total parameter budget (frozen RBF centres/shapes included, as NeuRBF counts them);
    ``None`` keeps the sizes as written.
    """

    kind: str = "hybrid"
    dim: int = 3
    out_dim: int = 1
    params: int | None = None
    grid: GridConfig = dc_field(default_factory=GridConfig)
    rbf: RBFConfig = dc_field(default_factory=RBFConfig)
    fourier: FourierConfig = dc_field(default_factory=FourierConfig)
    decoder: DecoderConfig = dc_field(default_factory=DecoderConfig)
    orex: OReXConfig = dc_field(default_factory=OReXConfig)


@dataclass
class TrainConfig:
    """The training loop's knobs. The run stops at ``steps`` or ``time_budget`` seconds, whichever comes first."""

    # None: no step limit when a time budget is set; the run API fills in the default step count when neither is given
    steps: int | None = None
    time_budget: float | None = None
    batch_size: int = 16384
    lr: float = 5e-3
    lr_decoder: float = 1e-3
    lr_final_ratio: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every_s: float = 30.0
    threads: int | None = None
    device: str = "auto"  # auto (CUDA when there is one) | cpu | cuda


@dataclass
class SDFTaskConfig:
    """Signed distance fitting of a mesh or of a given SDF (grid or samples; negative inside, in the normalised
    [-1,1]^3 box)."""

    pool_size: int = 2_000_000
    surface_noise: float = 0.01
    uniform_fraction: float = 0.125
    # "auto": MAPE (NeuRBF / torch-ngp) for grid and RBF fields; L1 for the Fourier MLP, which MAPE's 1/0.01
    # weight on surface samples pins near zero everywhere (bunny, 150 steps: IoU 0.19 with MAPE, 0.97 with L1).
    loss: str = "auto"
    # MAPE's denominator is |sdf| + mape_eps; None: 0.03 for meshes, torch-ngp's and NeuRBF's 0.01 for given
    # distances (grids, samples; 0.03 was not measured there and fails a short scattered-samples test). At 0.01 the
    # surface samples of a mesh weigh 100 and the fit can pin the pool's fixed surface points to zero with a gradient
    # flattened around them (|grad f| 0.89 instead of 1 on the armadillo): a noisy surface that some seeds fall into
    # (NAE 5.37 deg against 4.42-4.49). 0.03 removed that mode on every seed tried (docs/benchmarks.md, session 15).
    mape_eps: float | None = None
    # Meshes: redraw the pool's surface half (and its RBF neighbours) each time its points have been drawn this many
    # times on average (0: never), so that the field cannot settle on a fixed set of surface points
    surface_redraw: float = 4.0
    eikonal_weight: float = 0.0
    normalize_extent: float = 0.95
    kmeans_points: int = 200_000
    # SDF inputs (grids, samples): a mesh file to score the result against (IoU, Chamfer, ...), in the input's
    # world frame and units; "" = none.
    reference: str = ""
    # SDF inputs given positive inside: negate them on reading (fieldstudio expects negative inside).
    flip_sign: bool = False


@dataclass
class SlicesTaskConfig:
    """Occupancy from cross-sections (OReX). Levels run coarse to fine; defaults are OReX's released ones."""

    radius_exponents: list = dc_field(default_factory=lambda: [4, 5, 5, 6, 6, 7])  # offset r = 0.5**e
    samples_per_edge: list = dc_field(default_factory=lambda: [2, 2, 3, 3, 4, 5])
    level_weights: list = dc_field(default_factory=lambda: [50, 50, 100, 100, 150, 200])  # share of the run
    window: int = 3
    white_noise: int = 2048
    # Points per loop inside its contour, lifted off the plane within the slab prior's cone (tasks/slices.py:
    # loop_cores). 0, the default: 256 helped the sparsest random input and cost the heart a little at every
    # offset (docs/benchmarks.md "Session 12").
    loop_core_points: int = 0
    hull_points: int = 16384
    hull_margin: float = 0.05
    hinge_weight: float = 1e-4
    hinge_alpha: float = 100.0
    hinge_points: int = 2048  # batch points the hinge's mean is estimated on (see tasks/slices.py: loss)
    refine_iterations: int = 2
    # Labelled points between neighbouring parallel planes (tasks/slab_prior.py): a share of every batch, their
    # loss weighted by prior_weight (0: off, the default: at 120 s it did not lower Hausdorff on 6 benchmark inputs,
    # docs/benchmarks.md "Session 9"); the agreement margin is a fraction of the gap.
    prior_weight: float = 0.0
    prior_fraction: float = 0.25
    prior_margin: float = 0.2
    # Depth over height of the prior's inside cone above a loop that the next plane no longer shows (a part that ends
    # between planes). 2, the default, is the ordinary cone; 0.25 lowered Hausdorff on 4 of 5 parallel inputs by
    # 10-15 % and cost IoU or NAE on 3 (docs/benchmarks.md, "Session 16").
    prior_cap_slope: float = 2.0
    # What neighbouring parallel contours decide, imposed on the mesh (tasks/contour_bound.py): "off", "inside" (the
    # mesh reaches at least the inside cones and where both planes agree on inside) or "both" (also the outside ones,
    # when every plane is in one parallel stack). Off by default: NAE +0.5-1.9 deg for Hausdorff -15 % on 2 of 5 inputs.
    contour_bound: str = "off"
    # Multi-label inputs: "each" (one object and mesh per label), "union" (one object), or a list such as "1,4".
    labels: str = "each"
    # How "each" fits several labels: "joint" (one field with an output per label, trained once; a point belongs to
    # one label) or "separate" (one field per label, one after another; labels that overlap always take this way).
    multi_label: str = "joint"
    label: int | None = None  # set on the run of one object: the label it reconstructs
    rois: str = ""  # RTSTRUCT: ROI names to reconstruct, comma-separated (default: every ROI)
    # Label maps (NIfTI, NRRD, DICOM series): which slices become planes. Every `every`-th slice along the
    # acquisition axis from `slice_offset`, or families such as "axial:6,sagittal:6,coronal:6" (oblique: a world
    # normal x/y/z and a count, e.g. "1/0/1:6").
    every: int = 1
    slice_offset: int = 0
    families: str = ""


@dataclass
class ImageTaskConfig:
    """Image fitting (NeuRBF's 2-D task)."""

    frame: int = 0  # which frame of an animated GIF or page of a multi-page TIFF
    kmeans_points: int = 262_144  # random pixels that place the RBFs (weighted by the picture's gradient)


@dataclass
class NeRFTaskConfig:
    """Radiance fields from posed pictures (NeRF scenes)."""

    downscale: int = 1  # train on pictures area-averaged by this factor
    # RGBA pictures: "random" trains on a random colour behind every ray (the opacity must then be right, so no
    # haze fills empty space), a colour ("white", "black", or "r,g,b" in 0..1) is what views are scored and shown on.
    background: str = "white"
    steps_per_diagonal: int = 512  # sample spacing along rays: the box diagonal over this
    samples_per_step: int = 262_144  # most field evaluations per training step (rays are dropped beyond it)
    occupancy_resolution: int = 64  # cells per axis of the empty-space grid
    occupancy_every: int = 16  # steps between its updates
    rbf_warmup_steps: int = 300  # hybrid: grid-only steps before the RBFs are placed from the density
    mesh_level: float = 10.0  # density (per world unit) at which `fieldstudio mesh` cuts the surface
    eval_views: int = 0  # test views rendered and scored at the end of a fit (0: all)


@dataclass
class MeshConfig:
    """Marching cubes and clean-up of shape tasks."""

    resolution: int = 256
    # Set when the resolution is the task's default (no file, option or override chose it): then a time budget that
    # meshing at it would take more than half of meshes at 384^3 or 256^3 instead (run.py: _BudgetAfterSetup).
    auto_resolution: bool = False
    # Parts smaller than this fraction of the largest part's area are dropped: a hash-grid SDF trained for
    # a few thousand steps can leave small closed "floaters" in empty space (the demo's: 0.5 % and 0.7 %).
    min_component_ratio: float = 0.02
    # Taubin smoothing passes on the mesh (fieldstudio.mesh.extract_mesh); the task's default when a config does not
    # set it (SDF inputs: 2, docs/benchmarks.md "Session 13"; others 0).
    smooth_iterations: int = 0


@dataclass
class RunConfig:
    """Everything needed to reproduce a run. Saved as ``RUN_DIR/config.toml``."""

    input: str = ""
    task: str = "sdf"
    mesh: MeshConfig = dc_field(default_factory=MeshConfig)
    field: FieldConfig = dc_field(default_factory=FieldConfig)
    train: TrainConfig = dc_field(default_factory=TrainConfig)
    sdf: SDFTaskConfig = dc_field(default_factory=SDFTaskConfig)
    slices: SlicesTaskConfig = dc_field(default_factory=SlicesTaskConfig)
    image: ImageTaskConfig = dc_field(default_factory=ImageTaskConfig)
    nerf: NeRFTaskConfig = dc_field(default_factory=NeRFTaskConfig)


def dotted_keys(table: dict, prefix: str):
    """(dotted key, value) pairs of a nested TOML table: {"grid": {"n_levels": 4}}, "field" -> field.grid.n_levels."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from dotted_keys(value, f"{prefix}.{key}")
        else:
            yield f"{prefix}.{key}", value


def to_dict(cfg: Any) -> dict:
    """Config -> nested dict of TOML-able primitives (``None`` values dropped)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is None:
            continue
        out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else value
    return out


def _prefix(source: str | Path | None) -> str:
    return f"config {source}: " if source is not None else "config: "


def _key_name(key: str) -> str:
    """Dotted key -> how messages name it: ``train.lr`` -> ``[train] lr``, ``input`` -> ``input``."""
    table, _, name = key.rpartition(".")
    return f"[{table}] {name}" if table else name


def _show(value: Any) -> str:
    """A value as a config file spells it (``"abc"``, ``true``, ``[1, 2]``)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list"}


def _options(annotation: Any) -> tuple:
    """The types an annotation allows: ``int | None`` -> ``(int, NoneType)``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _conform(value: Any, annotation: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits ``annotation``, and the value to store (an integer given for a float becomes one).

    Booleans are not integers here (``steps = true`` is a mistake), and floats must be finite.
    """
    for option in _options(annotation):
        base = typing.get_origin(option) or option
        if option is type(None):
            if value is None:
                return True, None
        elif base is bool:
            if isinstance(value, bool):
                return True, value
        elif base is int:
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                return True, int(value)
        elif base is float:
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
                return True, float(value)
        elif base is list:
            if isinstance(value, (list, tuple)):
                return True, list(value)
        elif isinstance(value, base):
            return True, value
    return False, value


def _checked(value: Any, annotation: Any, key: str, source: str | Path | None) -> Any:
    ok, out = _conform(value, annotation)
    if not ok:
        words = [_TYPE_WORDS.get(typing.get_origin(o) or o, getattr(o, "__name__", str(o)))
                 for o in _options(annotation) if o is not type(None)]
        if isinstance(value, float):  # nan or inf given for a number
            words = ["a finite number" if w == "a number" else w for w in words]
        raise FieldStudioError(f"{_prefix(source)}{_key_name(key)} must be {' or '.join(words)}, "
                               f"got {_show(value)}")
    return out


def from_dict(cls: type, data: dict, source: str | Path | None = None, _table: str = "") -> Any:
    """Nested dict -> config of type ``cls``; unknown keys and values of the wrong type are user errors.

    ``source`` (the config file) is named in the messages. Types come from the dataclass annotations: ``int``
    (not a bool), ``float`` (an int is accepted and stored as a float), ``bool``, ``str``, ``list`` and unions of
    them such as ``int | None``. Ranges are :func:`validate`'s job.
    """
    hints = typing.get_type_hints(cls)
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(data) - set(known))
    if unknown:
        place = f"in [{_table}]" if _table else "at the top level"
        raise FieldStudioError(f"{_prefix(source)}unknown key(s) {unknown} {place}; known keys are {known}")
    kwargs = {}
    for name, value in data.items():
        key = f"{_table}.{name}" if _table else name
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise FieldStudioError(f"{_prefix(source)}[{key}] must be a table, got {_show(value)}")
            kwargs[name] = from_dict(annotation, value, source, key)
        else:
            kwargs[name] = _checked(value, annotation, key, source)
    return cls(**kwargs)


def label_list(labels: str) -> list[int] | None:
    """``slices.labels`` as a list of label numbers, or None for "each" / "union"."""
    text = str(labels).strip().lower()
    if text in ("each", "union"):
        return None
    try:
        out = sorted({int(t) for t in text.replace(" ", "").split(",") if t})
    except ValueError:
        out = []
    if not out:
        raise FieldStudioError(f"labels {labels!r} not understood; give each, union, or label numbers such as 1,4")
    return out


# The first lines of a run's config.toml: users edited it and expected `fieldstudio mesh` to follow.
RUN_CONFIG_HEADER = ("# The resolved settings of this run, for the record and as a starting point: fieldstudio fit "
                     "INPUT --config config.toml.\n# Editing this file changes nothing in this run: resuming it and "
                     "`fieldstudio mesh` read the settings saved in checkpoint.pt.\n\n")


def save_toml(cfg: Any, path: str | Path, header: str = "") -> None:
    from fieldstudio.io import atomic_write_text

    atomic_write_text(path, header + tomli_w.dumps(to_dict(cfg)))


def load_run_config(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FieldStudioError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise FieldStudioError(f"config file {path} is not valid TOML: {err}") from None
    return validate(from_dict(RunConfig, data, path), path)


# Command-line options that set a config key, named next to the key in messages (the value may come from either).
_CLI_OPTIONS = {"train.steps": "--steps", "train.time_budget": "--time-budget", "train.seed": "--seed",
                "field.params": "--params", "field.kind": "--field", "mesh.resolution": "--resolution",
                "slices.labels": "--labels", "slices.multi_label": "--multi-label", "nerf.downscale": "--downscale",
                "nerf.mesh_level": "--level", "slices.contour_bound": "--contour-bound"}


def _check_types(cfg: Any, source: str | Path | None, table: str = "") -> None:
    """Every value of a config built in code has its field's type (as :func:`from_dict` checks for files)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{table}.{f.name}" if table else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            _check_types(value, source, key)
        else:
            _checked(value, hints[f.name], key, source)


def _mesh_suffix(path: str) -> bool:
    from fieldstudio.data.meshes import MESH_SUFFIXES  # trimesh: only when a reference is given

    return Path(path).suffix.lower() in MESH_SUFFIXES


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


# task -> (predicate on field.out_dim, what it must be)
_OUT_DIMS = {
    "image": (lambda v: 1 <= v <= 4, "the picture's channel count (1-4)"),
    "nerf": (lambda v: v == 4, "4 (density and RGB)"),
    "sdf": (lambda v: v == 1, "1 (one value per point: distance or occupancy)"),
    # Cross-sections: one occupancy logit, or a joint multi-label fit's background + one class per label.
    "slices": (lambda v: v == 1 or v >= 3, "1 (occupancy), or one more than the labels of a joint multi-label fit"),
}


def background_colour(text: str) -> tuple[float, float, float] | None:
    """``[nerf] background`` as an RGB triple in 0..1; None for "random"."""
    names = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "random": None}
    if text in names:
        return names[text]
    rgb = tuple(float(t) for t in text.split(","))
    if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):
        raise ValueError(text)
    return rgb


def _is_background(text: str) -> bool:
    try:
        background_colour(text)
    except ValueError:
        return False
    return True


def validate(cfg: RunConfig, source: str | Path | None = None) -> RunConfig:
    """Check the types and ranges of values a user could get wrong; raise FieldStudioError naming the key
    (``[train] lr``), the file when ``source`` is given, what is required and what was given."""
    _check_types(cfg, source)
    f, g, r, sl = cfg.field, cfg.field.grid, cfg.field.rbf, cfg.slices

    def positive(v):
        return v > 0

    def at_least(n):
        return lambda v: v >= n

    def optional(pred):
        return lambda v: v is None or pred(v)

    def between(lo, hi):
        return lambda v: lo <= v <= hi

    # (dotted key, predicate on its value, what the value must be)
    rules = [
        ("field.kind", lambda v: v in FIELD_KINDS, f"one of {', '.join(FIELD_KINDS)}"),
        ("field.dim", lambda v: v == (2 if cfg.task == "image" else 3),
         "2 for pictures, 3 for shapes and scenes" + f" (the {cfg.task} task)"),
        ("field.out_dim", _OUT_DIMS.get(cfg.task, _OUT_DIMS["sdf"])[0], _OUT_DIMS.get(cfg.task, _OUT_DIMS["sdf"])[1]),
        ("field.params", optional(at_least(1000)), "at least 1000 (or left out to keep the sizes as written)"),
        ("field.grid.n_levels", between(1, 32), "1..32"),
        ("field.grid.n_features", between(1, 16), "1..16 (the fused grid kernels' limit)"),
        ("field.grid.base_resolution", between(1, g.max_resolution), f"1..max_resolution ({g.max_resolution})"),
        ("field.grid.max_resolution", between(1, 65536), "1..65536"),
        ("field.grid.log2_hashmap_size", between(4, 24), "4..24 (a table of 2**N rows per level)"),
        ("field.grid.backend", lambda v: v in ("fieldstudio", "tcnn"), "fieldstudio or tcnn"),
        ("field.rbf.n_rbf", lambda v: v == "auto" or (_is_int(v) and v >= 1), 'an integer >= 1 or "auto"'),
        ("field.rbf.n_features", at_least(1), ">= 1"),
        ("field.rbf.k", between(1, 64), "1..64 (neighbours per point; the kernels' limit)"),
        ("field.rbf.kernel", lambda v: v in RBF_KERNELS, f"one of {', '.join(RBF_KERNELS)}"),
        ("field.rbf.freq_min", positive, "> 0"),
        ("field.rbf.freq_max", at_least(r.freq_min), f">= freq_min ({r.freq_min})"),
        ("field.rbf.kmeans_iters", at_least(0), ">= 0"),
        ("field.rbf.max_width", between(1e-3, 2.0), "0.001..2 (box units)"),
        ("field.fourier.n_frequencies", at_least(1), ">= 1"),
        ("field.fourier.sigma", lambda v: v == "auto" or (_is_num(v) and v > 0), 'a number > 0 or "auto"'),
        ("field.decoder.kind", lambda v: v in ("mlp", "sum"), "mlp or sum"),
        ("field.decoder.hidden", at_least(1), ">= 1"),
        ("field.decoder.n_hidden_layers", at_least(1), ">= 1"),
        ("field.decoder.sine_freq_min", positive, "> 0"),
        ("field.decoder.sine_freq_max", at_least(f.decoder.sine_freq_min),
         f">= sine_freq_min ({f.decoder.sine_freq_min})"),
        *((f"field.orex.{name}", at_least(1), ">= 1")
          for name in ("n_frequencies", "hidden", "n_layers", "state", "iterations")),
        ("train.steps", optional(at_least(1)), ">= 1 (or left out)"),
        ("train.time_budget", optional(positive), "> 0 seconds (or left out)"),
        ("train.batch_size", at_least(1), ">= 1"),
        ("train.lr", positive, "> 0"),
        ("train.lr_decoder", positive, "> 0"),
        ("train.lr_final_ratio", lambda v: 0 < v <= 1, "in (0, 1]"),
        ("train.weight_decay", at_least(0), ">= 0"),
        ("train.seed", at_least(0), ">= 0"),
        ("train.checkpoint_every_s", positive, "> 0 seconds"),
        ("train.threads", optional(at_least(1)), ">= 1 (or left out to use the default)"),
        ("train.device", lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
        ("sdf.pool_size", at_least(1000), ">= 1000 samples"),
        ("sdf.surface_noise", positive, "> 0 (box units)"),
        ("sdf.uniform_fraction", between(0.0, 0.5), "0..0.5"),
        ("sdf.loss", lambda v: v in ("auto", "mape", "l1"), "auto, mape or l1"),
        ("sdf.surface_redraw", at_least(0), ">= 0 (0: never)"),
        ("sdf.mape_eps", optional(positive), "> 0 (box units), or left out for the input's default"),
        ("sdf.eikonal_weight", at_least(0), ">= 0"),
        ("sdf.normalize_extent", lambda v: 0 < v <= 1, "in (0, 1]"),
        ("sdf.kmeans_points", at_least(1), ">= 1"),
        ("sdf.reference", lambda v: v == "" or _mesh_suffix(v), "a mesh file (.obj .ply .stl .off .glb .gltf) "
         "or left out"),
        ("slices.radius_exponents", lambda v: all(_is_num(x) and x >= 0 for x in v), "a list of numbers >= 0"),
        ("slices.samples_per_edge", lambda v: all(_is_int(x) and x >= 1 for x in v), "a list of integers >= 1"),
        ("slices.level_weights", lambda v: all(_is_num(x) and x > 0 for x in v), "a list of numbers > 0"),
        ("slices.window", at_least(1), ">= 1"),
        ("slices.white_noise", at_least(0), ">= 0"),
        ("slices.loop_core_points", at_least(0), ">= 0"),
        ("slices.hull_points", at_least(1), ">= 1"),
        ("slices.hull_margin", at_least(0), ">= 0"),
        ("slices.hinge_weight", at_least(0), ">= 0"),
        ("slices.hinge_alpha", positive, "> 0"),
        ("slices.hinge_points", at_least(1), ">= 1"),
        ("slices.refine_iterations", at_least(0), ">= 0"),
        ("slices.contour_bound", lambda v: v in CONTOUR_BOUNDS,
         ", ".join(CONTOUR_BOUNDS[:-1]) + " or " + CONTOUR_BOUNDS[-1]),
        ("slices.prior_cap_slope", positive, "> 0 (depth over height; 2: the ordinary cone)"),
        ("image.frame", at_least(0), ">= 0 (frames and pages count from 0)"),
        ("nerf.downscale", between(1, 64), "1..64"),
        ("nerf.background", _is_background, '"random", "white", "black" or "r,g,b" with values in 0..1'),
        ("nerf.steps_per_diagonal", between(16, 8192), "16..8192"),
        ("nerf.samples_per_step", at_least(1024), ">= 1024"),
        ("nerf.occupancy_resolution", between(4, 512), "4..512"),
        ("nerf.occupancy_every", at_least(1), ">= 1"),
        ("nerf.rbf_warmup_steps", at_least(0), ">= 0"),
        ("nerf.mesh_level", positive, "> 0 (a density, per world unit)"),
        ("nerf.eval_views", at_least(0), ">= 0 (0: every test view)"),
        ("image.kmeans_points", at_least(1), ">= 1"),
        ("mesh.resolution", between(8, 2048), "8..2048 (256 is a good default)"),
        ("mesh.min_component_ratio", between(0.0, 1.0), "0..1"),
        ("mesh.smooth_iterations", at_least(0), ">= 0"),
    ]
    for key, ok, requirement in rules:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if not ok(value):
            option = f" ({_CLI_OPTIONS[key]})" if key in _CLI_OPTIONS else ""
            raise FieldStudioError(f"{_prefix(source)}{_key_name(key)}{option} must be {requirement}, "
                                   f"got {_show(value)}")
    if not (len(sl.radius_exponents) == len(sl.samples_per_edge) == len(sl.level_weights) >= 1):
        raise FieldStudioError(f"{_prefix(source)}[slices] radius_exponents, samples_per_edge and level_weights "
                               "must have the same length (one entry per level)")
    try:
        label_list(sl.labels)
    except FieldStudioError as err:
        raise FieldStudioError(f"{_prefix(source)}[slices] labels (--labels): {err}") from None
    if sl.multi_label not in ("joint", "separate"):
        raise FieldStudioError(f"{_prefix(source)}[slices] multi_label (--multi-label) must be joint or separate, "
                               f"got {_show(sl.multi_label)}")
    if sl.every < 1 or not 0 <= sl.slice_offset < sl.every:
        raise FieldStudioError(f"{_prefix(source)}--every {sl.every} --offset {sl.slice_offset} ([slices] every, "
                               "slice_offset): need every >= 1 and an offset from 0 to every - 1")
    return cfg
