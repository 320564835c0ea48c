"""nerf_synth.py
=============
A small synthetic NeRF scene rendered here with numpy (no shipped data): two spheres and a box, opaque, with flat
view-independent colours times a fixed Lambert factor, on a transparent background, written as a Blender /
NeRF-synthetic folder (``transforms_{train,test}.json``, ``train/r_i.png``) or a nerfstudio folder (one
``transforms.json``, ``images/frame_00001.png``...).

Conventions as Blender's: camera-to-world matrices, OpenGL camera axes (x right, y up, looking along -z), world up
+z; pixel (row r, col c) covers [c, c+1) x [r, r+1), its ray goes through image point (c + 0.5, r + 0.5). Pixels
are area averages of ``supersample`` x ``supersample`` sub-pixel rays (premultiplied colour and alpha).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

CAMERA_ANGLE_X = 0.7  # horizontal field of view, radians
RADIUS = 3.0  # cameras' distance to the origin
TEST_ELEVATION = math.radians(20.0)
LIGHT = np.array([0.4, -0.3, 0.866]) / np.linalg.norm([0.4, -0.3, 0.866])  # fixed world light direction

# (centre, radius, colour)
SPHERES = [
    (np.array([0.35, 0.0, 0.0]), 0.35, np.array([0.9, 0.1, 0.1])),
    (np.array([-0.35, 0.2, 0.1]), 0.3, np.array([0.1, 0.8, 0.2])),
]
# (centre, half sizes, colour)
BOXES = [
    (np.array([0.0, -0.3, -0.25]), np.array([0.3, 0.15, 0.2]), np.array([0.15, 0.25, 0.9])),
]


def trace(origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rgb (N, 3), alpha (N,)) of rays (N, 3): the nearest primitive hit in front of the origin, shaded by
    0.6 + 0.4 max(0, n.L); rgb 0 and alpha 0 where nothing is hit."""
    o = np.asarray(origins, np.float64)
    d = np.asarray(directions, np.float64)
    n = len(o)
    best = np.full(n, np.inf)
    normal = np.zeros((n, 3))
    colour = np.zeros((n, 3))
    aa = np.einsum("ij,ij->i", d, d)
    for centre, radius, rgb in SPHERES:
        oc = o - centre
        b = np.einsum("ij,ij->i", oc, d)
        c = np.einsum("ij,ij->i", oc, oc) - radius * radius
        disc = b * b - aa * c
        root = np.sqrt(np.maximum(disc, 0.0))
        t_near, t_far = (-b - root) / aa, (-b + root) / aa
        t = np.where(t_near > 0, t_near, t_far)
        win = (disc >= 0) & (t > 0) & (t < best)
        best[win] = t[win]
        normal[win] = (o[win] + t[win, None] * d[win] - centre) / radius
        colour[win] = rgb
    safe = np.where(np.abs(d) < 1e-12, np.where(d < 0, -1e-12, 1e-12), d)
    for centre, half, rgb in BOXES:
        t1 = (centre - half - o) / safe
        t2 = (centre + half - o) / safe
        lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
        t_near, t_far = lo.max(1), hi.min(1)
        t = np.where(t_near > 0, t_near, t_far)
        win = (t_near <= t_far) & (t > 0) & (t < best)
        best[win] = t[win]
        axis = lo.argmax(1)[win]
        nrm = np.zeros((int(win.sum()), 3))
        nrm[np.arange(len(axis)), axis] = -np.sign(safe[win, axis])
        normal[win] = nrm
        colour[win] = rgb
    hit = np.isfinite(best)
    shade = 0.6 + 0.4 * np.maximum(normal @ LIGHT, 0.0)
    return colour * (shade * hit)[:, None], hit.astype(np.float64)


def look_at(eye: np.ndarray) -> np.ndarray:
    """Camera-to-world (4, 4) of a camera at ``eye`` looking at the origin, world up +z (OpenGL camera axes)."""
    back = eye / np.linalg.norm(eye)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(back, right), back, eye
    return m


def cameras(n_train: int, n_test: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(train, test) camera-to-world matrices: train on a golden spiral over the sphere above z = -0.5 R, test on a
    ring at 20 degrees elevation, azimuths turned by ``seed`` (the same seed gives the same cameras)."""
    turn = np.random.default_rng(seed).uniform(0, 2 * math.pi)
    golden = math.pi * (3 - math.sqrt(5))
    train = []
    for i in range(n_train):
        z = 1 - 1.5 * (i + 0.5) / n_train  # cos of the polar angle, from near +1 down to -0.5
        a = turn + golden * i
        s = math.sqrt(1 - z * z)
        train.append(look_at(RADIUS * np.array([s * math.cos(a), s * math.sin(a), z])))
    test = []
    for i in range(n_test):
        a = turn + 2 * math.pi * (i + 0.25) / max(n_test, 1) + 0.1
        e = TEST_ELEVATION
        test.append(look_at(RADIUS * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])))
    return train, test


def render(c2w: np.ndarray, size: int, supersample: int = 4) -> np.ndarray:
    """(size, size, 4) float RGBA (straight, not premultiplied) of the camera ``c2w``, area-averaged."""
    s = supersample
    f = 0.5 * size / math.tan(0.5 * CAMERA_ANGLE_X)
    sub = (np.arange(size * s) + 0.5) / s  # sub-pixel centres, continuous image coordinates
    v, u = np.meshgrid(sub, sub, indexing="ij")
    d = np.stack([(u - size / 2) / f, -(v - size / 2) / f, -np.ones_like(u)], -1).reshape(-1, 3) @ c2w[:3, :3].T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    rgb, alpha = trace(np.broadcast_to(c2w[:3, 3], d.shape), d)
    pre = np.concatenate([rgb * alpha[:, None], alpha[:, None]], 1)
    pre = pre.reshape(size, s, size, s, 4).mean(axis=(1, 3))
    a = pre[..., 3:]
    return np.concatenate([np.where(a > 0, pre[..., :3] / np.maximum(a, 1e-12), 0.0), a], -1)


def _write_png(path: Path, rgba: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.round(rgba * 255), 0, 255).astype(np.uint8), "RGBA").save(path)


def make_scene(folder, n_train=30, n_test=6, size=32, fmt="blender", seed=0, supersample=4) -> Path:
    """Writes the scene into folder and returns folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train, test = cameras(n_train, n_test, seed)
    if fmt == "blender":
        for split, poses in (("train", train), ("test", test)):
            frames = []
            for i, c2w in enumerate(poses):
                _write_png(folder / split / f"r_{i}.png", render(c2w, size, supersample))
                frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w.tolist()})
            meta = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
            (folder / f"transforms_{split}.json").write_text(json.dumps(meta, indent=1))
    elif fmt == "nerfstudio":
        f = 0.5 * size / math.tan(0.5 * CAMERA_ANGLE_X)
        frames = []
        for i, c2w in enumerate(train + test, start=1):
            name = f"images/frame_{i:05d}.png"
            _write_png(folder / name, render(c2w, size, supersample))
            frames.append({"file_path": name, "transform_matrix": c2w.tolist()})
        meta = {"camera_model": "OPENCV", "fl_x": f, "fl_y": f, "cx": size / 2, "cy": size / 2, "w": size,
                "h": size, "frames": frames}
        (folder / "transforms.json").write_text(json.dumps(meta, indent=1))
    else:
        raise ValueError(f"fmt must be 'blender' or 'nerfstudio', got {fmt!r}")
    return folder
