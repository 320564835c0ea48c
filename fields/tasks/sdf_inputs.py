"""sdf_inputs.py
=============
Signed distance fields as inputs of the ``sdf`` task: a dense grid (.npy, .npz, float NIfTI) or scattered samples
(.npz with points) become a pool of points with known signed distances (``SDFSamples``), fitted without any mesh.
The result is meshed in the input's own frame and scored against the input's samples, and against a reference
mesh when one is given (``[sdf] reference``, ``--reference``).

Sign: negative inside, positive outside. Units: the input's (NIfTI: mm; .npy: voxels); see
``fieldstudio.data.sdf_readers`` for the formats. Frame: ``BoxFrame.fit`` of the input's positions (a grid's
corner voxels, the samples); distances scale with it (``sdf * frame.scale`` box units).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fieldstudio.config import SDFTaskConfig
from fieldstudio.control import check_cancel
from fieldstudio.data.meshes import BoxFrame
from fieldstudio.data.sdf_readers import SLAB, SDFGrid, SDFPoints, check_grid, read_sdf
from fieldstudio.tasks.spec import Prepared

BAND_VOXELS = 2.0      # "near the zero level": |sdf| below this many voxels, or a sign change to a neighbour
JITTER_VOXELS = 1.0    # extra points: uniform within this many voxels (per axis) of a near voxel's centre
SCORE_SAMPLES = 100_000  # input samples per score (distance to the mesh, inside/outside)
INTERP_CHUNK = 1 << 20
BACKGROUND_GAP = 3.0   # samples: box points farther than this many sample spacings from every sample get a value


@dataclass
class Pool:
    """A training pool in the box frame (float32) with what scoring and the report need."""

    frame: BoxFrame
    points: np.ndarray
    sdf: np.ndarray
    surface: np.ndarray
    checks: dict = field(default_factory=dict)  # world-frame input samples for scoring (see ``score``)
    report: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ build / score

def build(cfg) -> Prepared:
    """Read the SDF input of ``cfg``, build its pool and the training task (``SDFSamples``)."""
    from fieldstudio.tasks.sdf import SDFSamples

    data = read_sdf(cfg.input, cfg.sdf.flip_sign)
    check_cancel()
    pool = grid_pool(data, cfg.sdf, cfg.train.seed) if isinstance(data, SDFGrid) \
        else samples_pool(data, cfg.sdf, cfg.train.seed)
    del data  # a large grid is not kept while training
    task = SDFSamples(torch.from_numpy(pool.points), torch.from_numpy(pool.sdf), cfg.sdf, pool.frame)
    task.checks = pool.checks
    reference = None
    if cfg.sdf.reference:
        from fieldstudio.data.meshes import load_mesh
        from fieldstudio.mesh import transform_mesh

        ref, ref_report = load_mesh(cfg.sdf.reference)
        reference = transform_mesh(ref, np.linalg.inv(pool.frame.to_world_matrix()))
        pool.report["reference"] = {"file": cfg.sdf.reference, "watertight": ref_report["watertight"]}
    return Prepared(task, pool.frame, reference, pool.report, surface=torch.from_numpy(pool.surface))


def score(cfg, mesh, prepared: Prepared, run_dir) -> tuple[dict, dict]:
    """Scores of ``mesh`` (in the input's world frame) against the input's samples:

    * ``sample_l1``: mean of | distance to the mesh - |sdf| | over the input's samples near the zero level, in the
      input's units; ``sample_l1_rel``: the same over the diagonal of those samples' bounding box; ``sample_p99``:
      its 99th percentile (input units);
    * ``sign_agreement``: share of the samples farther than one voxel (grids) or sample spacing (samples) from the
      zero level whose side of the mesh (ray-parity occupancy) matches their sign;
    * with a reference mesh, ``mesh_metrics`` against it (IoU, Chamfer-L1, ...; distances over its diagonal).
    """
    from fieldstudio.metrics import distances_to, inside_mesh, mesh_metrics

    c = prepared.task.checks
    out: dict = {"sample_units": c["units"]}
    check_cancel()
    if len(c["near_points"]):
        err = np.abs(distances_to(c["near_points"], mesh) - np.abs(c["near_sdf"]))
        out.update({"sample_l1": float(err.mean()), "sample_l1_rel": float(err.mean() / c["diagonal"]),
                    "sample_p99": float(np.percentile(err, 99)), "scored_near_samples": len(err)})
    check_cancel()
    if len(c["far_points"]):
        agree = inside_mesh(c["far_points"], mesh) == (c["far_sdf"] < 0)
        out.update({"sign_agreement": float(agree.mean()), "scored_far_samples": len(agree)})
    if prepared.reference is not None:
        from fieldstudio.mesh import transform_mesh

        check_cancel()
        box_mesh = transform_mesh(mesh, np.linalg.inv(prepared.frame.to_world_matrix()))
        out.update(mesh_metrics(box_mesh, prepared.reference, seed=cfg.train.seed))
    return out, {}


def input_mesh(path, flip_sign: bool = False):
    """What an SDF-task input looks like as a surface in its world frame: the mesh itself, the zero level of a
    grid, or None for scattered samples."""
    from fieldstudio.data.meshes import MESH_SUFFIXES, load_mesh
    from fieldstudio.tasks.spec import suffix_of

    if suffix_of(path) in MESH_SUFFIXES:
        return load_mesh(path)[0]
    return input_surface(path, flip_sign)


def input_surface(path, flip_sign: bool = False):
    """The zero level of an SDF grid input as a trimesh in its world frame (marching cubes of the grid itself: to
    show the input, or to colour a result by its distance to it); None for scattered samples."""
    from fieldstudio.mesh import marching_cubes, transform_mesh

    data = read_sdf(path, flip_sign)
    if not isinstance(data, SDFGrid):
        return None
    mesh = marching_cubes(data.values, 0.0, bounds=[(0.0, float(n - 1)) for n in data.values.shape])
    return transform_mesh(mesh, data.affine)


# ------------------------------------------------------------------------------------------------ grids

def near_voxels(values: np.ndarray, band: float) -> np.ndarray:
    """(m, 3) int32 indices of the voxels near the zero level: |value| < ``band``, or a sign change to a face
    neighbour. Scanned in slabs along the first axis (bounded temporaries, booleans only)."""
    nx, ny, nz = values.shape
    step = max(1, SLAB // max(1, ny * nz))
    out = []
    for i0 in range(0, nx, step):
        i1 = min(nx, i0 + step)
        lo, hi = max(0, i0 - 1), min(nx, i1 + 1)
        s = values[lo:hi]
        near = (s > -band) & (s < band)
        neg = s < 0
        for axis in range(3):
            a = [slice(None)] * 3
            b = [slice(None)] * 3
            a[axis], b[axis] = slice(1, None), slice(None, -1)
            change = neg[tuple(a)] != neg[tuple(b)]
            near[tuple(a)] |= change
            near[tuple(b)] |= change
        idx = np.argwhere(near[i0 - lo:i0 - lo + (i1 - i0)]).astype(np.int32)
        idx[:, 0] += i0
        out.append(idx)
        check_cancel()
    return np.concatenate(out) if out else np.zeros((0, 3), np.int32)


def _interpolator(values: np.ndarray):
    """Trilinear interpolation in index space (no copy of the grid)."""
    from scipy.interpolate import RegularGridInterpolator

    axes = [np.arange(n, dtype=np.float64) for n in values.shape]
    return RegularGridInterpolator(axes, values, bounds_error=False, fill_value=None)


def _interpolate(rgi, ijk: np.ndarray) -> np.ndarray:
    out = np.empty(len(ijk), np.float32)
    for s in range(0, len(ijk), INTERP_CHUNK):
        out[s:s + INTERP_CHUNK] = rgi(ijk[s:s + INTERP_CHUNK])
        check_cancel()
    return out


def _gradient_norm(grid: SDFGrid, near: np.ndarray, rng: np.random.Generator) -> float | None:
    """Median |grad sdf| (world units) at up to 5000 near voxels: about 1 for a true distance field."""
    n = np.array(grid.values.shape)
    inner = near[np.all((near > 0) & (near < n - 1), axis=1)]
    if not len(inner):
        return None
    pick = inner[rng.choice(len(inner), size=min(5000, len(inner)), replace=False)].astype(np.int64)
    g = np.empty((len(pick), 3))
    for a in range(3):
        e = np.zeros(3, np.int64)
        e[a] = 1
        hi, lo = pick + e, pick - e
        g[:, a] = (grid.values[hi[:, 0], hi[:, 1], hi[:, 2]].astype(np.float64)
                   - grid.values[lo[:, 0], lo[:, 1], lo[:, 2]]) / 2.0
    world = g @ np.linalg.inv(grid.affine[:3, :3])  # d/dx_world = (d/d index) . d index/d world
    return float(np.median(np.linalg.norm(world, axis=1)))


def _box_points(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniform points of the box [-1, 1]^3, a quarter of them on its faces, where meshing evaluates the field
    too: a hash grid's finest levels are trained there only by the few points within a cell of the face (without
    them, small fields made sheets of surface on the faces)."""
    box = rng.uniform(-1.0, 1.0, (n, 3))
    face = np.flatnonzero(rng.random(n) < 0.25)
    box[face, rng.integers(0, 3, len(face))] = rng.choice([-1.0, 1.0], len(face))
    return box


def _outside_share(grid: SDFGrid, frame: BoxFrame, rng: np.random.Generator) -> float:
    """Share of the box outside the grid's voxel centres' box (estimated on 20,000 random points)."""
    box = rng.uniform(-1.0, 1.0, (20_000, 3))
    ijk = grid.to_index(box / frame.scale + np.asarray(frame.center))
    return float(np.any((ijk < 0) | (ijk > np.array(grid.values.shape) - 1), axis=1).mean())


def _outside_points(grid: SDFGrid, frame: BoxFrame, n: int, rng: np.random.Generator):
    """Up to ``n`` box points outside the grid's voxel centres' box (``_box_points``): (box points, their grid
    indices)."""
    shape = np.array(grid.values.shape)
    boxes, indices, have = [np.zeros((0, 3))], [np.zeros((0, 3))], 0
    for _ in range(20):  # rounds: the region around the grid may be a small share of the box
        if have >= n:
            break
        box = _box_points(max(n, 1000), rng)
        ijk = grid.to_index(box / frame.scale + np.asarray(frame.center))
        outside = np.any((ijk < 0) | (ijk > shape - 1), axis=1)
        boxes.append(box[outside])
        indices.append(ijk[outside])
        have += int(outside.sum())
    return np.concatenate(boxes)[:n], np.concatenate(indices)[:n]


def grid_pool(grid: SDFGrid, cfg: SDFTaskConfig, seed: int = 0) -> Pool:
    """The pool of a dense grid: voxel centres with their values (all of them when there are at most
    ``pool_size``; else the near ones, up to half the pool, and random far ones), ``pool_size`` points jittered
    around near voxels with trilinear values, and points of the box outside the grid (as dense as the voxel
    samples; at least ``uniform_fraction`` of the pool, at most half of it) valued ``sdf(nearest grid point) +
    distance to it`` (the field must not make surfaces where the grid has no data)."""
    rng = np.random.default_rng(seed)
    v = grid.values
    shape = np.array(v.shape)
    spacing = grid.spacing
    voxel = float(spacing.max())
    frame = BoxFrame.fit(grid.corners(), cfg.normalize_extent)
    notes = list(grid.notes)

    near = near_voxels(v, BAND_VOXELS * voxel)
    if len(near) > 8 * cfg.pool_size:  # bounded memory on very large grids
        near = near[rng.choice(len(near), size=8 * cfg.pool_size, replace=False)]
    # Voxel centres.
    if v.size <= cfg.pool_size:
        centres = np.indices(v.shape, dtype=np.int32).reshape(3, -1).T
    else:
        keep = min(len(near), cfg.pool_size // 2)
        far = np.column_stack(np.unravel_index(rng.integers(0, v.size, cfg.pool_size - keep), v.shape))
        centres = np.concatenate([near[rng.choice(len(near), size=keep, replace=False)], far.astype(np.int32)])
        notes.append(f"{v.size:,} voxels: {keep:,} near the zero level and {len(far):,} others at random are used "
                     "as voxel samples")
    centre_values = v[centres[:, 0], centres[:, 1], centres[:, 2]].astype(np.float32)
    check_cancel()
    # Jittered points near the zero level, trilinear values.
    rgi = _interpolator(v)
    base = near[rng.integers(0, len(near), cfg.pool_size)].astype(np.float64)
    jitter = np.clip(base + rng.uniform(-JITTER_VOXELS, JITTER_VOXELS, base.shape), 0, shape - 1)
    jitter_values = _interpolate(rgi, jitter)
    # Box points outside the grid, as dense as the voxel samples inside it (at least uniform_fraction of the pool,
    # at most half of it): with fewer, small networks made sheets of surface on the box's faces there.
    outside_share = _outside_share(grid, frame, rng)
    n_out = int(round(len(centres) * outside_share / max(1.0 - outside_share, 1e-3)))
    n_out = int(np.clip(n_out, cfg.pool_size * cfg.uniform_fraction, cfg.pool_size // 2)) if outside_share else 0
    box, ijk = _outside_points(grid, frame, n_out, rng)
    world = box / frame.scale + np.asarray(frame.center)
    q = np.clip(ijk, 0, shape - 1)
    out_values = _interpolate(rgi, q) + np.linalg.norm(world - grid.to_world(q), axis=1).astype(np.float32)
    check_cancel()

    to_box = frame.scale
    points = np.concatenate([frame.to_box(grid.to_world(centres)), frame.to_box(grid.to_world(jitter)),
                             box]).astype(np.float32)
    sdf = (np.concatenate([centre_values, jitter_values, out_values]) * to_box).astype(np.float32)
    on = np.abs(jitter_values) < 0.5 * voxel
    surface = frame.to_box(grid.to_world(jitter[on][:100_000])).astype(np.float32)

    # Input samples to score against (world frame).
    near_pick = near[rng.choice(len(near), size=min(SCORE_SAMPLES, len(near)), replace=False)]
    near_world = grid.to_world(near_pick)
    cand = np.column_stack(np.unravel_index(rng.integers(0, v.size, 4 * SCORE_SAMPLES), v.shape))
    cand_values = v[cand[:, 0], cand[:, 1], cand[:, 2]]
    clear = np.abs(cand_values) > voxel
    far_pick = cand[clear][:SCORE_SAMPLES]
    lo, hi = near_world.min(axis=0), near_world.max(axis=0)
    checks = {"near_points": near_world, "near_sdf": v[near_pick[:, 0], near_pick[:, 1], near_pick[:, 2]]
              .astype(np.float64), "far_points": grid.to_world(far_pick),
              "far_sdf": cand_values[clear][:SCORE_SAMPLES].astype(np.float64), "units": grid.units,
              "diagonal": float(np.linalg.norm(hi - lo)) or voxel}

    grad = _gradient_norm(grid, near, rng)
    if grad is not None and not 0.5 <= grad <= 2.0:
        notes.append(f"the values change by {grad:.3g} per unit length near the zero level where a distance "
                     "field changes by 1: are they in the grid's units (its spacing)?")
    stats = grid.stats or check_grid(grid, grid.source)
    report = {"kind": "sdf_grid", "shape": [int(n) for n in v.shape], "spacing": spacing.tolist(),
              "origin": grid.affine[:3, 3].tolist(), "axis_aligned": bool(np.allclose(
                  grid.affine[:3, :3], np.diag(np.diag(grid.affine[:3, :3])))),
              "units": grid.units, "value_range": [stats["min"], stats["max"]],
              "share_negative": stats["n_negative"] / v.size, "border_negative": stats["border_negative"],
              "gradient_norm": grad, "near_voxels": int(len(near)), "pool": int(len(points)),
              "flip_sign": cfg.flip_sign, "notes": notes}
    return Pool(frame, points, sdf, surface, checks, report)


# ------------------------------------------------------------------------------------------------ samples

def samples_pool(samples: SDFPoints, cfg: SDFTaskConfig, seed: int = 0) -> Pool:
    """The pool of scattered samples: the samples themselves; with normals, points ``surface_noise`` box units
    along and against the normal of each sample near the zero level (values ``sdf +- eps``); and box points far
    from every sample (``BACKGROUND_GAP`` sample spacings), on the side of the majority of their 8 nearest
    samples, valued ``+-(|sdf of the nearest| + distance to it)`` (the field must not make surfaces where there
    are no samples)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    pts, values = samples.points, samples.sdf
    frame = BoxFrame.fit(pts, cfg.normalize_extent)
    notes = list(samples.notes)
    tree = cKDTree(pts)
    probe = pts[rng.choice(len(pts), size=min(20_000, len(pts)), replace=False)]
    d, _ = tree.query(probe, k=2)
    spacing = float(np.median(d[:, 1])) if len(pts) > 1 else 0.0
    spacing = spacing if spacing > 0 else 1e-3 * float(np.linalg.norm(np.ptp(pts, axis=0)))
    check_cancel()

    box_pts = [frame.to_box(pts)]
    box_sdf = [values * frame.scale]
    if samples.normals is not None:
        n = samples.normals
        length = np.linalg.norm(n, axis=1)
        eps = cfg.surface_noise
        sel = (length > 0) & (np.abs(box_sdf[0]) < eps)
        unit = n[sel] / length[sel, None]
        for sign in (-1.0, 1.0):
            box_pts.append(box_pts[0][sel] + sign * eps * unit)
            box_sdf.append(box_sdf[0][sel] + sign * eps)
        if (length == 0).any():
            notes.append(f"{int((length == 0).sum())} normals are zero and were not used")
    points = np.concatenate(box_pts)
    sdf = np.concatenate(box_sdf)
    # Background: box points far from every sample, as dense as the samples (at least uniform_fraction of the
    # pool, at most as many as the samples and half of pool_size); a quarter of them on the box's faces.
    box_tree = cKDTree(points)
    gap = BACKGROUND_GAP * spacing * frame.scale
    far_share = float((box_tree.query(_box_points(20_000, rng), k=1)[0] > gap).mean())
    uf = cfg.uniform_fraction
    target = len(points) * far_share / max(1.0 - far_share, 1e-3)
    target = int(min(max(target, len(points) * uf / (1 - uf)), len(points), cfg.pool_size // 2)) if far_share else 0
    found, kept_pts, kept_sdf = 0, [], []
    for _ in range(20):  # rounds: the region far from the samples may be a small share of the box
        if found >= target:
            break
        cand = _box_points(max(target, 1000), rng)
        dist, idx = box_tree.query(cand, k=min(8, len(points)))
        dist, idx = dist.reshape(len(cand), -1), idx.reshape(len(cand), -1)
        far = dist[:, 0] > gap
        side = np.sign(np.sign(sdf[idx[far]]).sum(axis=1))  # the side of most of the 8 nearest samples
        ok = side != 0
        kept_pts.append(cand[far][ok])
        kept_sdf.append(side[ok] * (np.abs(sdf[idx[far][ok, 0]]) + dist[far][ok, 0]))
        found += int(ok.sum())
    if found:
        points = np.concatenate([points, np.concatenate(kept_pts)[:target]])
        sdf = np.concatenate([sdf, np.concatenate(kept_sdf)[:target]])
    check_cancel()
    surface = box_pts[0][np.abs(box_sdf[0]) < 0.5 * spacing * frame.scale][:100_000]
    if not len(surface):
        surface = box_pts[0][np.argsort(np.abs(box_sdf[0]))[:1000]]

    near = np.abs(values) < spacing
    far = ~near
    near_idx = np.flatnonzero(near)
    far_idx = np.flatnonzero(far)
    near_idx = rng.choice(near_idx, size=min(SCORE_SAMPLES, len(near_idx)), replace=False)
    far_idx = rng.choice(far_idx, size=min(SCORE_SAMPLES, len(far_idx)), replace=False)
    near_pts = pts[near_idx]
    diag = float(np.linalg.norm(np.ptp(near_pts, axis=0))) if len(near_pts) > 1 else 0.0
    checks = {"near_points": near_pts, "near_sdf": values[near_idx], "far_points": pts[far_idx],
              "far_sdf": values[far_idx], "units": samples.units,
              "diagonal": diag or float(np.linalg.norm(np.ptp(pts, axis=0)))}
    report = {"kind": "sdf_samples", "n_samples": int(len(pts)), "normals": samples.normals is not None,
              "spacing": spacing, "units": samples.units, "value_range": [float(values.min()), float(values.max())],
              "share_negative": float((values < 0).mean()), "pool": int(len(points)), "flip_sign": cfg.flip_sign,
              "notes": notes}
    return Pool(frame, points.astype(np.float32), sdf.astype(np.float32), surface.astype(np.float32), checks,
                report)


__all__ = ["build", "score", "grid_pool", "samples_pool", "near_voxels", "input_surface", "Pool"]
