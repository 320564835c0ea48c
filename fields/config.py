"""config.py
=========
Dataclass configs for a run (field, task, training) that round-trip through plain TOML.

A field is a config, not a class zoo: ``FieldConfig.kind`` picks which encoders feed the decoder.
TOML has no ``None``: fields left at ``None`` are omitted when saving and come back as the default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import tomli_w

from fieldstudio.errors import FieldStudioError

FIELD_KINDS = ("hybrid", "neurbf", "grid", "mlp", "orex")


@dataclass
class GridConfig:
    """Multi-resolution grid (dense coarse levels, hashed fine levels)."""

    n_levels: int = 16
    n_features: int = 2
    base_resolution: int = 16
    max_resolution: int = 2048
    log2_hashmap_size: int = 19


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
    """MLP decoder; ``sine`` adds NeuRBF's composition h + sin(h * m0) after the first layer."""

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

    steps: int = 2000
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
    """Signed distance fitting of a mesh (negative inside, in the normalised [-1,1]^3 box)."""

    pool_size: int = 2_000_000
    surface_noise: float = 0.01
    uniform_fraction: float = 0.125
    # "auto": MAPE (NeuRBF / torch-ngp) for grid and RBF fields; L1 for the Fourier MLP, which MAPE's 1/0.01
    # weight on surface samples pins near zero everywhere (bunny, 150 steps: IoU 0.19 with MAPE, 0.97 with L1).
    loss: str = "auto"
    eikonal_weight: float = 0.0
    normalize_extent: float = 0.95
    kmeans_points: int = 200_000


@dataclass
class SlicesTaskConfig:
    """Occupancy from cross-sections (OReX). Levels run coarse to fine; defaults are OReX's released ones."""

    radius_exponents: list = dc_field(default_factory=lambda: [4, 5, 5, 6, 6, 7])  # offset r = 0.5**e
    samples_per_edge: list = dc_field(default_factory=lambda: [2, 2, 3, 3, 4, 5])
    level_weights: list = dc_field(default_factory=lambda: [50, 50, 100, 100, 150, 200])  # share of the run
    window: int = 3
    white_noise: int = 2048
    hull_points: int = 16384
    hull_margin: float = 0.05
    hinge_weight: float = 1e-4
    hinge_alpha: float = 100.0
    refine_iterations: int = 2
    # Multi-label inputs: "each" (one object and mesh per label), "union" (one object), or a list such as "1,4".
    labels: str = "each"
    label: int | None = None  # set on the run of one object: the label it reconstructs
    rois: str = ""  # RTSTRUCT: ROI names to reconstruct, comma-separated (default: every ROI)
    # Label maps (NIfTI, NRRD, DICOM series): which slices become planes. Every `every`-th slice along the
    # acquisition axis from `slice_offset`, or families such as "axial:6,sagittal:6,coronal:6" (oblique: a world
    # normal x/y/z and a count, e.g. "1/0/1:6").
    every: int = 1
    slice_offset: int = 0
    families: str = ""


@dataclass
class MeshConfig:
    """Marching cubes and clean-up of shape tasks."""

    resolution: int = 256
    # Parts smaller than this fraction of the largest part's area are dropped: a hash-grid SDF trained for
    # a few thousand steps can leave small closed "floaters" in empty space (the demo's: 0.5 % and 0.7 %).
    min_component_ratio: float = 0.02
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


def to_dict(cfg: Any) -> dict:
    """Config -> nested dict of TOML-able primitives (``None`` values dropped)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is None:
            continue
        out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else value
    return out


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Nested dict -> config of type ``cls``; unknown keys are a user error (typos must not pass silently)."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise FieldStudioError(
            f"unknown key(s) {sorted(unknown)} in [{where}]; known keys are {sorted(known)}"
        )
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise FieldStudioError(f"[{where}.{name}] must be a table, got {value!r}")
            kwargs[name] = from_dict(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = value
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


def save_toml(cfg: Any, path: str | Path) -> None:
    from fieldstudio.io import atomic_write_text

    atomic_write_text(path, tomli_w.dumps(to_dict(cfg)))


def load_run_config(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FieldStudioError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise FieldStudioError(f"config file {path} is not valid TOML: {err}") from None
    return validate(from_dict(RunConfig, data))


def validate(cfg: RunConfig) -> RunConfig:
    """Check values a user could get wrong; raise FieldStudioError saying which and why."""
    f = cfg.field
    if f.kind not in FIELD_KINDS:
        raise FieldStudioError(f"field kind {f.kind!r} is unknown; choose one of {', '.join(FIELD_KINDS)}")
    if f.params is not None and f.params < 1000:
        raise FieldStudioError(f"parameter budget {f.params} is too small; use at least 1000")
    if not (f.fourier.sigma == "auto" or (isinstance(f.fourier.sigma, (int, float)) and f.fourier.sigma > 0)):
        raise FieldStudioError(f"fourier.sigma must be a positive number or \"auto\", got {f.fourier.sigma!r}")
    if not (isinstance(f.rbf.n_rbf, int) or f.rbf.n_rbf == "auto"):
        raise FieldStudioError(f"rbf.n_rbf must be an integer or \"auto\", got {f.rbf.n_rbf!r}")
    if not 1e-3 <= f.rbf.max_width <= 2.0:
        raise FieldStudioError(f"rbf.max_width {f.rbf.max_width} is out of range; use 0.001..2 (box units)")
    if cfg.train.device not in ("auto", "cpu", "cuda"):
        raise FieldStudioError(f"train.device {cfg.train.device!r} is unknown; use auto, cpu or cuda")
    if cfg.train.steps < 1:
        raise FieldStudioError("steps must be at least 1")
    if cfg.train.time_budget is not None and cfg.train.time_budget <= 0:
        raise FieldStudioError("time budget must be a positive number of seconds")
    if not 8 <= cfg.mesh.resolution <= 2048:
        raise FieldStudioError(
            f"resolution {cfg.mesh.resolution} is out of range; use 8..2048 (256 is a good default)")
    if not 0.0 <= cfg.mesh.min_component_ratio <= 1.0:
        raise FieldStudioError("mesh.min_component_ratio must be between 0 and 1")
    if not 0.0 <= cfg.sdf.uniform_fraction <= 0.5:
        raise FieldStudioError("sdf.uniform_fraction must be between 0 and 0.5")
    sl = cfg.slices
    if not (len(sl.radius_exponents) == len(sl.samples_per_edge) == len(sl.level_weights) >= 1):
        raise FieldStudioError("slices.radius_exponents, samples_per_edge and level_weights must have the same "
                               "length (one entry per level)")
    label_list(sl.labels)
    if sl.every < 1 or not 0 <= sl.slice_offset < sl.every:
        raise FieldStudioError(f"--every {sl.every} --offset {sl.slice_offset} (slices.every, slices.slice_offset): "
                               "need every >= 1 and an offset from 0 to every - 1")
    if cfg.sdf.loss not in ("auto", "mape", "l1"):
        raise FieldStudioError(f"sdf loss {cfg.sdf.loss!r} is unknown; choose auto, mape or l1")
    return cfg
