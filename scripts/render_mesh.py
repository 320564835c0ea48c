"""render_mesh.py
==============
Render meshes to a PNG by ray casting (open3d), to look at results without a screen.

    python scripts/render_mesh.py MESH [MESH ...] -o out.png [--views 3] [--titles "first" "second" ...]

Each mesh gets a row; each view is a turntable angle around the mesh's up (z) axis. Lambert shading with
a headlight; back faces are tinted red, so inverted normals and open surfaces show.
"""

import argparse
from pathlib import Path

import numpy as np
import open3d as o3d
import trimesh
from PIL import Image


def render(mesh: trimesh.Trimesh, azimuth_deg: float, size: int = 400, elevation_deg: float = 20.0) -> np.ndarray:
    center = mesh.bounds.mean(axis=0)
    radius = np.linalg.norm(mesh.extents) / 2
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    eye = center + 2.6 * radius * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                        o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        fov_deg=40, center=center.tolist(), eye=eye.tolist(), up=[0, 0, 1], width_px=size, height_px=size)
    hit = scene.cast_rays(rays)
    t = hit["t_hit"].numpy()
    n = hit["primitive_normals"].numpy()
    d = rays.numpy()[..., 3:]
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    cos = -(n * d).sum(-1)
    shade = 0.25 + 0.75 * np.abs(cos)
    img = np.ones((size, size, 3))
    front = np.isfinite(t) & (cos >= 0)
    back = np.isfinite(t) & (cos < 0)
    img[front] = shade[front, None] * np.array([0.75, 0.8, 0.9])
    img[back] = shade[back, None] * np.array([0.9, 0.35, 0.3])
    return (img * 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("meshes", nargs="+", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--size", type=int, default=400)
    ap.add_argument("--up", choices=["x", "y", "z"], default="y", help="the meshes' up axis")
    ap.add_argument("--titles", nargs="+", default=None, help="one caption per mesh, written on its row")
    args = ap.parse_args()
    rows = []
    for path in args.meshes:
        mesh = trimesh.load(path, force="mesh")
        if args.up == "y":  # rotate y-up to z-up for the turntable
            mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
        elif args.up == "x":
            mesh.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [0, 1, 0]))
        rows.append(np.concatenate([render(mesh, 360 * i / args.views - 60, args.size)
                                    for i in range(args.views)], axis=1))
    image = Image.fromarray(np.concatenate(rows, axis=0))
    if args.titles:
        from PIL import ImageDraw

        draw = ImageDraw.Draw(image)
        for i, title in enumerate(args.titles[:len(rows)]):
            draw.text((8, 8 + i * args.size), title, fill=(20, 20, 20))
    image.save(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
