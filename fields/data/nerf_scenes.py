"""nerf_scenes.py
==============
Posed image sets (NeRF scenes): Blender / NeRF-synthetic folders (``transforms_{train,val,test}.json``) and
nerfstudio / instant-ngp folders (one ``transforms.json``), read into cameras with their intrinsics, checked before
any training, and turned into rays.

Conventions: camera-to-world matrices as the files give them (OpenGL: x right, y up, the camera looks along -z);
world units as the files'. Rays go through **pixel centres**: pixel (row r, column c) looks through image point
(c + 0.5, r + 0.5), as Blender renders sample them (the original NeRF code's ``i - W/2`` is half a pixel off).
Intrinsics: ``camera_angle_x`` (and optionally ``camera_angle_y``), or ``fl_x``/``fl_y``/``cx``/``cy``/``w``/``h``
at the top level or per frame. ``file_path`` may leave out the extension. RGBA pictures are composited on a
background colour (white by default) when loaded.

Bad scenes get one line each, before anything is decoded: a folder or json that is not a scene, an empty frames
list, missing picture files, NaN or non-rigid poses, mixed picture sizes without per-frame intrinsics.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fieldstudio.errors import FieldStudioError

SPLITS = ("train", "val", "test")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".webp", ".bmp")
RIGID_TOLERANCE = 1e-3  # |R^T R - I| and |det R - 1| above this: a pose with scale or shear


@dataclass
class Camera:
    """One posed picture. ``c2w``: (4, 4) camera to world (OpenGL axes); intrinsics in pixels of the picture as
    stored (before any downscale)."""

    name: str
    path: Path
    c2w: np.ndarray
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def scaled(self, factor: int) -> "Camera":
        """The camera of the picture area-averaged by ``factor`` (its size floored to whole blocks)."""
        return Camera(self.name, self.path, self.c2w, self.width // factor, self.height // factor,
                      self.fx / factor, self.fy / factor, self.cx / factor, self.cy / factor)


@dataclass
class Scene:
    folder: Path
    format: str  # "blender" | "nerfstudio"
    splits: dict[str, list[Camera]]
    notes: list = field(default_factory=list)
    aabb: tuple | None = None  # (centre, half) from instant-ngp's aabb_scale, when the json gives one

    def box(self, margin: float = 1.0) -> tuple[np.ndarray, float]:
        """(centre (3,), half-size) of the scene: instant-ngp's ``aabb_scale`` box when the json has one, else the
        region every training camera sees: centred on the point nearest to all optical axes, half-size the nearest
        camera's distance times the sine of half the narrowest field of view (what fills the pictures), times
        ``margin``."""
        if self.aabb is not None:
            return np.asarray(self.aabb[0], dtype=np.float64), float(self.aabb[1])
        cams = self.splits["train"]
        origins = np.array([c.c2w[:3, 3] for c in cams])
        axes = np.array([-c.c2w[:3, 2] for c in cams])
        axes /= np.linalg.norm(axes, axis=1, keepdims=True)
        # least squares: sum over cameras of (I - a a^T)(p - o) = 0
        a = np.zeros((3, 3))
        b = np.zeros(3)
        for o, d in zip(origins, axes):
            m = np.eye(3) - np.outer(d, d)
            a += m
            b += m @ o
        centre = np.linalg.lstsq(a, b, rcond=None)[0]
        half_fov = min(min(math.atan(0.5 * c.width / c.fx), math.atan(0.5 * c.height / c.fy)) for c in cams)
        distance = float(np.linalg.norm(origins - centre, axis=1).min())
        return centre, margin * distance * math.sin(half_fov)


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise FieldStudioError(f"cannot read {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise FieldStudioError(f"{path.name} is not valid JSON (line {err.lineno}: {err.msg}); is the file complete?") \
            from None
    if not isinstance(data, dict) or "frames" not in data:
        raise FieldStudioError(f"{path.name} is not a NeRF scene: it has no 'frames' list (a scene's json holds "
                               "camera_angle_x or fl_x/fl_y, and frames with file_path and transform_matrix)")
    return data


def _find_picture(folder: Path, file_path: str) -> Path | None:
    path = (folder / file_path).resolve()
    if path.suffix.lower() in PICTURE_SUFFIXES:
        return path if path.is_file() else None
    for suffix in PICTURE_SUFFIXES:
        candidate = path.with_name(path.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def _picture_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.width, im.height
    except Exception:
        from fieldstudio.data.images import read_image

        p = read_image(path)
        return p.width, p.height


def _pose(frame: dict, where: str) -> np.ndarray:
    m = frame.get("transform_matrix")
    try:
        c2w = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):
        c2w = np.zeros(0)
    if c2w.shape == (3, 4):
        c2w = np.vstack([c2w, [0, 0, 0, 1]])
    if c2w.shape != (4, 4):
        raise FieldStudioError(f"{where}: transform_matrix must be a 4 x 4 (or 3 x 4) camera-to-world matrix, got "
                               f"{np.shape(m) if m is not None else 'none'}")
    if not np.isfinite(c2w).all():
        raise FieldStudioError(f"{where}: transform_matrix has NaN or infinite entries; fix or drop this frame")
    r = c2w[:3, :3]
    if (np.abs(r.T @ r - np.eye(3)).max() > RIGID_TOLERANCE or abs(np.linalg.det(r) - 1) > RIGID_TOLERANCE
            or np.abs(c2w[3] - [0, 0, 0, 1]).max() > RIGID_TOLERANCE):
        raise FieldStudioError(f"{where}: transform_matrix is not a rigid pose (its rotation part has scale, shear "
                               "or a reflection); give camera-to-world rotations and translations only")
    return c2w


def _intrinsics(meta: dict, frame: dict, width: int, height: int, where: str) -> tuple[float, float, float, float]:
    def get(key):
        return frame.get(key, meta.get(key))

    if get("fl_x") is not None:
        fx = float(get("fl_x"))
        fy = float(get("fl_y") if get("fl_y") is not None else fx)
    elif get("camera_angle_x") is not None:
        fx = 0.5 * width / math.tan(0.5 * float(get("camera_angle_x")))
        fy = 0.5 * height / math.tan(0.5 * float(get("camera_angle_y"))) if get("camera_angle_y") is not None \
            else fx
    else:
        raise FieldStudioError(f"{where}: no focal length (camera_angle_x, or fl_x/fl_y)")
    cx = float(get("cx")) if get("cx") is not None else width / 2
    cy = float(get("cy")) if get("cy") is not None else height / 2
    if not (fx > 0 and fy > 0 and math.isfinite(fx + fy + cx + cy)):
        raise FieldStudioError(f"{where}: focal lengths must be positive numbers, got fx={fx}, fy={fy}")
    return fx, fy, cx, cy


def _cameras(folder: Path, json_path: Path, meta: dict, notes: list | None = None) -> list[Camera]:
    """The cameras of one json. Missing pictures are an error, unless ``notes`` is given (held-out splits, often
    shipped thinned out): then their frames are skipped and a note says how many."""
    frames = meta["frames"]
    if not isinstance(frames, list) or not frames:
        raise FieldStudioError(f"{json_path.name} lists no frames; a scene needs posed pictures")
    missing, cams, sizes = [], [], set()
    per_frame = any(k in f for f in frames for k in ("w", "h", "fl_x", "camera_angle_x"))
    for i, frame in enumerate(frames):
        where = f"{json_path.name} frame {i}"
        if not isinstance(frame, dict) or "file_path" not in frame:
            raise FieldStudioError(f"{where} has no file_path")
        c2w = _pose(frame, where)
        path = _find_picture(folder, str(frame["file_path"]))
        if path is None:
            missing.append(str(frame["file_path"]))
            continue
        w = frame.get("w", meta.get("w"))
        h = frame.get("h", meta.get("h"))
        if w is None or h is None:
            w, h = _picture_size(path)
        sizes.add((int(w), int(h)))
        fx, fy, cx, cy = _intrinsics(meta, frame, int(w), int(h), where)
        cams.append(Camera(Path(str(frame["file_path"])).name, path, c2w, int(w), int(h), fx, fy, cx, cy))
    if missing and notes is not None:
        notes.append(f"{json_path.name}: {len(missing)} of {len(frames)} pictures are missing and skipped (the "
                     f"first: {missing[0]})")
    elif missing:
        raise FieldStudioError(f"{json_path.name}: {len(missing)} of {len(frames)} pictures are missing (the first: "
                               f"{missing[0]}, looked for in {folder}); copy them there or drop their frames")
    if len(sizes) > 1 and not per_frame:
        raise FieldStudioError(f"{json_path.name}: the pictures have {len(sizes)} different sizes "
                               f"({', '.join(f'{w}x{h}' for w, h in sorted(sizes)[:3])}...) but one set of "
                               "intrinsics; give w, h and fl_x/fl_y per frame, or resize the pictures")
    return cams


def _aabb(meta: dict) -> tuple | None:
    """instant-ngp's scene box: its unit cube holds ``json position * scale + offset`` (defaults 0.33 and 0.5 per
    axis), grown ``aabb_scale`` times about its centre; in the json's own frame."""
    if "aabb_scale" not in meta:
        return None
    try:
        k = float(meta["aabb_scale"])
        scale = float(meta.get("scale", 0.33))
        offset = np.broadcast_to(np.asarray(meta.get("offset", 0.5), dtype=np.float64), (3,))
    except (TypeError, ValueError):
        raise FieldStudioError("aabb_scale, scale and offset must be numbers (offset: one or three)") from None
    if not (k > 0 and scale > 0):
        raise FieldStudioError(f"aabb_scale ({k}) and scale ({scale}) must be > 0")
    return tuple((0.5 - offset) / scale), 0.5 * k / scale


def is_scene(path: str | Path) -> bool:
    """A folder holding transforms_train.json or transforms.json (or such a json file itself)."""
    path = Path(path)
    if path.is_file():
        return path.name.startswith("transforms") and path.suffix == ".json"
    return (path / "transforms_train.json").is_file() or (path / "transforms.json").is_file()


def read_scene(path: str | Path) -> Scene:
    """The cameras of a scene folder (or its transforms json); pictures are checked to exist, not decoded."""
    path = Path(path)
    if not path.exists():
        raise FieldStudioError(f"scene not found: {path}")
    folder = path.parent if path.is_file() else path
    if (folder / "transforms_train.json").is_file():
        splits, notes = {}, []
        for split in SPLITS:
            json_path = folder / f"transforms_{split}.json"
            if json_path.is_file():
                meta = _load_json(json_path)
                cams = _cameras(folder, json_path, meta, None if split == "train" else notes)
                if split == "train":
                    aabb = _aabb(meta)
                if cams:
                    splits[split] = cams
        return Scene(folder, "blender", splits, notes, aabb)
    if (folder / "transforms.json").is_file():
        json_path = folder / "transforms.json"
        meta = _load_json(json_path)
        cams = _cameras(folder, json_path, meta)
        # nerfstudio keeps every picture in one list: hold out every 8th for testing (as NeRF's LLFF protocol)
        test = cams[::8] if len(cams) >= 8 else []
        train = [c for i, c in enumerate(cams) if len(cams) < 8 or i % 8]
        notes = [f"one transforms.json: every 8th of its {len(cams)} pictures is held out for testing"] if test else []
        return Scene(folder, "nerfstudio", {"train": train, "test": test}, notes, _aabb(meta))
    raise FieldStudioError(f"{path} is not a NeRF scene: no transforms_train.json or transforms.json there")


def load_picture(cam: Camera, downscale: int = 1,
                 background: tuple[float, float, float] | None = (1.0, 1.0, 1.0)) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] of ``cam``'s picture, area-averaged by ``downscale`` (sizes floored to whole
    blocks) and RGBA composited on ``background`` (after averaging, with premultiplied colours). With
    ``background=None``: (H, W, 4), premultiplied RGB and alpha (1 for pictures without alpha), for training on
    random backgrounds."""
    from fieldstudio.data.images import read_image

    if downscale < 1:
        raise FieldStudioError(f"--downscale must be >= 1, got {downscale}")
    p = read_image(cam.path)
    values = p.as_float()
    if values.shape[2] in (1, 2):  # grey (+ alpha) -> RGB (+ alpha)
        values = np.concatenate([np.repeat(values[:, :, :1], 3, 2), values[:, :, 1:]], 2)
    rgb = values[:, :, :3]
    alpha = values[:, :, 3:4] if values.shape[2] == 4 else np.ones_like(values[:, :, :1])
    rgb = rgb * alpha
    f = downscale
    h, w = (p.height // f) * f, (p.width // f) * f
    if f > 1:
        rgb = rgb[:h, :w].reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3))
        alpha = alpha[:h, :w].reshape(h // f, f, w // f, f, 1).mean(axis=(1, 3))
    if background is None:
        return np.concatenate([rgb, alpha], 2).astype(np.float32)
    return (rgb + (1.0 - alpha) * np.asarray(background, np.float32)).astype(np.float32)


def load_pictures(cameras: list[Camera], downscale: int = 1,
                  background: tuple[float, float, float] | None = (1.0, 1.0, 1.0)) -> np.ndarray:
    """(N, H, W, 3) (or 4 with ``background=None``) pictures of ``cameras`` of one size, as :func:`load_picture`."""
    return np.stack([load_picture(cam, downscale, background) for cam in cameras])


def camera_rays(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """(H*W, 3) origins and unit directions of the rays through every pixel centre, row-major (row 0 on top)."""
    v, u = np.mgrid[0:cam.height, 0:cam.width].astype(np.float64) + 0.5
    d_cam = np.stack([(u - cam.cx) / cam.fx, -(v - cam.cy) / cam.fy, -np.ones_like(u)], -1).reshape(-1, 3)
    d = d_cam @ cam.c2w[:3, :3].T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    o = np.broadcast_to(cam.c2w[:3, 3], d.shape).copy()
    return o, d
