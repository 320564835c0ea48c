"""image.py
========
Image fitting (NeuRBF's 2-D task): a field maps a pixel position to its colour, trained with MSE on random pixels.

Frame (``ImageFrame``): positions are the picture's own pixel coordinates, column ``u`` to the right and row ``v``
down, pixel ``(row r, column c)`` covering ``[c, c + 1) x [r, r + 1)`` with its centre at ``(c + 0.5, r + 0.5)``.
The field box maps them with one scale on both axes, the longer side onto [-1, 1], so pixels stay square.
Colours are the stored values over their peak (255, 65535; float pictures as they are), one output per channel.

RBF placement: weighted k-means with NeuRBF's weights, the Sobel gradient magnitude of the picture (L2 over
channels and directions), on a random subset of pixels; pixels with zero gradient are left out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fieldstudio.control import check_cancel, report
from fieldstudio.data.images import Picture, check_fits_memory, error_heatmap, read_image, to_stored, write_image
from fieldstudio.errors import FieldStudioError

NEIGHBOUR_TABLE_BYTES = 512 * 2**20  # above this the RBF neighbours of a batch are queried per step instead
RENDER_CHUNK = 2**16  # pixels per field evaluation while rendering: bounded memory, a cancel within a second


@dataclass
class ImageFrame:
    """Pixel coordinates <-> field box for a ``width`` x ``height`` picture (see the module docstring)."""

    width: int
    height: int
    channels: int = 3
    bits: int = 8

    @property
    def scale(self) -> float:
        return 2.0 / max(self.width, self.height)

    def to_box(self, u: np.ndarray | torch.Tensor, v: np.ndarray | torch.Tensor):
        """Continuous pixel coordinates (u right, v down; a pixel's centre at +0.5) -> (N, 2) box positions."""
        lib = torch if isinstance(u, torch.Tensor) else np
        return lib.stack([(u - self.width / 2) * self.scale, (v - self.height / 2) * self.scale], -1)

    def to_dict(self) -> dict:
        return {"kind": "image", "width": self.width, "height": self.height, "channels": self.channels,
                "bits": self.bits}

    @classmethod
    def from_dict(cls, d: dict) -> "ImageFrame":
        return cls(int(d["width"]), int(d["height"]), int(d.get("channels", 3)), int(d.get("bits", 8)))


def gradient_weights(picture: Picture) -> np.ndarray:
    """(H, W) float32 Sobel gradient magnitude, L2 over channels and both directions (NeuRBF's k-means weights);
    computed one channel at a time in float32, so that a 4k picture needs no float64 copy."""
    from scipy import ndimage

    total = np.zeros((picture.height, picture.width), np.float32)
    for c in range(picture.channels):
        channel = picture.pixels[:, :, c].astype(np.float32) / np.float32(picture.peak)
        for axis in (0, 1):
            g = ndimage.sobel(channel, axis=axis, mode="nearest") / 8.0  # normalised kernel, as kornia's
            total += g * g
    return np.sqrt(total)


class ImageTask:
    """Fit a field to ``picture``. Each step draws ``batch_size`` random pixels (with replacement; seeded per step)."""

    name = "image"

    def __init__(self, picture: Picture, cfg):
        self.cfg = cfg
        self.picture = picture
        self.frame = ImageFrame(picture.width, picture.height, picture.channels, picture.bits)
        self.n_pixels = picture.width * picture.height
        self.neighbours = None  # (H*W, K) int32 table, when it fits NEIGHBOUR_TABLE_BYTES
        self.field = None

    # -------------------------------------------------------------------------------------------- positions
    def positions(self, flat: torch.Tensor, within: torch.Tensor | None = None) -> torch.Tensor:
        """Box positions (N, 2) float32 of the pixels with flat indices ``flat`` (row-major): their centres, or
        the points ``within`` (N, 2) in [0, 1) of each pixel."""
        v = torch.div(flat, self.picture.width, rounding_mode="floor")
        u = flat - v * self.picture.width
        du, dv = (0.5, 0.5) if within is None else (within[:, 0], within[:, 1])
        return self.frame.to_box(u.float() + du, v.float() + dv).float()

    def colours(self, flat: torch.Tensor) -> torch.Tensor:
        """Colours (N, C) float32 of the pixels ``flat``, in [0, 1] for 8- and 16-bit pictures."""
        values = self.picture.pixels.reshape(self.n_pixels, -1)[flat.numpy()]
        return torch.from_numpy(values.astype(np.float32) / np.float32(self.picture.peak))

    # -------------------------------------------------------------------------------------------- training
    def init_field(self, field, seed: int) -> None:
        """Place RBFs by weighted k-means on up to ``kmeans_points`` random pixels, weighted by the gradient."""
        if not field.needs_points:
            return
        weights = gradient_weights(self.picture).reshape(-1)
        check_cancel()
        g = torch.Generator().manual_seed(seed)
        m = min(self.cfg.kmeans_points, self.n_pixels)
        pick = torch.randperm(self.n_pixels, generator=g)[:m]
        n_rbf = field.rbf.n_rbf
        within = None
        if m < 2 * n_rbf:  # a tiny picture (fewer pixels than the smallest budget's RBFs): points inside pixels too
            pick = torch.randint(self.n_pixels, (4 * n_rbf,), generator=g)
            within = torch.rand(len(pick), 2, generator=g)
        w = torch.from_numpy(weights[pick.numpy()])
        keep = w > 0
        if int(keep.sum()) < n_rbf:  # a flat picture: fall back to uniform weights rather than fail
            keep = torch.ones_like(keep)
            w = torch.ones_like(w)
        field.init_from_points(self.positions(pick[keep], None if within is None else within[keep]), w[keep],
                               seed=seed)

    def attach(self, field) -> None:
        """The K nearest RBFs of every pixel, once, when the table fits in ``NEIGHBOUR_TABLE_BYTES``."""
        self.field = field
        self.neighbours = None
        if getattr(field, "rbf", None) is None:
            return
        if self.n_pixels * field.rbf.k * 4 > NEIGHBOUR_TABLE_BYTES:
            return
        table = torch.empty(self.n_pixels, field.rbf.k, dtype=torch.int32)
        for s in range(0, self.n_pixels, 2**20):
            check_cancel()
            flat = torch.arange(s, min(s + 2**20, self.n_pixels))
            table[s:s + len(flat)] = field.neighbours(self.positions(flat)).to(torch.int32)
        self.neighbours = table

    def batch(self, step: int, batch_size: int, generator: torch.Generator, progress: float = 0.0) -> dict:
        flat = torch.randint(self.n_pixels, (batch_size,), generator=generator)
        batch = {"x": self.positions(flat), "rgb": self.colours(flat)}
        if self.neighbours is not None:
            batch["rbf_idx"] = self.neighbours[flat].long()
        elif getattr(self.field, "rbf", None) is not None:
            batch["rbf_idx"] = self.field.neighbours(batch["x"])
        return batch

    def loss(self, field, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        pred = field(batch["x"], batch.get("rbf_idx"))
        mse = torch.mean((pred - batch["rgb"]) ** 2)
        value = mse.item()
        return mse, {"mse": value, "psnr": 10 * math.log10(1.0 / max(value, 1e-20))}


# ------------------------------------------------------------------------------------------------ rendering

def parse_crop(text: str | None, frame: ImageFrame) -> tuple[int, int, int, int]:
    """``"x,y,w,h"`` in input pixels (None: the whole picture), checked against the picture's size."""
    if not text:
        return 0, 0, frame.width, frame.height
    try:
        x, y, w, h = (int(t) for t in str(text).replace(" ", "").split(","))
    except ValueError:
        raise FieldStudioError(f"--crop {text!r}: give x,y,w,h in pixels of the input, e.g. 100,50,256,256") from None
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > frame.width or y + h > frame.height:
        raise FieldStudioError(f"--crop {text}: the box must lie inside the {frame.width} x {frame.height} input "
                               "(x, y >= 0; x + w <= width; y + h <= height)")
    return x, y, w, h


def output_size(crop: tuple[int, int, int, int], scale: float | None = None,
                size: str | tuple[int, int] | None = None) -> tuple[int, int]:
    """(width, height) of a render of ``crop``: ``size`` ("WxH") or the crop's size times ``scale``."""
    if size is not None and scale is not None:
        raise FieldStudioError("give --scale or --size, not both")
    if size is not None:
        if isinstance(size, str):
            try:
                w, h = (int(t) for t in size.lower().split("x"))
            except ValueError:
                raise FieldStudioError(f"--size {size!r}: give WIDTHxHEIGHT in pixels, e.g. 1536x1024") from None
        else:
            w, h = size
    else:
        scale = 1.0 if scale is None else scale
        if not scale > 0:
            raise FieldStudioError(f"--scale must be > 0, got {scale}")
        w, h = max(1, round(crop[2] * scale)), max(1, round(crop[3] * scale))
    if w < 1 or h < 1 or w * h > 2**28:
        raise FieldStudioError(f"a render of {w} x {h} pixels is out of range (1 .. 268 Mpx)")
    return w, h


def sample_coordinates(crop: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Input pixel coordinates (u right, v down) of the centres of a ``size`` (w, h) render of ``crop``
    (x, y, w, h in input pixels): the points :func:`render` samples."""
    x0, y0, cw, ch = crop
    w, h = size
    return x0 + (np.arange(w) + 0.5) * (cw / w), y0 + (np.arange(h) + 0.5) * (ch / h)


def rms_error(recon: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|recon - reference|, RMS over channels: (h, w) float32, the values of an error map."""
    diff = recon - reference
    return np.sqrt(np.mean(diff * diff, axis=-1))


@torch.no_grad()
def render(model, frame: ImageFrame, crop: tuple[int, int, int, int] | None = None,
           size: tuple[int, int] | None = None, progress: bool = False,
           table: torch.Tensor | None = None) -> np.ndarray:
    """The field as a picture: (h, w, C) float32, covering ``crop`` (x, y, w, h in input pixels; default all) at
    ``size`` (w, h; default the crop's size), sampled at the output pixels' centres. With ``progress``, reports
    rows done to the job and honours its cancel. ``table``: the training's RBF neighbours of every input pixel,
    used when rendering the whole picture at its own size (a third of the time goes to neighbour queries)."""
    x0, y0, cw, ch = crop or (0, 0, frame.width, frame.height)
    w, h = size or (cw, ch)
    if table is not None and (x0, y0, cw, ch, w, h) != (0, 0, frame.width, frame.height, frame.width, frame.height):
        table = None
    device = next(model.parameters()).device
    out = np.empty((h, w, model.cfg.out_dim), np.float32)
    us, vs = sample_coordinates((x0, y0, cw, ch), (w, h))
    u = torch.as_tensor(us, dtype=torch.float64)
    rows_per_chunk = max(1, RENDER_CHUNK // w)
    for r0 in range(0, h, rows_per_chunk):
        r1 = min(h, r0 + rows_per_chunk)
        vv, uu = torch.meshgrid(torch.as_tensor(vs[r0:r1], dtype=torch.float64), u, indexing="ij")
        x = frame.to_box(uu.reshape(-1), vv.reshape(-1)).float().to(device)
        idx = None if table is None else table[r0 * w:r1 * w].long().to(device)
        out[r0:r1] = model(x, idx).reshape(r1 - r0, w, -1).cpu().numpy()
        if progress:
            check_cancel()
            report(r1, h)
    return out


# ------------------------------------------------------------------------------------------------ the task's end

def reconstruction_name(bits: int) -> str:
    return "reconstruction.exr" if bits == 32 else "reconstruction.png"


def finish(cfg, model, prepared, run_dir: Path) -> tuple[dict, dict]:
    """After training: render the whole picture, score it (PSNR, SSIM, on [0, 1]; float pictures on their peak),
    write the reconstruction in the input's bit depth and an error heat map. Returns (metrics, files)."""
    from fieldstudio.control import current
    from fieldstudio.metrics import image_metrics

    task, frame = prepared.task, prepared.frame
    control = current()
    if control is not None:
        control.enter("render")
    t0 = time.perf_counter()
    recon = render(model, frame, progress=True, table=task.neighbours)
    t_render = time.perf_counter() - t0
    if control is not None:
        control.enter("score")
    metrics = image_metrics(recon, task.picture.pixels, task.picture.peak)
    files = {"reconstruction": write_image(run_dir / reconstruction_name(frame.bits), to_stored(recon, frame.bits))}
    heat, scale = error_heatmap(_error_map(recon, task.picture))
    files["error_map"] = write_image(run_dir / "error.png", heat)
    metrics.update({"render_seconds": round(t_render, 2), "error_map_scale": scale,
                    "score_seconds": round(time.perf_counter() - t0 - t_render, 2)})
    return metrics, files


def _error_map(recon: np.ndarray, picture: Picture, rows: slice = slice(None)) -> np.ndarray:
    """(h, w) RMS over channels of the error, in [0, 1] units, row block by row block (bounded memory)."""
    out = np.empty(recon.shape[:2], np.float32)
    step = max(1, 2**22 // max(1, recon.shape[1] * recon.shape[2]))
    for r in range(0, recon.shape[0], step):
        out[r:r + step] = rms_error(recon[r:r + step], picture.as_float(slice(r, r + step)))
    return out


def render_run(run_dir: str | Path, out_path: str | Path, scale: float | None = None, size: str | None = None,
               crop: str | None = None, error: bool = False, bits: int | None = None) -> dict:
    """``fieldstudio render`` for an image run: the reconstruction of ``crop`` at ``scale`` or ``size`` into
    ``out_path`` (bit depth of the input unless ``bits``), and with ``error`` an error heat map beside it
    (``<stem>_error.png``, only at the input's own resolution). Returns what was written."""
    from fieldstudio.control import current
    from fieldstudio.run import load_run

    cfg, model, frame = load_run(run_dir)
    if cfg.task != "image":
        raise FieldStudioError(f"{run_dir} is a {cfg.task} run; render draws image runs (use fieldstudio mesh "
                               "for shapes)")
    box = parse_crop(crop, frame)
    w, h = output_size(box, scale, size)
    bits = frame.bits if bits is None else bits
    if bits not in (8, 16, 32):
        raise FieldStudioError(f"--bits must be 8, 16 or 32 (float), got {bits}")
    out_path = Path(out_path)
    if error and (w, h) != (box[2], box[3]):
        raise FieldStudioError("--error compares with the input pixel for pixel: leave --scale and --size out")
    check_fits_memory(out_path.name, w, h, frame.channels)
    control = current()
    if control is not None:
        control.enter("render")
    recon = render(model, frame, box, (w, h), progress=True)
    written = {"image": write_image(out_path, to_stored(recon, bits)), "width": w, "height": h}
    if error:
        picture = read_image(cfg.input, cfg.image.frame) if Path(cfg.input).exists() else None
        if picture is None:
            raise FieldStudioError(f"--error needs the input {cfg.input}, which is no longer there; the "
                                   f"reconstruction is written to {out_path}")
        x, y, cw, ch = box
        part = Picture(picture.pixels[y:y + ch, x:x + cw], picture.bits, picture.name)
        err = _error_map(recon, part)
        heat, err_scale = error_heatmap(err)
        written["error_map"] = write_image(out_path.with_name(out_path.stem + "_error.png"), heat)
        written["error_map_scale"] = err_scale
        mse = float(np.mean(err.astype(np.float64) ** 2))  # the map is the RMS over channels: its square's mean
        written["psnr"] = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    return written


# ------------------------------------------------------------------------------------------------ registry glue

MIN_PARAMS, MAX_PARAMS = 20_000, 2_000_000
PARAMS_SHARE = 0.1  # default budget: 10 % of the picture's values (the benchmark's protocol), within the bounds


def default_params(path) -> int:
    """10 % of the picture's values (W x H x C), at least 20,000 (the decoder alone has 7,000) and at most 2,000,000."""
    p = read_image(path)
    return int(min(MAX_PARAMS, max(MIN_PARAMS, PARAMS_SHARE * p.width * p.height * p.channels)))


def field_shape(path) -> tuple[int, int]:
    return 2, read_image(path).channels


def tune_field(field_cfg, path) -> None:
    """Picture-dependent sizes of the preset: the hybrid's fine dense level (max(H, W) / 2 cells as NeuRBF, fewer
    when that would take more than 30 % of the budget: NeuRBF's 256^2 model puts 26 % in its grid); the grid-only
    field's finest level at the picture's resolution; the Fourier MLP's bandwidth from the picture's size."""
    p = read_image(path)
    side = max(p.width, p.height)
    if field_cfg.kind == "hybrid":
        g = field_cfg.grid
        fit = int(math.sqrt(0.3 * (field_cfg.params or 10**9) / g.n_features)) - 1
        g.max_resolution = max(g.base_resolution + 1, min(side // 2, fit))
    elif field_cfg.kind == "grid":
        field_cfg.grid.max_resolution = max(field_cfg.grid.base_resolution + 1, side)
    elif field_cfg.kind == "mlp":
        field_cfg.fourier.sigma = side / 64.0  # cycles per box unit (the long side spans 2 units)


def build(cfg):
    """The task for ``cfg.input``; the field's shape must be the picture's (2-D positions, one output per channel)."""
    from fieldstudio.tasks.spec import Prepared

    picture = read_image(cfg.input, cfg.image.frame)
    if cfg.field.dim != 2 or cfg.field.out_dim != picture.channels:
        raise FieldStudioError(f"{picture.name} has {picture.channels} channel(s) but the field has dim "
                               f"{cfg.field.dim} and out_dim {cfg.field.out_dim}; set [field] dim = 2 and out_dim = "
                               f"{picture.channels} in the config (or leave the [field] table out)")
    task = ImageTask(picture, cfg.image)
    return Prepared(task, task.frame, report=picture.report())


def finish_points(cfg, prepared) -> int:
    return prepared.task.n_pixels
