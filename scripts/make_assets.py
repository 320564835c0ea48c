"""make_assets.py
==============
Regenerate the project's own small inputs in ``assets/`` (nothing here comes from outside the project).

- ``trefoil.ply``: a trefoil-knot tube (genus 1, self-winding, thin parts), the demo and CLI-test shape.
  Built as marching cubes of an analytic tube distance, in millimetres (the knot spans about 60 mm) and
  off-centre, so tests can check that outputs come back in the input's frame.
"""

from pathlib import Path

import mcubes
import numpy as np
import trimesh
from scipy.spatial import cKDTree

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def trefoil(resolution: int = 72, tube: float = 0.42) -> trimesh.Trimesh:
    t = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    curve = np.stack([np.sin(t) + 2 * np.sin(2 * t), np.cos(t) - 2 * np.cos(2 * t), -np.sin(3 * t)], axis=1)
    lin = np.linspace(-3.6, 3.6, resolution)
    grid = np.stack(np.meshgrid(lin, lin, lin, indexing="ij"), axis=-1).reshape(-1, 3)
    dist, _ = cKDTree(curve).query(grid)
    sdf = (dist - tube).reshape((resolution,) * 3)
    verts, faces = mcubes.marching_cubes(-sdf, 0.0)
    verts = verts * (lin[1] - lin[0]) + lin[0]
    mesh = trimesh.Trimesh(verts, faces, process=True)
    trimesh.repair.fix_normals(mesh)
    mesh.apply_scale(10.0)                      # millimetres
    mesh.apply_translation([120.0, -40.0, 15.0])  # off-centre world frame
    return mesh


if __name__ == "__main__":
    ASSETS.mkdir(exist_ok=True)
    m = trefoil()
    m.export(ASSETS / "trefoil.ply")
    print(f"trefoil.ply: {len(m.vertices)} vertices, {len(m.faces)} faces, watertight {m.is_watertight}, "
          f"euler {m.euler_number}, extents {m.extents.round(1)}")
