"""render_mesh.py
==============
Render meshes to a PNG by ray casting (open3d, ``fieldstudio.thumbnails``), to look at results without a
screen.

    python scripts/render_mesh.py MESH [MESH ...] -o out.png [--views 3] [--titles "first" "second" ...]

Each mesh gets a row; each view is a turntable angle around the mesh's up (z) axis. Lambert shading with
a headlight; back faces are tinted red, so inverted normals and open surfaces show.
"""

import argparse
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from fieldstudio.thumbnails import render_meshes


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
        rows.append(np.concatenate([render_meshes([mesh], 360 * i / args.views - 60, args.size)
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
