"""thumbnails.py
=============
Small pictures of results without a screen: meshes by ray casting (open3d, no OpenGL), pictures downsized. Used by
batch reports and by ``scripts/render_mesh.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# one colour per object of a multi-label run (the first is the single-object colour)
PALETTE = np.array([[0.75, 0.8, 0.9], [0.9, 0.7, 0.45], [0.55, 0.8, 0.55], [0.85, 0.6, 0.8], [0.6, 0.75, 0.85],
                    [0.9, 0.85, 0.5], [0.7, 0.65, 0.9], [0.95, 0.6, 0.6]])
BACK_FACE = np.array([0.9, 0.35, 0.3])


def render_meshes(meshes, azimuth_deg: float = 30.0, size: int = 400, elevation_deg: float = 20.0,
                  up: str = "z") -> np.ndarray:
    """An (size, size, 3) uint8 picture of trimesh ``meshes`` together, seen from ``azimuth``/``elevation`` around
    the ``up`` axis, Lambert-shaded with a headlight; each mesh has its palette colour and back faces are red, so
    inverted normals and open surfaces show."""
    import open3d as o3d

    meshes = [m for m in meshes if len(m.faces)]
    img = np.ones((size, size, 3))
    if not meshes:
        return (img * 255).astype(np.uint8)
    to_z_up = {"z": np.eye(3), "y": np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]),
               "x": np.array([[0, 0, -1], [0, 1, 0], [1, 0, 0]])}[up]
    scene = o3d.t.geometry.RaycastingScene()
    lo = np.min([m.bounds[0] @ to_z_up.T for m in meshes] + [m.bounds[1] @ to_z_up.T for m in meshes], axis=0)
    hi = np.max([m.bounds[0] @ to_z_up.T for m in meshes] + [m.bounds[1] @ to_z_up.T for m in meshes], axis=0)
    ids = []
    for m in meshes:
        ids.append(scene.add_triangles(o3d.core.Tensor((m.vertices @ to_z_up.T).astype(np.float32)),
                                       o3d.core.Tensor(np.asarray(m.faces, dtype=np.uint32))))
    center, radius = (lo + hi) / 2, max(np.linalg.norm(hi - lo) / 2, 1e-9)
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    eye = center + 2.6 * radius * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        fov_deg=40, center=center.tolist(), eye=eye.tolist(), up=[0, 0, 1], width_px=size, height_px=size)
    hit = scene.cast_rays(rays)
    t, geometry = hit["t_hit"].numpy(), hit["geometry_ids"].numpy()
    d = rays.numpy()[..., 3:]
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    cos = -(hit["primitive_normals"].numpy() * d).sum(-1)
    shade = (0.25 + 0.75 * np.abs(cos))[..., None]
    hits = np.isfinite(t)
    for k, gid in enumerate(ids):
        front = hits & (geometry == gid) & (cos >= 0)
        img[front] = shade[front] * PALETTE[k % len(PALETTE)]
    back = hits & (cos < 0)
    img[back] = shade[back] * BACK_FACE
    return (img * 255).astype(np.uint8)


def picture_thumbnail(path: str | Path, size: int = 160) -> np.ndarray:
    """A picture file shrunk to fit ``size`` x ``size`` (RGB uint8; transparency over white)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGBA")
        im.thumbnail((size, size), Image.LANCZOS)
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, im).convert("RGB"))


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 array as PNG, atomically."""
    from PIL import Image

    from fieldstudio.io import atomic_open

    with atomic_open(path, "wb") as fh:
        Image.fromarray(rgb).save(fh, format="PNG", optimize=True)
    return Path(path)
