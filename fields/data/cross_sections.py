"""cross_sections.py
=================
Planar cross-sections (OReX's input): closed polygons on a few planes in space; CSL reading and writing.

Conventions
-----------
- Loops keep the input's world coordinates, ``(n, 3) float64``, exactly as read. Nothing here rescales:
  ``box_frame`` gives the map to the field box, applied later.
- A plane has a unit ``normal``, an ``origin`` on the plane (the projection of its vertices' centroid, so 2-D
  coordinates stay small even for scanner coordinates around 1e5) and an orthonormal in-plane basis ``(u, v)``
  that depends only on the normal (``plane_basis``), right-handed: ``u x v = normal``. 2-D coordinates of a
  point p are ``((p - origin) . u, (p - origin) . v)``.
- Inside/outside on a plane is the even-odd (crossing-number) rule over *all* loops of that plane
  (``inside_2d``), so loop order, loop orientation and the file's ``h`` markers never matter. Use
  ``select`` for one label.
- After ``validate`` (which ``read_csl`` runs), a loop is a hole iff it lies inside an odd number of other
  loops of the same label on its plane; outer loops are counter-clockwise and holes clockwise in ``(u, v)``;
  ``parent`` is the index, in its plane's loop list, of the innermost same-label loop containing it.

CSL (``CSLC``) files: ``n_planes n_labels``, then per plane ``id n_vertices n_contours A B C D`` (plane
Ax+By+Cz+D=0), its vertices ``x y z``, and one line per contour ``n[h<parent>] label i0 .. i(n-1)`` (0-based
indices into the plane's vertices; ``h<parent>`` marks a hole and names the 0-based index of its container).
The reader is token-based, so blank lines, trailing blanks, CRLF line ends and wrapped lines are all accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from fieldstudio.data.meshes import BoxFrame
from fieldstudio.errors import FieldStudioError
from fieldstudio.io import atomic_write_text

__all__ = [
    "Polygon", "Plane", "CrossSections", "plane_basis", "to_2d", "to_3d", "signed_area_2d", "inside_2d",
    "orient_loops", "validate", "read_csl", "write_csl", "box_frame",
]

FIT_TOL = 1e-4        # a stated plane fits if its vertices are within FIT_TOL * extent of it; else it is refitted
SAME_PLANE_TOL = 1e-4  # two planes are one if each one's vertices lie within SAME_PLANE_TOL * extent of the other
POINT_TOL = 1e-9      # vertices closer than POINT_TOL * extent are the same vertex
RANK_TOL = 1e-7       # a plane's vertices are collinear if their 2nd singular value < RANK_TOL * the 1st
_CHUNK = 1 << 20      # elements per (points x edges) block in the vectorised tests


# --------------------------------------------------------------------------------------------------- model

@dataclass(eq=False)
class Polygon:
    """One closed loop: ``points (n, 3) float64`` world coordinates, the last vertex joins the first."""

    points: np.ndarray
    label: int = 1
    is_hole: bool = False
    parent: int | None = None

    def __post_init__(self):
        self.points = np.asarray(self.points, dtype=np.float64).reshape(-1, 3)

    def copy(self, **changes) -> "Polygon":
        kw = dict(points=self.points.copy(), label=self.label, is_hole=self.is_hole, parent=self.parent)
        kw.update(changes)
        return Polygon(**kw)


def plane_basis(normal) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic orthonormal in-plane basis ``(u, v)`` with ``u x v = normal`` (normal must be unit).

    ``u`` is the world axis least aligned with the normal (lowest index on ties), made orthogonal to it;
    ``v = normal x u``. A z-normal gives u = x, v = y.
    """
    n = np.asarray(normal, dtype=np.float64)
    axis = np.zeros(3)
    axis[int(np.argmin(np.abs(n)))] = 1.0
    u = axis - axis.dot(n) * n
    u /= np.linalg.norm(u)
    return u, np.cross(n, u)


@dataclass(eq=False)
class Plane:
    """A plane with its loops. ``origin``, ``normal``, ``u``, ``v``: (3,) float64; ``id``: 1-based name."""

    origin: np.ndarray
    normal: np.ndarray
    u: np.ndarray
    v: np.ndarray
    loops: list[Polygon] = field(default_factory=list)
    id: int = 0

    @classmethod
    def through(cls, normal, loops: list[Polygon], offset: float | None = None, id: int = 0) -> "Plane":
        """Plane with ``normal`` (any length > 0) holding ``loops``.

        With ``offset`` the plane is ``normal . x + offset = 0`` (offset scaled like ``normal``); without
        it the plane passes through the loops' centroid. The origin is the centroid projected onto it.
        """
        n = np.asarray(normal, dtype=np.float64)
        length = float(np.linalg.norm(n))
        if not np.isfinite(length) or length == 0:
            raise ValueError("plane normal must be finite and non-zero")
        n = n / length
        pts = np.concatenate([lp.points for lp in loops]) if loops else np.zeros((0, 3))
        centre = pts.mean(axis=0) if len(pts) else np.zeros(3)
        d = -n.dot(centre) if offset is None else offset / length
        origin = centre - (n.dot(centre) + d) * n
        u, v = plane_basis(n)
        return cls(origin=origin, normal=n, u=u, v=v, loops=list(loops), id=id)

    @classmethod
    def fit(cls, loops: list[Polygon], hint=None, id: int = 0) -> "Plane":
        """Least-squares plane (SVD) through the loops' vertices; normal sign follows ``hint`` when given."""
        pts = np.concatenate([lp.points for lp in loops])
        centre = pts.mean(axis=0)
        _, _, vt = np.linalg.svd(pts - centre, full_matrices=False)
        n = vt[-1]
        ref = np.asarray(hint, dtype=np.float64) if hint is not None and np.linalg.norm(hint) > 0 else None
        if ref is None:  # deterministic sign: largest component positive
            ref = np.eye(3)[int(np.argmax(np.abs(n)))]
        if n.dot(ref) < 0:
            n = -n
        return cls.through(n, loops, id=id)

    def vertices(self) -> np.ndarray:
        """All vertices of this plane's loops, (m, 3) float64."""
        return np.concatenate([lp.points for lp in self.loops]) if self.loops else np.zeros((0, 3))

    def to_2d(self, points3d) -> np.ndarray:
        return to_2d(self, points3d)

    def to_3d(self, points2d) -> np.ndarray:
        return to_3d(self, points2d)

    def copy(self, loops: list[Polygon] | None = None) -> "Plane":
        return Plane(self.origin.copy(), self.normal.copy(), self.u.copy(), self.v.copy(),
                     [lp.copy() for lp in self.loops] if loops is None else loops, self.id)


def to_2d(plane: Plane, points3d) -> np.ndarray:
    """World points ``(n, 3)`` -> plane coordinates ``(n, 2)`` in the plane's (u, v) basis (projects)."""
    d = np.asarray(points3d, dtype=np.float64).reshape(-1, 3) - plane.origin
    return np.stack([d @ plane.u, d @ plane.v], axis=1)


def to_3d(plane: Plane, points2d) -> np.ndarray:
    """Plane coordinates ``(n, 2)`` -> world points ``(n, 3)`` on the plane."""
    p = np.asarray(points2d, dtype=np.float64).reshape(-1, 2)
    return plane.origin + p[:, :1] * plane.u + p[:, 1:] * plane.v


@dataclass(eq=False)
class CrossSections:
    """Planes with loops, plus the repairs and warnings collected while reading or validating (``notes``)."""

    planes: list[Plane] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = ""

    to_2d = staticmethod(to_2d)
    to_3d = staticmethod(to_3d)

    def labels(self) -> list[int]:
        """Sorted distinct loop labels."""
        return sorted({lp.label for p in self.planes for lp in p.loops})

    def all_vertices(self) -> np.ndarray:
        """Every loop vertex of every plane, (m, 3) float64."""
        parts = [p.vertices() for p in self.planes]
        return np.concatenate(parts) if parts else np.zeros((0, 3))

    def bounds(self) -> np.ndarray:
        """(2, 3) float64: min and max corner of all vertices."""
        pts = self.all_vertices()
        if len(pts) == 0:
            raise FieldStudioError("the cross-sections contain no contour vertices")
        return np.stack([pts.min(axis=0), pts.max(axis=0)])

    def summary(self) -> dict:
        loops = [lp for p in self.planes for lp in p.loops]
        return {"planes": len(self.planes), "loops": len(loops), "holes": sum(lp.is_hole for lp in loops),
                "labels": self.labels(), "vertices": int(sum(len(lp.points) for lp in loops))}

    def select(self, labels: int | Iterable[int]) -> "CrossSections":
        """The loops of ``labels`` only (one object per label: call once per label).

        Every plane is kept, also those without a loop of these labels: there the selected shape is known
        to be absent (all outside). Parent indices are renumbered.
        """
        wanted = {labels} if isinstance(labels, (int, np.integer)) else set(labels)
        planes = []
        for p in self.planes:
            keep = [i for i, lp in enumerate(p.loops) if lp.label in wanted]
            index = {old: new for new, old in enumerate(keep)}
            loops = [p.loops[i].copy(parent=index.get(p.loops[i].parent)) for i in keep]
            planes.append(p.copy(loops=loops))
        return CrossSections(planes, list(self.notes), self.source)

    def union(self) -> "CrossSections":
        """All labels as one object (label 1); holes and orientation re-derived over all loops of a plane.

        Pairs of coincident loops are removed first: label maps that tile the plane (Abdomen.csl: each hole
        of one organ is exactly the outline of another) list every shared boundary twice, and under the
        even-odd rule the two copies cancel, so ``inside_2d`` answers the same with or without them.
        """
        pts = self.all_vertices()
        tol = 10 * POINT_TOL * (float(np.ptp(pts, axis=0).max()) if len(pts) else 0.0)
        planes, cancelled = [], 0
        for p in self.planes:
            loops2d = [to_2d(p, lp.points) for lp in p.loops]
            gone: set[int] = set()
            for i in range(len(loops2d)):
                for j in range(i + 1, len(loops2d)):
                    if i not in gone and j not in gone and _same_loop(loops2d[i], loops2d[j], tol):
                        gone |= {i, j}
                        cancelled += 1
            planes.append(p.copy(loops=[lp.copy(label=1, parent=None)
                                        for k, lp in enumerate(p.loops) if k not in gone]))
        notes = list(self.notes)
        if cancelled:
            notes.append(f"union: removed {cancelled} pairs of coincident contours (boundaries shared by two labels)")
        out = CrossSections(planes, notes, self.source)
        orient_loops(out, report=False)
        return out


# ------------------------------------------------------------------------------------------- 2-D geometry

def signed_area_2d(points2d) -> float:
    """Shoelace area of a closed loop ``(n, 2)``: positive if counter-clockwise."""
    p = np.asarray(points2d, dtype=np.float64)
    p = p - p.mean(axis=0)  # centred: no cancellation for far-off coordinates
    q = np.roll(p, -1, axis=0)
    return 0.5 * float(np.sum(p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]))


def _edges(loops2d: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not loops2d:
        return np.zeros((0, 2)), np.zeros((0, 2))
    a = np.concatenate(loops2d)
    b = np.concatenate([np.roll(lp, -1, axis=0) for lp in loops2d])
    return a, b


def _even_odd(points2d: np.ndarray, loops2d: list[np.ndarray], group: np.ndarray | None = None) -> np.ndarray:
    """Crossing-number parity of each point against all edges of ``loops2d`` (see ``inside_2d``): (n,) bool, or
    with ``group`` (one integer 0..G-1 per loop) the parity per group of loops, (n, G) bool, in one pass."""
    pts = np.asarray(points2d, dtype=np.float64).reshape(-1, 2)
    a, b = _edges(loops2d)
    n_groups = 1 if group is None else int(np.max(group, initial=-1)) + 1
    inside = np.zeros((len(pts), n_groups), dtype=bool)
    if len(a) == 0 or len(pts) == 0:
        return inside[:, 0] if group is None else inside
    owner = np.zeros(len(a), dtype=np.int64) if group is None else \
        np.repeat(np.asarray(group, dtype=np.int64), [len(lp) for lp in loops2d])
    ylo, yhi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    order = np.argsort(pts[:, 1], kind="stable")  # blocks of points close in v meet few edges
    rows = min(len(pts), max(64, _CHUNK // len(a)))
    for s in range(0, len(pts), rows):
        idx = order[s:s + rows]
        px, py = pts[idx, 0:1], pts[idx, 1:2]
        near = (ylo <= py[-1, 0]) & (yhi > py[0, 0])  # edges that can straddle a point of this block
        ax, ay, bx, by = a[near, 0], a[near, 1], b[near, 0], b[near, 1]
        straddle = (ay > py) != (by > py)
        # side of p relative to the directed edge a->b; exactly 0 when p is an endpoint
        side = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
        crosses = straddle & np.where(by > ay, side > 0, side < 0)
        if n_groups == 1:
            inside[idx, 0] = (np.count_nonzero(crosses, axis=1) & 1).astype(bool)
        else:
            own = owner[near]
            for g in np.unique(own):
                inside[idx, g] = (np.count_nonzero(crosses[:, own == g], axis=1) & 1).astype(bool)
    return inside[:, 0] if group is None else inside


def inside_2d(plane: Plane, pts2d) -> np.ndarray:
    """Which in-plane points ``(n, 2)`` (the plane's (u, v) frame) are inside the plane's loops, ``(n,) bool``.

    Even-odd rule over all loops of the plane: a point is inside iff a ray towards +u crosses the loops an
    odd number of times. Holes, islands inside holes and any loop order or orientation are handled, and the
    ``h`` markers are not consulted. Multi-label planes: the parity runs over every label's loops, so
    overlapping regions of different labels cancel; use ``CrossSections.select`` for one label.

    Tie rule (deterministic, exact for points that are vertices or lie on edges parallel to u or v): a
    point on a loop gets the answer of the point displaced by an infinitesimal step towards +u (and, on an
    edge parallel to u, a far smaller step towards +v). E.g. for the unit square [0, 1]^2 the left and
    bottom sides and the corner (0, 0) are inside; the right and top sides and the other corners are outside.
    """
    return _even_odd(pts2d, [to_2d(plane, lp.points) for lp in plane.loops])


def inside_by_label_2d(plane: Plane, pts2d, labels: list[int]) -> np.ndarray:
    """Which in-plane points ``(n, 2)`` are inside each label's loops: ``(n, len(labels))`` bool, the even-odd
    rule per label (as ``inside_2d`` of ``CrossSections.select(label)``), in one pass over the plane's edges.
    Loops of labels not listed are ignored."""
    index = {lab: i for i, lab in enumerate(labels)}
    loops = [lp for lp in plane.loops if lp.label in index]
    group = np.array([index[lp.label] for lp in loops], dtype=np.int64)
    out = np.zeros((len(np.asarray(pts2d).reshape(-1, 2)), len(labels)), dtype=bool)
    if loops:
        found = _even_odd(pts2d, [to_2d(plane, lp.points) for lp in loops], group)
        out[:, :found.shape[1]] = found
    return out


def _orient(ax, ay, bx, by, cx, cy):
    return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)


def _first_crossing(loops2d: list[np.ndarray], group: np.ndarray, scale: float):
    """First pair of edges that cross properly (not merely touch) among loops of the same ``group``.

    Returns ``(loop_i, loop_j, point2d)`` or None. O(E^2), vectorised in blocks.
    """
    a, b = _edges(loops2d)
    owner = np.concatenate([np.full(len(lp), k) for k, lp in enumerate(loops2d)])
    grp = group[owner]
    eps = 1e-12 * scale * scale
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    rows = max(1, _CHUNK // max(len(a), 1))
    for s in range(0, len(a), rows):
        e = slice(s, s + rows)
        near = ((lo[e][:, None, 0] <= hi[None, :, 0]) & (lo[None, :, 0] <= hi[e][:, None, 0])
                & (lo[e][:, None, 1] <= hi[None, :, 1]) & (lo[None, :, 1] <= hi[e][:, None, 1])
                & (grp[e][:, None] == grp[None, :])
                & (np.arange(s, min(s + rows, len(a)))[:, None] < np.arange(len(a))[None, :]))
        if not near.any():
            continue
        i, j = np.nonzero(near)
        i = i + s
        d1 = _orient(a[i, 0], a[i, 1], b[i, 0], b[i, 1], a[j, 0], a[j, 1])
        d2 = _orient(a[i, 0], a[i, 1], b[i, 0], b[i, 1], b[j, 0], b[j, 1])
        d3 = _orient(a[j, 0], a[j, 1], b[j, 0], b[j, 1], a[i, 0], a[i, 1])
        d4 = _orient(a[j, 0], a[j, 1], b[j, 0], b[j, 1], b[i, 0], b[i, 1])
        d1, d2, d3, d4 = (np.where(np.abs(d) <= eps, 0.0, d) for d in (d1, d2, d3, d4))
        hit = np.nonzero((d1 * d2 < 0) & (d3 * d4 < 0))[0]
        if len(hit):
            k = hit[0]
            return int(owner[i[k]]), int(owner[j[k]]), (a[i[k]] + b[i[k]]) / 2
    return None


def _same_loop(p: np.ndarray, q: np.ndarray, tol: float) -> bool:
    """Same closed loop up to start vertex and direction, vertex for vertex within ``tol``."""
    if p.shape != q.shape:
        return False
    k = int(np.argmin(np.linalg.norm(q - p[0], axis=1)))
    fwd = np.roll(q, -k, axis=0)
    if np.abs(fwd - p).max() <= tol:
        return True
    back = np.roll(q[::-1], -(len(q) - 1 - k), axis=0)
    return bool(np.abs(back - p).max() <= tol)


# ------------------------------------------------------------------- self-touching / self-crossing contours
#
# Digitised contours often touch themselves (a repeated vertex, a vertex on another edge, a spike that runs
# back along itself) or cross themselves in a small loop or bow-tie. Such a contour is repaired by splitting
# it at every contact into simple loops ("lobes"), keeping every edge: the crossings and touching points
# become vertices of the edges they lie on, and the walk along the contour is cut into closed pieces
# wherever it returns to a point it has passed (each cut keeps the direction of travel, so pieces touch but
# never cross). Pieces without area (spikes, doubled edges) are dropped.
#
# The reading is the even-odd rule, not the union of the lobes: it is the rule ``inside_2d`` applies to
# every plane, and the one OReX's own labeller applies to a self-crossing contour (matplotlib's
# ``Path.contains_points`` is even-odd on a single path), so the repaired loops give every point of the
# plane the same inside/outside answer as the contour as drawn. Disjoint lobes (a bow-tie, a figure-eight)
# read the same under every rule. The readings part only where lobes nest: even-odd makes a lobe inside
# another lobe a hole, the union of the lobes fills it. A contour that only touches itself (no crossing)
# can nest a lobe only as a hole drawn in the same stroke (a keyhole; its winding number is 0 there, so
# even-odd and winding agree), and is always repaired. A contour with crossings whose nested lobes hold more
# than LOBE_TOL of its area has no single reasonable reading and is refused.

TOUCH_TOL = 1e-8  # a vertex within TOUCH_TOL * extent of another edge of its contour touches that edge
LOBE_TOL = 0.01   # refuse a contour whose even-odd and union readings differ by more than this share of its area


def _loop_contacts(q: np.ndarray, tol: float, eps: float):
    """Where a closed loop ``q (n, 2)`` meets itself.

    Returns ``(crossings, touches)``: crossings ``(i, j, t_i, t_j)`` of non-adjacent edges i < j that cross
    properly (orientation tests as in ``_first_crossing``), at parameter t along each edge; touches
    ``(k, i, t)``: vertex k lies within ``tol`` of edge i (k not an end of i) at parameter t along it.
    """
    n = len(q)
    a, b = q, np.roll(q, -1, axis=0)
    d = b - a
    dd = np.maximum(np.einsum("ij,ij->i", d, d), 1e-300)
    lo, hi = np.minimum(a, b) - tol, np.maximum(a, b) + tol
    crossings, touches = [], []
    rows = max(1, _CHUNK // max(n, 1))
    for s in range(0, n, rows):
        e = slice(s, min(s + rows, n))
        near = ((lo[e][:, None, 0] <= hi[None, :, 0]) & (lo[None, :, 0] <= hi[e][:, None, 0])
                & (lo[e][:, None, 1] <= hi[None, :, 1]) & (lo[None, :, 1] <= hi[e][:, None, 1]))
        i, j = np.nonzero(near)
        i = i + s
        # touches: vertex j (the start of edge j) near edge i, j not an end of edge i
        m = (j != i) & (j != (i + 1) % n)
        ti, tj = i[m], j[m]
        w = a[tj] - a[ti]
        t = np.clip(np.einsum("ij,ij->i", w, d[ti]) / dd[ti], 0.0, 1.0)
        gap = w - t[:, None] * d[ti]
        hit = np.einsum("ij,ij->i", gap, gap) <= tol * tol
        touches += zip(tj[hit].tolist(), ti[hit].tolist(), t[hit].tolist())
        # proper crossings of non-adjacent edges
        m = (j > i + 1) & ~((i == 0) & (j == n - 1))
        ci, cj = i[m], j[m]
        d1 = _orient(a[ci, 0], a[ci, 1], b[ci, 0], b[ci, 1], a[cj, 0], a[cj, 1])
        d2 = _orient(a[ci, 0], a[ci, 1], b[ci, 0], b[ci, 1], b[cj, 0], b[cj, 1])
        d3 = _orient(a[cj, 0], a[cj, 1], b[cj, 0], b[cj, 1], a[ci, 0], a[ci, 1])
        d4 = _orient(a[cj, 0], a[cj, 1], b[cj, 0], b[cj, 1], b[ci, 0], b[ci, 1])
        d1, d2, d3, d4 = (np.where(np.abs(x) <= eps, 0.0, x) for x in (d1, d2, d3, d4))
        hit = (d1 * d2 < 0) & (d3 * d4 < 0)
        crossings += zip(ci[hit].tolist(), cj[hit].tolist(), (d3[hit] / (d3[hit] - d4[hit])).tolist(),
                         (d1[hit] / (d1[hit] - d2[hit])).tolist())
    return crossings, touches


def _split_at_contacts(q: np.ndarray, q3: np.ndarray, crossings, touches, tol: float):
    """Node the loop at its contacts and cut the walk into closed pieces; returns [(piece2d, piece3d)]."""
    n = len(q)
    pts2, pts3 = [q], [q3]
    inserts: list[list[tuple[float, int]]] = [[] for _ in range(n)]
    involved = set()
    for k, i, t in touches:
        inserts[i].append((t, k))
        involved |= {k, i, (i + 1) % n}
    nxt = n
    for i, j, ti, tj in crossings:
        pts2.append((q[i] + ti * (q[(i + 1) % n] - q[i]))[None])
        pts3.append((q3[i] + ti * (q3[(i + 1) % n] - q3[i]))[None])
        inserts[i].append((ti, nxt))
        inserts[j].append((tj, nxt))
        involved |= {i, (i + 1) % n, j, (j + 1) % n, nxt}
        nxt += 1
    p2, p3 = np.concatenate(pts2), np.concatenate(pts3)
    # points closer than tol are one node, named by its smallest index (an original vertex where there is one)
    rep = np.arange(len(p2))
    cand = np.array(sorted(involved))
    for s in range(0, len(cand), 2048):
        block = cand[s:s + 2048]
        close = np.linalg.norm(p2[block][:, None] - p2[cand][None], axis=2) <= tol
        for r, c in zip(*np.nonzero(close)):
            x, y = int(block[r]), int(cand[c])
            while rep[x] != x:
                x = rep[x]
            while rep[y] != y:
                y = rep[y]
            if x != y:
                rep[max(x, y)] = min(x, y)
    for x in range(len(rep)):
        while rep[rep[x]] != rep[x]:
            rep[x] = rep[rep[x]]
    seq = []
    for i in range(n):
        for _, node in [(0.0, i)] + sorted(inserts[i]):
            node = int(rep[node])
            if not seq or seq[-1] != node:
                seq.append(node)
    while len(seq) > 1 and seq[-1] == seq[0]:
        seq.pop()
    # cut the walk wherever it returns to a node still on the stack: each cut keeps the direction of travel
    stack, pos, pieces = [], {}, []
    for node in seq + seq[:1]:
        if node in pos:
            p = pos[node]
            pieces.append(stack[p:])
            for m in stack[p + 1:]:
                del pos[m]
            del stack[p + 1:]
        else:
            pos[node] = len(stack)
            stack.append(node)
    pieces = pieces[-1:] + pieces[:-1]  # the piece through the contour's first vertex first
    return [(p2[piece], p3[piece]) for piece in pieces if len(piece) >= 3]


def _lobe_faces(lobes2d: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nesting of a contour's lobes (they touch but never cross).

    Returns, per lobe, ``depth`` (how many other lobes contain it; majority of up to 16 edge midpoints,
    even-odd), the area of its face (the lobe minus the lobes directly inside it) and the face's winding
    number (sum of the orientations, +1 counter-clockwise, of the lobes containing it, itself included).
    """
    signed = np.array([signed_area_2d(p) for p in lobes2d])
    areas = np.abs(signed)
    inside = np.zeros((len(lobes2d), len(lobes2d)), dtype=bool)  # inside[i, j]: lobe i lies in lobe j
    for i, p in enumerate(lobes2d):
        mid = (p + np.roll(p, -1, axis=0)) / 2
        probe = mid[np.linspace(0, len(p) - 1, min(16, len(p))).astype(int)]
        for j, other in enumerate(lobes2d):
            inside[i, j] = j != i and areas[j] > areas[i] and _even_odd(probe, [other]).mean() > 0.5
    depth = inside.sum(axis=1)
    face = areas.copy()
    for i in range(len(lobes2d)):
        holders = np.nonzero(inside[i])[0]
        if len(holders):
            face[holders[np.argmin(areas[holders])]] -= areas[i]
    winding = np.sign(signed) + (inside * np.sign(signed)[None, :]).sum(axis=1)
    return depth, face, winding


def _fmt3(p) -> str:
    return "(" + ", ".join(f"{float(x):.6g}" for x in p) + ")"


def _repair_contour(plane: Plane, k: int, q: np.ndarray, tol: float, eps: float, min_area: float):
    """Simple loops equivalent (even-odd) to contour ``k`` (1-based) of ``plane`` given in 2-D as ``q``.

    Returns None if the contour is simple already, else ``(loops, note)``. Raises FieldStudioError when its
    lobes nest so much that the even-odd and union readings disagree (see the section comment).
    """
    crossings, touches = _loop_contacts(q, tol, eps)
    if not crossings and not touches:
        return None
    lp = plane.loops[k - 1]
    n = len(q)
    if crossings:
        i, _, t, _ = crossings[0]
        at = lp.points[i] + t * (lp.points[(i + 1) % n] - lp.points[i])
        what = f"self-crossing at {_fmt3(at)}" if len(crossings) == 1 else \
            f"{len(crossings)} self-crossings, the first at {_fmt3(at)}"
    else:
        what = f"touches itself at {_fmt3(lp.points[touches[0][0]])}"
    pieces = _split_at_contacts(q, lp.points, crossings, touches, tol)
    for _ in range(3):  # a piece may still meet itself where contacts lay within tol of each other
        pieces = [(p2, p3) for p2, p3 in pieces if abs(signed_area_2d(p2)) > min_area]
        contacts = [_loop_contacts(p2, tol, eps) for p2, _ in pieces]
        if not any(c or t for c, t in contacts):
            break
        pieces = [part for (p2, p3), (c, t) in zip(pieces, contacts)
                  for part in (_split_at_contacts(p2, p3, c, t, tol) if c or t else [(p2, p3)])]
    else:
        raise FieldStudioError(f"plane {plane.id}, contour {k}: {what}, and it could not be split into simple "
                               "loops; redraw that contour so it does not touch or cross itself")
    if not pieces:
        raise FieldStudioError(f"plane {plane.id}, contour {k} encloses no area ({what}: it runs back along "
                               "itself); remove it")
    depth, face, winding = _lobe_faces([p2 for p2, _ in pieces])
    total = float(face[depth % 2 == 0].sum())  # the even-odd reading: faces inside an odd number of lobes
    # Where the readings part (see the section comment): faces inside an even number of lobes are out by
    # even-odd but in by the union of the lobes (crossings), or in by the winding number (touches only: a
    # lobe pinched off inside the contour is then a hole drawn in the same stroke, and a winding of 0 there
    # agrees with even-odd).
    differ = (depth % 2 == 1) & ((winding != 0) | bool(crossings))
    share = float(face[differ].sum()) / max(total + float(face[differ].sum()), 1e-300)
    if share > LOBE_TOL:
        raise FieldStudioError(
            f"plane {plane.id}, contour {k}: {what}; its lobes overlap, so what is inside is ambiguous "
            f"({100 * share:.0f} % of its area lies in two lobes at once); redraw it so it does not cross "
            "itself, or give the lobes as separate contours")
    loops = [lp.copy(points=p3.copy(), is_hole=lp.is_hole != bool(d % 2), parent=None)
             for (_, p3), d in zip(pieces, depth)]
    if len(loops) == 1:
        how = "removing the parts without area (spikes, repeated points)"
    else:
        areas = np.array([abs(signed_area_2d(p2)) for p2, _ in pieces])
        small = float(np.sort(areas)[:-1].sum()) / float(areas.sum())
        how = (f"splitting it into {len(loops)} simple loops (even-odd rule"
               f"{', lobes inside lobes are holes' if depth.any() else ''}; the smaller lobes hold "
               f"{100 * small:.2g} % of its area)")
    return loops, f"plane {plane.id}, contour {k}: {what} repaired by {how}"


def _repair_self_contacts(cs: CrossSections, extent: float) -> list[str]:
    """Replace every contour that touches or crosses itself by simple loops (``_repair_contour``), in place."""
    tol = TOUCH_TOL * extent
    notes = []
    for plane in cs.planes:
        loops2d = [to_2d(plane, lp.points) for lp in plane.loops]
        if not loops2d:
            continue
        scale = max(float(np.abs(np.concatenate(loops2d)).max()), 1e-300)
        eps, min_area = 1e-12 * scale * scale, 1e-14 * scale * scale
        new = []
        for k, (lp, q) in enumerate(zip(plane.loops, loops2d), 1):
            fixed = _repair_contour(plane, k, q, tol, eps, min_area)
            if fixed is None:
                new.append(lp)
            else:
                new += fixed[0]
                notes.append(fixed[1])
        plane.loops = new
    return notes


# ------------------------------------------------------------------------------------ orientation, holes

def orient_loops(cs: CrossSections, report: bool = True) -> list[str]:
    """Classify holes and orient loops, in place: outer loops CCW, holes CW in each plane's (u, v) basis.

    A loop is a hole iff it lies inside an odd number of other loops of the same label on its plane
    (majority of up to 16 of its vertices tested with the even-odd rule, so a touching vertex does not
    decide); ``parent`` = the smallest such container. Returns the notes it adds to ``cs.notes`` (none
    with ``report=False``, for loops whose direction and hole flags carry no information yet).
    """
    reversed_n = 0
    disagree = []
    marked = any(lp.is_hole for p in cs.planes for lp in p.loops)  # the input said which loops are holes
    for plane in cs.planes:
        loops2d = [to_2d(plane, lp.points) for lp in plane.loops]
        areas = np.array([abs(signed_area_2d(p)) for p in loops2d])
        lo = np.array([p.min(axis=0) for p in loops2d]).reshape(-1, 2)
        hi = np.array([p.max(axis=0) for p in loops2d]).reshape(-1, 2)
        for i, lp in enumerate(plane.loops):
            containers = []
            probe = loops2d[i][np.linspace(0, len(loops2d[i]) - 1, min(16, len(loops2d[i]))).astype(int)]
            for j, other in enumerate(plane.loops):
                if (j == i or other.label != lp.label or areas[j] <= areas[i]
                        or (lo[i] < lo[j]).any() or (hi[i] > hi[j]).any()):
                    continue
                if _even_odd(probe, [loops2d[j]]).mean() > 0.5:
                    containers.append(j)
            is_hole = len(containers) % 2 == 1
            parent = min(containers, key=lambda j: areas[j]) if containers else None
            if marked and lp.is_hole != is_hole:
                disagree.append(f"{plane.id}:{i + 1}")
            lp.is_hole, lp.parent = is_hole, parent
            if (signed_area_2d(loops2d[i]) > 0) == is_hole:
                lp.points = lp.points[::-1].copy()
                reversed_n += 1
    notes = []
    if not report:
        return notes
    if reversed_n:
        n_loops = sum(len(p.loops) for p in cs.planes)
        notes.append(f"reversed {reversed_n} of {n_loops} contours so that outer loops run counter-clockwise "
                     "and holes clockwise")
    if disagree:
        notes.append(f"{len(disagree)} contours' hole markers disagree with their nesting and were reclassified "
                     f"by nesting (plane:contour {', '.join(disagree[:10])}{' ...' if len(disagree) > 10 else ''})")
    cs.notes.extend(notes)
    return notes


# ------------------------------------------------------------------------------------------- validation

def _extent(cs: CrossSections) -> float:
    pts = cs.all_vertices()
    return float((pts.max(axis=0) - pts.min(axis=0)).max()) if len(pts) else 0.0


def _ids(ids: list, limit: int = 12) -> str:
    return ", ".join(map(str, ids[:limit])) + (" ..." if len(ids) > limit else "")


def validate(cs: CrossSections) -> list[str]:
    """Check and repair ``cs`` in place; return the notes added (also appended to ``cs.notes``).

    Repairs (noted): a closing vertex that repeats the first one and repeated consecutive vertices are
    removed; planes without contours are DROPPED (OReX's loader cannot take them; a later occupancy task may
    prefer to keep them as all-outside); a stated plane that does not fit its vertices (max distance >
    FIT_TOL * extent) is refitted by least squares; a contour that touches or crosses itself is split into
    simple loops with the same even-odd inside (one note per contour, see "self-touching / self-crossing
    contours" above); duplicate contours on a plane and duplicate planes whose contours agree are merged.
    Finally holes are classified and loops oriented (``orient_loops``).

    Raises FieldStudioError for: no contours at all, non-finite coordinates, a contour with fewer than 3
    distinct vertices or zero area, a plane whose vertices are (near-)collinear, a self-crossing contour
    whose lobes overlap (ambiguous inside), mutually crossing contours of one label, duplicate planes whose
    contours differ, and a single plane.
    """
    notes: list[str] = []
    if not cs.planes:
        raise FieldStudioError("no planes: the cross-sections are empty; give at least two planes with contours")
    for plane in cs.planes:
        for k, lp in enumerate(plane.loops, 1):
            if not np.isfinite(lp.points).all():
                raise FieldStudioError(f"plane {plane.id}, contour {k}: coordinates are NaN or infinite; "
                                       "fix or remove that contour")
    extent = _extent(cs)
    tol_pt = POINT_TOL * extent
    closed, dupes = [], 0
    for plane in cs.planes:
        for k, lp in enumerate(plane.loops, 1):
            p = lp.points
            if len(p) > 1 and np.abs(p[-1] - p[0]).max() <= tol_pt:
                p = p[:-1]
                closed.append(f"{plane.id}:{k}")
            keep = np.ones(len(p), dtype=bool)
            keep[1:] = np.abs(np.diff(p, axis=0)).max(axis=1) > tol_pt
            dupes += int((~keep).sum())
            p = p[keep]
            while len(p) > 1 and np.abs(p[-1] - p[0]).max() <= tol_pt:
                p = p[:-1]
                dupes += 1
            if len(p) < 3:
                raise FieldStudioError(f"plane {plane.id}, contour {k} has {len(p)} distinct vertices; a contour "
                                       "needs at least 3: remove it or fix its vertex indices")
            lp.points = p
    if closed:
        notes.append(f"removed the closing vertex (a repeat of the first) from {len(closed)} contours "
                     f"(plane:contour {_ids(closed)}); contours are closed implicitly")
    if dupes:
        notes.append(f"removed {dupes} repeated consecutive vertices")

    empty = [p.id for p in cs.planes if not p.loops]
    if empty:
        cs.planes = [p for p in cs.planes if p.loops]
        notes.append(f"dropped {len(empty)} planes without contours (plane {_ids(empty)}): they carry no "
                     "contour, and OReX's loader rejects them")
    if not cs.planes:
        raise FieldStudioError("no plane has a contour; give at least two planes with closed contours")

    refit = []
    worst = 0.0
    for idx, plane in enumerate(cs.planes):
        pts = plane.vertices()
        sv = np.linalg.svd(pts - pts.mean(axis=0), compute_uv=False)
        if sv[0] == 0 or sv[1] <= RANK_TOL * sv[0]:
            raise FieldStudioError(f"plane {plane.id}: its contour vertices are (nearly) collinear, so they do not "
                                   "span a plane; remove that plane or fix its contours")
        dist = float(np.abs((pts - plane.origin) @ plane.normal).max())
        if dist > FIT_TOL * extent:
            refit.append(plane.id)
            worst = max(worst, dist / extent)
            fitted = Plane.fit(plane.loops, hint=plane.normal, id=plane.id)
            cs.planes[idx] = fitted
    if refit:
        notes.append(f"refitted {len(refit)} planes by least squares because the stated plane equation does not "
                     f"fit their vertices (up to {worst:.1e} of the extent; plane {_ids(refit)})")

    repaired = _repair_self_contacts(cs, extent)
    if len(repaired) > 20:
        repaired = repaired[:20] + [f"... and {len(repaired) - 20} more contours repaired the same way"]
    notes.extend(repaired)

    removed = 0
    for plane in cs.planes:
        loops2d = [to_2d(plane, lp.points) for lp in plane.loops]
        scale = max(float(np.abs(np.concatenate(loops2d)).max()), 1e-300)
        drop = set()
        for i in range(len(plane.loops)):
            for j in range(i + 1, len(plane.loops)):
                if (j not in drop and plane.loops[i].label == plane.loops[j].label
                        and _same_loop(loops2d[i], loops2d[j], tol_pt * 10)):
                    drop.add(j)
        if drop:
            removed += len(drop)
            plane.loops = [lp for k, lp in enumerate(plane.loops) if k not in drop]
            loops2d = [p for k, p in enumerate(loops2d) if k not in drop]
        group = np.array([lp.label for lp in plane.loops])
        hit = _first_crossing(loops2d, group, scale)
        if hit is not None:
            i, j, at = hit
            where = np.array2string(to_3d(plane, at[None])[0], precision=6, separator=", ")
            what = (f"contour {i + 1} intersects itself" if i == j
                    else f"contours {i + 1} and {j + 1} (label {plane.loops[i].label}) cross each other")
            raise FieldStudioError(f"plane {plane.id}: {what} near {where}; fix the contour so its edges do "
                                   "not cross")
        for k, p in enumerate(loops2d, 1):
            if abs(signed_area_2d(p)) <= 1e-14 * scale * scale:
                raise FieldStudioError(f"plane {plane.id}, contour {k} encloses no area (its vertices are "
                                       "collinear); remove it")
    if removed:
        notes.append(f"removed {removed} duplicate contours (same label, same vertices) from their planes")

    notes.extend(_merge_duplicate_planes(cs, extent))

    if len(cs.planes) < 2:
        raise FieldStudioError("a single plane cannot define a volume; give at least two planes or planes at "
                               "several orientations")
    cs.notes.extend(notes)
    notes.extend(orient_loops(cs))
    return notes


def _merge_duplicate_planes(cs: CrossSections, extent: float) -> list[str]:
    tol = SAME_PLANE_TOL * extent
    kept: list[Plane] = []
    merged = []
    for plane in cs.planes:
        pts = plane.vertices()
        twin = None
        for other in kept:
            if (np.linalg.norm(np.cross(plane.normal, other.normal)) <= SAME_PLANE_TOL
                    and np.abs((pts - other.origin) @ other.normal).max() <= tol
                    and np.abs((other.vertices() - plane.origin) @ plane.normal).max() <= tol):
                twin = other
                break
        if twin is None:
            kept.append(plane)
            continue
        a = [to_2d(twin, lp.points) for lp in twin.loops]
        b = [to_2d(twin, lp.points) for lp in plane.loops]
        for label in {lp.label for lp in twin.loops} & {lp.label for lp in plane.loops}:
            la = [p for p, lp in zip(a, twin.loops) if lp.label == label]
            lb = [p for p, lp in zip(b, plane.loops) if lp.label == label]
            agree = len(la) == len(lb) and all(any(_same_loop(p, q, tol) for q in lb) for p in la)
            if not agree:
                raise FieldStudioError(
                    f"planes {twin.id} and {plane.id} are the same plane but their label-{label} contours differ; "
                    "remove one of them or make their contours agree")
        twin_labels = {lp.label for lp in twin.loops}
        twin.loops.extend(lp for lp in plane.loops if lp.label not in twin_labels)
        merged.append(f"{plane.id}->{twin.id}")
    cs.planes = kept
    if merged:
        return [f"merged {len(merged)} duplicate planes whose contours agree (plane {_ids(merged)})"]
    return []


# -------------------------------------------------------------------------------------------- CSL files

_COUNT = re.compile(r"^(\d+)(?:[hH](\d+))?$")


class _Tokens:
    """Whitespace tokens of a text file with the line each came from."""

    def __init__(self, text: str, name: str):
        self.name = name
        self.toks: list[str] = []
        self.lines: list[int] = []
        for no, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            self.toks.extend(parts)
            self.lines.extend([no] * len(parts))
        self.pos = 0

    def line(self, pos: int | None = None) -> int:
        if not self.lines:
            return 1
        pos = self.pos if pos is None else pos
        return self.lines[min(pos, len(self.lines) - 1)]

    def take(self, n: int, what: str) -> list[str]:
        if self.pos + n > len(self.toks):
            last = self.lines[-1] if self.lines else 0
            raise FieldStudioError(f"{self.name}: the file ends at line {last} while reading {what}; it is "
                                   "truncated or its counts are wrong. Re-export the complete file")
        out = self.toks[self.pos:self.pos + n]
        self.pos += n
        return out

    def fail(self, pos: int, msg: str) -> FieldStudioError:
        return FieldStudioError(f"{self.name}, line {self.line(pos)}: {msg}")

    def int(self, what: str) -> int:
        tok = self.take(1, what)[0]
        try:
            return int(tok)
        except ValueError:
            raise self.fail(self.pos - 1, f"expected {what} (a whole number), found {tok!r}") from None

    def floats(self, n: int, what: str) -> np.ndarray:
        start = self.pos
        toks = self.take(n, what)
        try:
            vals = np.array(toks, dtype=np.float64)
        except ValueError:
            for k, t in enumerate(toks):
                try:
                    float(t)
                except ValueError:
                    raise self.fail(start + k, f"expected a number in {what}, found {t!r}") from None
            raise
        bad = np.nonzero(~np.isfinite(vals))[0]
        if len(bad):
            raise self.fail(start + int(bad[0]), f"{what} has a non-finite coordinate ({toks[bad[0]]}); "
                                                  "fix or remove it")
        return vals


def read_csl(path, validate_input: bool = True) -> CrossSections:
    """Read a CSL (``CSLC``) file into world coordinates; ``validate`` runs on it unless told not to.

    Hole loops take the label of the contour their ``h<k>`` marker names when the two differ (OReX's
    slicer writes holes with label 2); whether a loop is a hole is then decided by nesting, not by the marker.
    A plane given without a normal (A = B = C = 0) is fitted. Raises FieldStudioError naming the file and
    line for anything unreadable.
    """
    path = Path(path)
    name = path.name
    if not path.exists():
        raise FieldStudioError(f"cross-section file not found: {path}")
    if path.is_dir():
        raise FieldStudioError(f"{path} is a folder; give a .csl file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise FieldStudioError(f"cannot read {path}: {err.strerror or err}") from None
    tok = _Tokens(raw.decode("utf-8-sig", errors="replace"), name)
    if not tok.toks or tok.toks[0].upper() != "CSLC":
        first = tok.toks[0][:20] if tok.toks else "nothing"
        raise FieldStudioError(f"{name} is not a CSL file: it must start with 'CSLC' (found {first!r} at line "
                               f"{tok.line(0)}); give a cross-section file in CSL format")
    tok.pos = 1
    n_planes = tok.int("the number of planes")
    tok.int("the number of labels")
    if n_planes < 0:
        raise tok.fail(tok.pos - 2, "the number of planes is negative")
    notes: list[str] = []
    planes: list[Plane] = []
    relabelled, bad_markers, fitted = 0, [], []
    for k in range(n_planes):
        what = f"the header of plane {k + 1} of {n_planes}"
        head = tok.pos
        pid = tok.int(what)
        nv = tok.int(what)
        nc = tok.int(what)
        if nv < 0 or nc < 0:
            raise tok.fail(head, f"plane {pid} has a negative vertex or contour count")
        coeffs = tok.floats(4, what)
        verts = tok.floats(3 * nv, f"the vertices of plane {pid}").reshape(nv, 3)
        loops, markers = [], []
        for c in range(nc):
            start = tok.pos
            first = tok.take(1, f"contour {c + 1} of plane {pid}")[0]
            m = _COUNT.match(first)
            if not m:
                raise tok.fail(start, f"contour {c + 1} of plane {pid} should start with its vertex count "
                                      f"(optionally followed by h<parent>), found {first!r}")
            n = int(m.group(1))
            label = tok.int(f"the label of contour {c + 1} of plane {pid}")
            at = tok.pos
            idx_tok = tok.take(n, f"the vertex indices of contour {c + 1} of plane {pid}")
            try:
                idx = np.array(idx_tok, dtype=np.int64)
            except ValueError:
                raise tok.fail(at, f"contour {c + 1} of plane {pid} has a vertex index that is not a whole "
                                   "number") from None
            if n < 3:
                raise tok.fail(start, f"contour {c + 1} of plane {pid} has {n} vertices; a contour needs at least "
                                      "3: remove it or fix the file")
            out = np.nonzero((idx < 0) | (idx >= nv))[0]
            if len(out):
                raise tok.fail(at + int(out[0]), f"contour {c + 1} of plane {pid} uses vertex index "
                                                 f"{idx[out[0]]}, but the plane has {nv} vertices (indices 0 to "
                                                 f"{nv - 1}); fix the index or the vertex count")
            parent = int(m.group(2)) if m.group(2) is not None else None
            loops.append(Polygon(verts[idx], label=label, is_hole=parent is not None, parent=parent))
            markers.append(parent)
        for c, parent in enumerate(markers):
            if parent is None:
                continue
            if parent >= nc or parent == c:
                bad_markers.append(f"{pid}:{c + 1}")
                loops[c].parent = None
            elif loops[c].label != loops[parent].label:
                loops[c].label = loops[parent].label
                relabelled += 1
        normal = coeffs[:3]
        if np.linalg.norm(normal) <= 1e-12 * max(1.0, abs(coeffs[3])):
            if loops:
                pts = np.concatenate([lp.points for lp in loops])
                sv = np.linalg.svd(pts - pts.mean(axis=0), compute_uv=False)
                if sv[0] == 0 or sv[1] <= RANK_TOL * sv[0]:
                    raise tok.fail(head, f"plane {pid} has no normal (A = B = C = 0) and its vertices are "
                                         "collinear; remove that plane or fix its contours")
                planes.append(Plane.fit(loops, id=pid))
                fitted.append(pid)
            else:
                planes.append(Plane.through([0.0, 0.0, 1.0], [], id=pid))
        else:
            planes.append(Plane.through(normal, loops, offset=float(coeffs[3]), id=pid))
    if tok.pos < len(tok.toks):
        raise tok.fail(tok.pos, f"more data follows the {n_planes} planes the header announces "
                                f"({tok.toks[tok.pos][:20]!r}); fix the plane count in line 2")
    if relabelled:
        notes.append(f"{relabelled} hole contours carried another label than the contour their h marker names; "
                     "they take that contour's label")
    if bad_markers:
        notes.append(f"ignored {len(bad_markers)} h markers naming no other contour of their plane "
                     f"(plane:contour {_ids(bad_markers)})")
    if fitted:
        notes.append(f"planes {_ids(fitted)} give no normal (A = B = C = 0); fitted to their vertices")
    cs = CrossSections(planes, notes, str(path))
    if validate_input:
        try:
            validate(cs)
        except FieldStudioError as err:
            raise FieldStudioError(f"{name}: {err}") from None
    return cs


def _num(x: float) -> str:
    return repr(float(x))  # shortest text that reads back to the same float64


def write_csl(cs: CrossSections, path) -> Path:
    """Write ``cs`` as a CSL file, atomically. Coordinates are written exactly (shortest round-trip text).

    Planes without loops are skipped (OReX's loader rejects them). Holes get ``h<parent>``; the header's
    label count is ``max(label) + 1`` (at least 2, as OReX expects inside/outside).
    """
    planes = [p for p in cs.planes if p.loops]
    labels = cs.labels()
    n_labels = max(2, max(labels) + 1) if labels else 2
    out = ["CSLC", f"{len(planes)} {n_labels}", ""]
    for k, plane in enumerate(planes, 1):
        verts = plane.vertices()
        a, b, c = (float(x) for x in plane.normal)
        d = -float(plane.normal @ plane.origin)
        out.append(f"{k} {len(verts)} {len(plane.loops)} {_num(a)} {_num(b)} {_num(c)} {_num(d)}")
        out.append("")
        out.extend(" ".join(map(repr, row)) for row in verts.tolist())
        out.append("")
        start = 0
        for lp in plane.loops:
            n = len(lp.points)
            marker = f"h{lp.parent}" if lp.is_hole and lp.parent is not None else ""
            out.append(f"{n}{marker} {lp.label} " + " ".join(map(str, range(start, start + n))))
            start += n
        out.append("")
    return atomic_write_text(path, "\n".join(out) + "\n")


def box_frame(cs: CrossSections, extent: float = 0.9) -> BoxFrame:
    """The map to the field box used for meshes too: bounds centred, largest half-side scaled to ``extent``."""
    pts = cs.all_vertices()
    if len(pts) == 0:
        raise FieldStudioError("the cross-sections contain no contour vertices; nothing to normalise")
    return BoxFrame.fit(pts, extent=extent)
