"""slab_prior.py
=============
What neighbouring parallel contours say about the space between them, as labelled training points.

The contours fix the surface only on their planes; between planes a field is free, and its worst case (ends closed
too early beyond the last contour, thin parts pinched or cut short between planes, stray surface far from every
contour) is what Hausdorff measures. Stacking, which extrudes each contour half-way to its neighbours, is never
more than half a spacing off. These points bound the field the same way without its terraces:

* **inside cone**: within half a gap of a plane, a point whose projection lies inside that plane's loops by at least
  twice its height above the plane is inside, so ends and thin parts leaving the plane steeply reach at least that
  far (at most half a gap: stacking's bet). Against the reference meshes of eight_15, eight_20 and hand, 0.2-0.5 %
  of these labels are wrong, all near the surface; a 45-degree cone had 4 % wrong on eight_15's shallow ends;
* **agreement**: a point between two neighbouring planes whose projections are inside both by at least a margin is
  inside; outside both (or outside one with the other plane empty) by at least the margin, outside. The margin,
  ``margin`` x the gap, leaves room for the bulge or waist of a surface curving between the planes (its sagitta
  gap^2 / 8R stays below 0.2 gap while the curvature radius R exceeds 0.63 gaps);
* **caps** (``cap_slope`` below the cone's 2, off by default): above a loop that the next plane no longer shows (a
  part ending between the planes), the inside cone is steeper, so the part reaches nearly half a gap at its rim as
  well. Beyond the outermost planes the ordinary cone stays: a steep cap there is a flat disc on every rounded
  end (eight_15: IoU 0.98 -> 0.90, docs/benchmarks.md "Session 16");
* everything else (where the planes disagree, beyond a cap's half gap) gets no label: the field decides there.

Only planes with a parallel neighbour take part (parallel stacks, orthogonal families, label-map slices); lone
planes at random orientations add nothing. Coordinates are the field box's; labels 0 inside, 1 outside (the
slices task's convention).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fieldstudio.data.cross_sections import CrossSections, Plane, inside_2d

CONE_SLOPE = 2.0  # inside cone: depth in the plane over height above the plane
_PAIRS_PER_CHUNK = 1 << 22  # point-segment pairs per distance chunk (64 MiB of float64 per array)


def signed_distance_2d(plane: Plane, pts2d: np.ndarray) -> np.ndarray:
    """(n,) distance from in-plane points to the plane's loops, negative inside (even-odd rule); +inf when the
    plane has no loops."""
    if not plane.loops:
        return np.full(len(pts2d), np.inf)
    loops = [plane.to_2d(lp.points) for lp in plane.loops]
    a = np.concatenate(loops)
    b = np.concatenate([np.roll(lp, -1, axis=0) for lp in loops])
    ab = b - a
    ab2 = np.maximum((ab * ab).sum(axis=1), 1e-24)
    dist = np.empty(len(pts2d))
    rows = max(1, _PAIRS_PER_CHUNK // len(a))
    for s in range(0, len(pts2d), rows):
        p = pts2d[s:s + rows, None, :]
        t = np.clip(((p - a) * ab).sum(axis=2) / ab2, 0.0, 1.0)
        d = p - (a + t[..., None] * ab)
        dist[s:s + rows] = np.sqrt((d * d).sum(axis=2).min(axis=1))
    return np.where(inside_2d(plane, pts2d), -dist, dist)


def parallel_stacks(cs: CrossSections) -> list[tuple[np.ndarray, list[Plane]]]:
    """Planes grouped by normal (up to sign, 1e-4), each group sorted along its unit normal."""
    stacks: dict[tuple, list[Plane]] = {}
    for p in cs.planes:
        n = p.normal if p.normal[int(np.argmax(np.abs(p.normal)))] > 0 else -p.normal
        stacks.setdefault(tuple(np.round(n, 4)), []).append(p)
    out = []
    for key, planes in stacks.items():
        n = np.asarray(key) / np.linalg.norm(key)
        out.append((n, sorted(planes, key=lambda p: float(n @ p.origin))))
    return out


def _positions(planes: list[Plane], frame: Plane, pad: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) points in ``frame``'s (u, v) coordinates around the loops of ``planes``: half uniform over their
    padded bounding rectangle, half jittered contour vertices (where the labels change)."""
    verts = np.concatenate([frame.to_2d(p.vertices()) for p in planes if p.loops])
    lo, hi = verts.min(axis=0) - pad, verts.max(axis=0) + pad
    n_box = n // 2
    box = rng.uniform(lo, hi, size=(n_box, 2))
    near = verts[rng.integers(len(verts), size=n - n_box)] + rng.normal(scale=pad / 2, size=(n - n_box, 2))
    return np.concatenate([box, near])


def ending_loops(a: Plane, b: Plane) -> list:
    """The loops of ``a`` that ``b`` no longer shows: no vertex of the loop projects inside ``b``'s loops and no
    vertex of ``b`` lies inside the loop (a part that ends between the planes; a part that only shrinks is not one)."""
    b_verts = a.to_2d(b.vertices()) if b.loops else np.zeros((0, 2))
    out = []
    for loop in a.loops:
        if b.loops and (inside_2d(b, b.to_2d(loop.points)).any()
                        or inside_2d(replace(a, loops=[loop]), b_verts).any()):
            continue
        out.append(loop)
    return out


def _in_ending_loops(a: Plane, b: Plane, q: np.ndarray) -> np.ndarray:
    """(n,) whether in-plane points ``q`` of ``a`` lie inside one of ``a``'s ``ending_loops`` towards ``b``."""
    out = np.zeros(len(q), dtype=bool)
    for loop in ending_loops(a, b):
        out |= inside_2d(replace(a, loops=[loop]), q)
    return out


def _label_gap(a: Plane, b: Plane | None, normal: np.ndarray, gap: float, margin: float, n: int,
               rng: np.random.Generator, cap_slope: float = CONE_SLOPE) -> tuple[np.ndarray, np.ndarray]:
    """Labelled points between plane ``a`` and its neighbour ``b`` one ``gap`` further along ``normal`` (``b``
    None: beyond the last plane of a stack, where only ``a``'s inside cone speaks, up to half a gap)."""
    q = _positions([p for p in (a, b) if p is not None], a, gap, n, rng)
    t = rng.uniform(0.0, 1.0 if b is not None else 0.5, size=n)
    pts = a.to_3d(q) + np.outer(t * gap, normal)
    h_a = t * gap
    d_a = signed_distance_2d(a, q)
    inside = (h_a <= gap / 2) & (-d_a >= CONE_SLOPE * h_a)
    outside = np.zeros(n, dtype=bool)
    if b is not None:
        h_b = gap - h_a
        d_b = signed_distance_2d(b, b.to_2d(pts))
        m = margin * gap
        inside |= (h_b <= gap / 2) & (-d_b >= CONE_SLOPE * h_b)
        # caps: a part that the next plane no longer shows ends somewhere in the gap; half-way is the bet that
        # bounds the error by half a gap (stacking's), so its cone is steeper there
        if cap_slope < CONE_SLOPE:
            inside |= (h_a <= gap / 2) & (-d_a >= cap_slope * h_a) & _in_ending_loops(a, b, q)
            inside |= (h_b <= gap / 2) & (-d_b >= cap_slope * h_b) & _in_ending_loops(b, a, b.to_2d(pts))
        inside |= (-d_a >= m) & (-d_b >= m)
        outside = (d_a >= m) & (d_b >= m)  # an empty plane is outside everywhere (+inf)
        # Outside cones, the inside cones' mirror: near a plane, far enough outside its loops (an empty plane:
        # anywhere within half a gap of it), so a cap between a plane with the part and one without ends by
        # half-way, and a wall leaving a plane steeply does not bulge out right beside it.
        outside |= (h_a <= gap / 2) & (d_a >= CONE_SLOPE * h_a)
        outside |= (h_b <= gap / 2) & (d_b >= CONE_SLOPE * h_b)
        if not a.loops or not b.loops:
            outside &= np.isfinite(np.minimum(d_a, d_b))  # two empty planes: nothing to say
    keep = (inside | outside) & (np.abs(pts).max(axis=1) <= 1.0)
    return pts[keep], np.where(inside[keep], 0.0, 1.0)


def slab_prior(cs: CrossSections, rng: np.random.Generator, points_per_gap: int = 4096,
               max_points: int = 262_144, margin: float = 0.2,
               cap_slope: float = CONE_SLOPE) -> tuple[np.ndarray, np.ndarray]:
    """Labelled points (m, 3) and targets (m,) between neighbouring parallel planes of ``cs`` (box frame) and
    half a gap beyond the outermost planes with contours. Empty when no two planes are parallel."""
    gaps = []
    for normal, planes in parallel_stacks(cs):
        offsets = np.array([normal @ p.origin for p in planes])
        steps = np.diff(offsets)
        typical = float(np.median(steps[steps > 0])) if (steps > 0).any() else 0.0
        for a, b, g in zip(planes, planes[1:], steps):
            if g > 0 and (a.loops or b.loops):
                gaps.append((a, b, normal, float(g)))
        if typical > 0:
            if planes[0].loops:
                gaps.append((planes[0], None, -normal, typical))
            if planes[-1].loops:
                gaps.append((planes[-1], None, normal, typical))
    if not gaps:
        return np.zeros((0, 3)), np.zeros(0)
    n = max(64, min(points_per_gap, max_points // len(gaps)))
    parts = [_label_gap(a, b, normal, g, margin, n, rng, cap_slope) for a, b, normal, g in gaps]
    return np.concatenate([p for p, _ in parts]), np.concatenate([y for _, y in parts])


__all__ = ["slab_prior", "signed_distance_2d", "parallel_stacks", "ending_loops"]
