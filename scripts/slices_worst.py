"""slices_worst.py
===============
Where a cross-section reconstruction is worst, relative to the planes: for the points of the reference surface the
mesh misses most (and of the mesh farthest from the reference), their height between the planes of the largest
parallel stack, in gaps, and their signed distance to the contours of the planes below and above (in gaps,
negative inside). Tells "a cap closed too early" (beyond the end planes), "a part cut short between planes" (inside
the plane below, far outside the plane above) and "a surface no plane sees" (outside both) apart.

    python scripts/slices_worst.py INPUT.csl REFERENCE_MESH RESULT_MESH [--top 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import open3d as o3d
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fieldstudio.data.cross_sections import read_csl  # noqa: E402
from fieldstudio.tasks.slab_prior import parallel_stacks, signed_distance_2d  # noqa: E402


def distance_to(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                        o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csl", type=Path)
    ap.add_argument("reference", type=Path)
    ap.add_argument("result", type=Path)
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args()
    cs = read_csl(args.csl)
    normal, planes = max(parallel_stacks(cs), key=lambda s: len(s[1]))
    heights = np.array([normal @ p.origin for p in planes])
    gap = float(np.median(np.diff(heights))) if len(planes) > 1 else 1.0
    ref = trimesh.load(args.reference, force="mesh")
    result = trimesh.load(args.result, force="mesh")
    diag = float(np.linalg.norm(np.ptp(ref.vertices, axis=0)))
    print(f"{len(planes)} planes along {np.round(normal, 3)}, gap {gap:.4g} = {gap / diag:.4f} of the diagonal")
    for what, source, target in (("missed (reference -> result)", ref, result),
                                 ("extra (result -> reference)", result, ref)):
        points, _ = trimesh.sample.sample_surface(source, 200_000, seed=0)
        d = distance_to(target, points)
        print(f"{what}: max {d.max() / diag:.4f}, p99 {np.quantile(d, 0.99) / diag:.4f} of the diagonal")
        for i in np.argsort(d)[::-1][:args.top]:
            h = float(normal @ points[i])
            k = int(np.searchsorted(heights, h))
            sides = []
            for j in (k - 1, k):
                if 0 <= j < len(planes):
                    sd = signed_distance_2d(planes[j], planes[j].to_2d(points[i:i + 1]))[0]
                    sides.append(f"plane {j + 1}: {sd / gap:+.2f}")
            print(f"  {d[i] / gap:.2f} gaps off, at height {(h - heights[0]) / gap:.2f} gaps above plane 1;"
                  f" contour distance {', '.join(sides) or 'beyond every plane'}")


if __name__ == "__main__":
    main()
