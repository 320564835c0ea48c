"""slicing.py
==========
Cut a triangle mesh with planes and return its cross-sections (closed loops), as OReX's inputs are made.

Frame: the mesh's own coordinates; the loops are in the same frame. Layouts:

- ``parallel``: ``n_planes`` planes perpendicular to ``axis``, evenly spaced over the mesh's extent along it
  shrunk by ``margin`` (a fraction of the extent) at each end;
- ``orthogonal``: three such families (x, y, z) of about ``n_planes / 3`` planes each (the family of ``axis``
  gets the first extra plane, then the next axis);
- ``random``: normals uniform on the sphere and offsets uniform over the mesh's extent along each normal
  (shrunk by ``margin`` likewise), from ``numpy.random.default_rng(seed)``.

Planes that miss the mesh are dropped (a non-convex mesh can miss a random plane), so fewer planes may come
back; the notes say how many. Every loop gets label 1.
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from fieldstudio.data.cross_sections import CrossSections, Plane, Polygon, orient_loops, signed_area_2d, to_2d, validate
from fieldstudio.errors import FieldStudioError

__all__ = ["slice_mesh", "plane_layout", "chain_segments", "LAYOUTS"]

LAYOUTS = ("parallel", "orthogonal", "random")
_AXES = {"x": 0, "y": 1, "z": 2}


def _even_offsets(lo: float, hi: float, count: int, margin: float) -> np.ndarray:
    length = hi - lo
    if count == 1:
        return np.array([(lo + hi) / 2])
    return np.linspace(lo + margin * length, hi - margin * length, count)


def plane_layout(vertices: np.ndarray, n_planes: int, layout: str, axis: str = "z", seed: int = 0,
                 margin: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Plane normals ``(k, 3)`` and offsets ``(k,)`` (plane: ``normal . x = offset``) for a point set."""
    if layout not in LAYOUTS:
        raise FieldStudioError(f"unknown plane layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if str(axis).lower() not in _AXES:
        raise FieldStudioError(f"unknown axis {axis!r}; use x, y or z")
    if n_planes < 1:
        raise FieldStudioError(f"the number of planes must be at least 1 (got {n_planes})")
    if not 0 <= margin < 0.5:
        raise FieldStudioError(f"the margin is a fraction of the extent in [0, 0.5) (got {margin})")
    first = _AXES[str(axis).lower()]
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    if layout == "parallel":
        normals = np.tile(np.eye(3)[first], (n_planes, 1))
        return normals, _even_offsets(lo[first], hi[first], n_planes, margin)
    if layout == "orthogonal":
        counts = [n_planes // 3] * 3
        for k in range(n_planes % 3):
            counts[(first + k) % 3] += 1
        normals = np.concatenate([np.tile(np.eye(3)[a], (c, 1)) for a, c in enumerate(counts)])
        offsets = np.concatenate([_even_offsets(lo[a], hi[a], c, margin) for a, c in enumerate(counts) if c])
        return normals, offsets
    rng = np.random.default_rng(seed)
    normals = rng.normal(size=(n_planes, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    t = rng.uniform(size=n_planes)
    proj = vertices @ normals.T
    plo, phi = proj.min(axis=0), proj.max(axis=0)
    return normals, plo + (margin + t * (1 - 2 * margin)) * (phi - plo)


def chain_segments(segments: np.ndarray, tol: float) -> tuple[list[np.ndarray], int]:
    """Chain a soup of segments ``(m, 2, 3)`` into closed loops.

    Endpoints within ``tol`` are merged (clusters, so chains of near points merge too), zero-length and
    repeated segments are dropped, and every closed walk becomes a loop ``(n, 3)``. Returns the loops and the
    number of open chains (dropped).
    """
    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2, 3)
    if len(seg) == 0:
        return [], 0
    ends = seg.reshape(-1, 3)
    pairs = cKDTree(ends).query_pairs(tol, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(ends), len(ends)))
    n_nodes, node_of = connected_components(graph, directed=False)
    coords = np.zeros((n_nodes, 3))
    np.add.at(coords, node_of, ends)
    coords /= np.bincount(node_of, minlength=n_nodes)[:, None]
    edges = node_of.reshape(-1, 2)
    edges = edges[edges[:, 0] != edges[:, 1]]
    edges = np.unique(np.sort(edges, axis=1), axis=0)

    adjacent: list[list[int]] = [[] for _ in range(n_nodes)]
    for k, (a, b) in enumerate(edges.tolist()):
        adjacent[a].append(k)
        adjacent[b].append(k)
    used = np.zeros(len(edges), dtype=bool)

    def walk(start: int, edge: int) -> tuple[list[int], bool]:
        path, node = [start], start
        while True:
            used[edge] = True
            a, b = edges[edge]
            node = int(b if a == node else a)
            if node == start:
                return path, True
            path.append(node)
            edge = next((k for k in adjacent[node] if not used[k]), -1)
            if edge < 0:
                return path, False

    loops, n_open = [], 0
    degree = np.array([len(a) for a in adjacent])
    # open chains first, from their loose ends, so that they cannot swallow a closed loop
    starts = list(np.nonzero(degree % 2 == 1)[0]) + list(range(n_nodes))
    for start in starts:
        for edge in adjacent[start]:
            if used[edge]:
                continue
            path, closed = walk(int(start), edge)
            if closed and len(path) >= 3:
                loops.append(coords[path])
            else:
                n_open += 1
    return loops, n_open


def slice_mesh(mesh: trimesh.Trimesh, n_planes: int, layout: str = "parallel", axis: str = "z", seed: int = 0,
               margin: float = 0.03) -> CrossSections:
    """Cut ``mesh`` with ``n_planes`` planes laid out as ``layout``; validated ``CrossSections`` (label 1).

    Outer loops come back counter-clockwise and holes clockwise (w.r.t. each plane's basis). A plane that
    passes within 1e-7 of the extent of a mesh vertex is moved by 1e-6 of the extent along its normal, so the
    cut never runs through vertices or along edges. Raises FieldStudioError if fewer than two planes hit.
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    extent = float(np.ptp(vertices, axis=0).max())
    if extent <= 0:
        raise FieldStudioError("the mesh has zero extent; nothing to slice")
    normals, offsets = plane_layout(vertices, n_planes, layout, axis, seed, margin)
    planes, missed, moved, n_open, tiny = [], [], 0, 0, 0
    for k, (normal, offset) in enumerate(zip(normals, offsets), 1):
        dist = vertices @ normal - offset
        for step in (1, -2, 3, -4, 5):  # alternate sides until no vertex lies (nearly) on the plane
            if np.abs(dist).min() > 1e-7 * extent:
                break
            offset += step * 1e-6 * extent
            dist = vertices @ normal - offset
            moved += step == 1
        segments = trimesh.intersections.mesh_plane(mesh, normal, normal * offset)
        loops, opened = chain_segments(segments, 1e-8 * extent)
        n_open += opened
        plane = Plane.through(normal, [], offset=-offset, id=k)
        keep = []
        for pts in loops:
            if abs(signed_area_2d(to_2d(plane, pts))) > 1e-12 * extent * extent:
                keep.append(Polygon(pts, label=1))
            else:
                tiny += 1
        if not keep:
            missed.append(k)
            continue
        planes.append(Plane.through(normal, keep, offset=-offset, id=k))
    notes = []
    if missed:
        notes.append(f"dropped {len(missed)} of {len(normals)} planes that miss the mesh (plane "
                     f"{', '.join(map(str, missed[:12]))}{' ...' if len(missed) > 12 else ''})")
    if moved:
        notes.append(f"moved {moved} planes by 1e-6 of the extent so they do not pass through mesh vertices")
    if n_open:
        notes.append(f"dropped {n_open} open chains (the mesh is not closed where they were cut)")
    if tiny:
        notes.append(f"dropped {tiny} loops enclosing no area")
    if len(planes) < 2:
        raise FieldStudioError(f"only {len(planes)} of {len(normals)} planes cut the mesh; a single plane cannot "
                               "define a volume: ask for at least two planes, or more planes or another layout")
    cs = CrossSections(planes, notes, source=f"{layout} slices")
    orient_loops(cs, report=False)  # chains come out in arbitrary directions: orienting them is not news
    validate(cs)
    return cs
