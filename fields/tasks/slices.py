"""slices.py
=========
Occupancy from planar cross-sections (the OReX problem): in/out is known only on a few planes.

Frame: samples live in the field box [-1, 1]^3 (``box_frame`` of the contours, largest half-extent 0.9).
Output convention (as OReX): the field is the logit of OUTSIDE, so it is negative inside and the surface is
its zero level, like an SDF; targets are 1 outside, 0 inside, 0.5 exactly on a contour edge.

Sampling follows OReX's hierarchy (orex.md 2.4): per level, points offset by +-r across every contour edge and
on circles of radius r around every vertex (labelled by the even-odd rule of the plane's loops, so holes and
islands in holes are right), the edge points themselves (0.5), uniform "white noise" on each plane, and points
on the convex hull of all contours scaled by 1 + margin (outside). Training walks the levels coarse to fine
and mixes the last ``window`` levels. Beyond OReX, with ``prior_weight`` > 0 (off by default: no gain measured, see
docs/benchmarks.md "Session 9") a share of every batch comes from the slab prior (tasks/slab_prior.py): points
between neighbouring parallel planes labelled where the contours on both sides agree, and inside and outside cones
near each plane. With ``loop_core_points`` > 0 (off by default) every loop, however small, also gets that many
points in the lens its contour implies (``loop_cores``).
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from scipy.spatial import ConvexHull

from fieldstudio.config import SlicesTaskConfig
from fieldstudio.control import check_cancel
from fieldstudio.data.cross_sections import CrossSections, Plane, box_frame, inside_2d
from fieldstudio.errors import FieldStudioError
from fieldstudio.field import value_and_gradient
from fieldstudio.tasks.slab_prior import CONE_SLOPE, parallel_stacks, signed_distance_2d, slab_prior


SIGMA_SPACING = 0.075  # Fourier sigma x plane spacing (box units), see fourier_sigma


def to_box(cs: CrossSections, frame) -> CrossSections:
    """The same cross-sections with every coordinate mapped into the field box (uniform map: bases unchanged)."""
    planes = []
    for p in cs.planes:
        loops = [lp.copy(points=frame.to_box(lp.points)) for lp in p.loops]
        planes.append(Plane(frame.to_box(p.origin[None])[0], p.normal, p.u, p.v, loops, p.id))
    return CrossSections(planes, list(cs.notes), cs.source)


def loop_samples(plane: Plane, radius: float, n: int, rng: np.random.Generator):
    """OReX's samples around each loop of ``plane``, in its (u, v) frame, one tuple per loop: ``n`` points per edge
    on the edge, the same offset by +radius and -radius along the edge's normal, and ``n`` points on a circle of
    ``radius`` around each vertex (one random phase per loop)."""
    for loop in plane.loops:
        q = plane.to_2d(loop.points)
        edge = np.roll(q, -1, axis=0) - q
        length = np.linalg.norm(edge, axis=1, keepdims=True)
        normal = np.stack([-edge[:, 1], edge[:, 0]], axis=1) / np.maximum(length, 1e-12)
        t = (np.arange(n) / n)[None, :, None]
        on_edge = (q[:, None] + t * edge[:, None]).reshape(-1, 2)
        nrm = np.repeat(normal, n, axis=0)
        ang = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n) / n
        circle = np.stack([np.cos(ang), np.sin(ang)], axis=1) * radius
        yield on_edge, on_edge + radius * nrm, on_edge - radius * nrm, (q[:, None] + circle[None]).reshape(-1, 2)


def plane_noise(plane: Plane, n_noise: int, rng: np.random.Generator) -> np.ndarray:
    """``n_noise`` uniform (u, v) points within 1 of the centre of the plane's contours (of the origin without any)."""
    verts = plane.vertices()
    centre = plane.to_2d(verts.mean(axis=0, keepdims=True) if len(verts) else np.zeros((1, 3)))[0]
    return centre + rng.uniform(-1.0, 1.0, size=(n_noise, 2))


def loop_cores(plane: Plane, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points per loop of ``plane`` (box frame, however small the loop) in the lens its contour implies:
    uniform within the loop in the plane, lifted off it by up to half their distance to the contour (the slab
    prior's cone, tasks/slab_prior.py), labelled by the plane's even-odd rule (a hole's core is outside).

    Sampling the contours' edges alone leaves a small loop a few hundred of a level's ~60k points, and the
    field may then fit it as a sheet on the plane, thinner than a marching-cubes cell: the mesh loses that part
    (bunny, 10 random planes: a loop of 0.004 units^2 missing, Hausdorff 0.23)."""
    pts, ys = [np.zeros((0, 3))], [np.zeros(0)]
    for loop in plane.loops:
        q = plane.to_2d(loop.points)
        lo, hi = q.min(axis=0), q.max(axis=0)
        cand = rng.uniform(lo, hi, size=(4 * n, 2))
        core = cand[inside_2d(plane.copy(loops=[loop]), cand)][:n]
        d = signed_distance_2d(plane, core)
        h = rng.uniform(-1.0, 1.0, size=len(core)) * np.abs(d) / CONE_SLOPE
        pts.append(plane.to_3d(core) + np.outer(h, plane.normal))
        ys.append(np.where(d < 0, 0.0, 1.0))
    return np.concatenate(pts), np.concatenate(ys)


def _plane_level_samples(plane: Plane, radius: float, n: int, n_noise: int,
                         rng: np.random.Generator, n_core: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(m, 3) box points on ``plane`` and their targets (1 outside, 0 inside, 0.5 on an edge)."""
    pts2d, fixed = [], []
    for on_edge, plus, minus, circle in loop_samples(plane, radius, n, rng):
        pts2d += [plus, minus, circle]
        fixed.append(on_edge)
    # A plane without loops (of the selected label) says the shape is absent there: noise only, all outside.
    pts2d.append(plane_noise(plane, n_noise, rng))
    free = np.concatenate(pts2d)
    labels = np.where(inside_2d(plane, free), 0.0, 1.0)
    edges = np.concatenate(fixed) if fixed else np.zeros((0, 2))
    pts = np.concatenate([plane.to_3d(free), plane.to_3d(edges)])
    y = np.concatenate([labels, np.full(len(edges), 0.5)])
    if n_core:
        core, core_y = loop_cores(plane, n_core, rng)
        pts, y = np.concatenate([pts, core]), np.concatenate([y, core_y])
    keep = np.abs(pts).max(axis=1) <= 1.0
    return pts[keep], y[keep]


def plane_spacing(cs: CrossSections) -> float | None:
    """How far apart the planes sample the shape: the median gap between neighbouring parallel planes, with
    several families of parallel planes combined as densities (three orthogonal families of gap g act like one
    of gap g / 3). None when no two planes are parallel."""
    density = 0.0
    for n, planes in parallel_stacks(cs):
        gaps = [float(n @ (b.origin - a.origin)) for a, b in zip(planes, planes[1:])]
        if gaps and np.median(gaps) > 0:
            density += 1.0 / float(np.median(gaps))
    return 1.0 / density if density > 0 else None


def fourier_sigma(cs_box: CrossSections, default: float = 1.0) -> float:
    """Bandwidth of the Fourier features for cross-sections in the field box: inversely proportional to the plane
    spacing, so the field cannot hold detail finer than the planes sample, and at most ``default``.

    Between planes only the prior shapes the surface; frequencies the planes cannot pin down make the surface
    sag or bulge there. On heart.nii.gz (docs/benchmarks.md) sigma 1 was best with planes 6 mm apart (0.075 box
    units) and 0.5-0.7 at 12 mm: SIGMA_SPACING = sigma x spacing = 0.075.
    """
    spacing = plane_spacing(cs_box)
    if spacing is None or spacing <= 0:
        return default
    return float(np.clip(SIGMA_SPACING / spacing, 0.25, default))


def _onto_empty_neighbours(cs: CrossSections) -> list[np.ndarray]:
    """Contour vertices projected onto the empty planes next to their plane (same normal, nearest offset).

    An empty plane beside the last contour plane (label maps keep them) bounds the shape's cap: the hull must
    reach it, or its outside points would cut the cap off right behind the last contour (a 5 % volume loss on
    an ellipsoid sliced every 2.5 mm).
    """
    out = []
    for n, planes in parallel_stacks(cs):
        for a, b in zip(planes, planes[1:]):
            for full, empty in ((a, b), (b, a)):
                if full.loops and not empty.loops:
                    v = full.vertices()
                    out.append(v + np.outer(n @ (empty.origin - full.origin), n))
    return out


class PaddedHull:
    """The convex hull of all contours scaled by (1 + margin) about their centroid: nothing is inside beyond it.

    Built once per task (a hull of many contour vertices costs seconds); ``samples`` draws each level's points.
    """

    def __init__(self, cs: CrossSections, margin: float):
        verts = np.concatenate([cs.all_vertices()] + _onto_empty_neighbours(cs))
        try:
            hull = ConvexHull(verts)
        except Exception:
            raise FieldStudioError("the contours span no volume (all on one plane?); give planes at several "
                                   "positions or orientations") from None
        self.mesh = trimesh.Trimesh(verts, hull.simplices, process=True)
        self.centre = verts.mean(axis=0)
        self.margin = margin
        self.equations = hull.equations  # unit outward normals n and offsets d: inside iff n.x + d <= 0

    def outside(self, points: np.ndarray) -> np.ndarray:
        """(n,) bool: points beyond the padded hull (tested as the unscaled point against the hull's faces)."""
        q = self.centre + (points - self.centre) / (1.0 + self.margin)
        out = np.zeros(len(q), dtype=bool)
        for s in range(0, len(q), 4096):
            out[s:s + 4096] = (q[s:s + 4096] @ self.equations[:, :3].T + self.equations[:, 3] > 1e-9).any(axis=1)
        return out

    def samples(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Outside points: n on the padded hull, plus those of n uniform box points beyond it. Returns (m, 3)."""
        pts, _ = trimesh.sample.sample_surface(self.mesh, n, seed=int(rng.integers(2**31)))
        # Beyond the padded hull nothing can be inside: uniform box points there keep the corners of the box
        # from growing stray surface (seen on a 12-plane torus without them).
        box = rng.uniform(-1.0, 1.0, size=(n, 3))
        on_hull = np.clip(self.centre + (1.0 + self.margin) * (pts - self.centre), -1.0, 1.0)
        return np.concatenate([on_hull, box[self.outside(box)]])


class SlicesTask:
    """Fit an occupancy logit to cross-sections given in their world frame."""

    name = "slices"

    def __init__(self, cs: CrossSections, cfg: SlicesTaskConfig, seed: int = 0):
        if sum(bool(p.loops) for p in cs.planes) < 2:
            raise FieldStudioError("a single plane cannot define a volume; give at least two planes")
        self.cfg = cfg
        self.frame = box_frame(cs, extent=0.9)
        self.cs = to_box(cs, self.frame)
        rng = np.random.default_rng(seed)
        padded_hull = PaddedHull(self.cs, cfg.hull_margin)
        self.levels = []
        for exp, n in zip(cfg.radius_exponents, cfg.samples_per_edge):
            check_cancel()  # a level of a many-plane input (Abdomen: 1,130 contours) takes seconds
            parts = [_plane_level_samples(p, 0.5**exp, n, cfg.white_noise, rng, cfg.loop_core_points)
                     for p in self.cs.planes]
            hull = padded_hull.samples(cfg.hull_points, rng)
            x = np.concatenate([p for p, _ in parts] + [hull])
            y = np.concatenate([t for _, t in parts] + [np.ones(len(hull))])
            self.levels.append((torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))))
        if cfg.prior_weight > 0:
            px, py = slab_prior(self.cs, rng, margin=cfg.prior_margin, cap_slope=cfg.prior_cap_slope)
        else:
            px, py = np.zeros((0, 3)), np.zeros(0)
        self.prior = (torch.from_numpy(px.astype(np.float32)), torch.from_numpy(py.astype(np.float32)))
        weights = np.asarray(cfg.level_weights, dtype=np.float64)
        self.level_ends = np.cumsum(weights) / weights.sum()
        self.neighbours = None

    def level_at(self, progress: float) -> int:
        return int(min(np.searchsorted(self.level_ends, progress, side="right"), len(self.levels) - 1))

    def init_field(self, field, seed: int) -> None:
        """RBF centres by k-means over the contour samples (edge points weighted most, as they carry the shape)."""
        if not field.needs_points:
            return
        x, y = self.levels[-1]
        weights = torch.where(y == 0.5, 4.0, 1.0)
        field.init_from_points(x, weights, seed=seed)

    def attach(self, field) -> None:
        self.neighbours = None
        if field.needs_points:
            pools = self.levels + ([self.prior] if len(self.prior[0]) else [])
            self.neighbours = [field.neighbours(x).to(torch.int32) for x, _ in pools]

    def window(self, progress: float) -> tuple[int, list[int]]:
        """The level reached at ``progress`` and the levels mixed there (the last ``cfg.window`` of them)."""
        top = self.level_at(progress)
        return top, list(range(max(0, top - self.cfg.window + 1), top + 1))

    def batch(self, step: int, batch_size: int, generator: torch.Generator, progress: float = 0.0) -> dict:
        top, used = self.window(progress)
        n_prior = len(self.prior[0])
        m_prior = int(round(batch_size * self.cfg.prior_fraction)) if n_prior else 0
        sizes = torch.tensor([len(self.levels[i][0]) for i in used], dtype=torch.float64)
        which = torch.multinomial(sizes / sizes.sum(), batch_size - m_prior, replacement=True, generator=generator)
        xs, ys, idx = [], [], []
        for k, lvl in enumerate(used):
            m = int((which == k).sum())
            pick = torch.randint(len(self.levels[lvl][0]), (m,), generator=generator)
            xs.append(self.levels[lvl][0][pick])
            ys.append(self.levels[lvl][1][pick])
            if self.neighbours is not None:
                idx.append(self.neighbours[lvl][pick].long())
        if m_prior:
            pick = torch.randint(n_prior, (m_prior,), generator=generator)
            xs.append(self.prior[0][pick])
            ys.append(self.prior[1][pick])
            if self.neighbours is not None:
                idx.append(self.neighbours[-1][pick].long())
        batch = {"x": torch.cat(xs), "y": torch.cat(ys), "level": top, "prior": m_prior}
        if idx:
            batch["rbf_idx"] = torch.cat(idx)
        return batch

    def loss(self, field, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        y, x, idx = batch["y"], batch["x"], batch.get("rbf_idx")
        # OReX's anti-ripple hinge needs the spatial gradient, a double backward pass: over the whole batch it made
        # a step 2.9x slower (hand.csl, 16,384 points: 134 ms against 46 without the term), so its mean is estimated
        # on the first hinge_points of the (random) batch, evaluated apart from the rest.
        n = min(self.cfg.hinge_points, len(y)) if self.cfg.hinge_weight > 0 else 0
        logits, grad = value_and_gradient(field, x[:n], None if idx is None else idx[:n], True) if n else ([], None)
        if n < len(y):
            rest, _ = value_and_gradient(field, x[n:], None if idx is None else idx[n:], False)
            logits = [torch.cat([a, b]) for a, b in zip(logits, rest)] if n else rest
        # Deep supervision (OReX): every refinement iteration is pulled to the labels, equally weighted. The last
        # batch["prior"] points are the slab prior's, weighted apart.
        m = batch.get("prior", 0)
        w = None
        if m:
            w = torch.ones_like(y)
            w[-m:] = self.cfg.prior_weight
        bce = sum(torch.nn.functional.binary_cross_entropy_with_logits(v, y, weight=w) for v in logits) / len(logits)
        loss, scalars = bce, {"bce": bce.item(), "level": batch["level"]}
        if n:
            # Penalise only the part of |grad logit| above alpha.
            excess = (grad.norm(dim=-1) - self.cfg.hinge_alpha).clamp_min(0.0).mean()
            loss = loss + self.cfg.hinge_weight * excess
            scalars["grad_excess"] = excess.item()
        return loss, scalars


def refine_vertices(fn, vertices: np.ndarray, max_step: float, iterations: int = 2) -> np.ndarray:
    """Move (V, 3) box vertices onto the zero level of ``fn`` with Newton steps along the gradient.

    Each step is clamped to ``max_step`` (half a grid cell), so a vertex never jumps to another sheet.
    """
    v = torch.from_numpy(vertices.astype(np.float32))
    for _ in range(iterations):
        out = []
        for chunk in torch.split(v, 2**16):
            check_cancel()
            x = chunk.clone().requires_grad_(True)
            f = fn(x)
            (g,) = torch.autograd.grad(f.sum(), x)
            step = (f.detach() / g.pow(2).sum(-1).clamp_min(1e-12))[:, None] * g
            norm = step.norm(dim=-1, keepdim=True)
            step = step * (max_step / norm.clamp_min(max_step))
            out.append((chunk - step).detach())
        v = torch.cat(out)
    refined = v.numpy().astype(np.float64)
    # Two marching-cubes vertices near one grid corner can be pulled onto the same surface point; a mesh
    # tool that merges coincident vertices would then see a non-manifold edge. Keep those where they were.
    key = np.round(refined / (max_step * 1e-3)).astype(np.int64)
    _, first, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    clash = counts[first.reshape(-1)] > 1
    refined[clash] = vertices[clash]
    return refined


__all__ = ["SlicesTask", "PaddedHull", "refine_vertices", "to_box"]
