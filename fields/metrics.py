"""metrics.py
==========
The one implementation of fieldstudio's evaluation metrics (spec: ``docs/benchmarks.md``, "Metrics").

Plain functions over NumPy arrays and ``trimesh.Trimesh`` objects:

* meshes: :func:`mesh_metrics` (IoU, Chamfer-L1, Hausdorff, HD95, normal angular error), built from
  :func:`iou_meshes` and :func:`surface_distances`;
* images: :func:`psnr`, :func:`ssim`, :func:`image_metrics` (both, channel by channel, with MSE);
* medical masks: :func:`dice`, :func:`hd95_mm`;
* cross-sections: :func:`contour_fidelity` (2-D IoU of a mesh's section with the input polygons on each input
  plane), :func:`roughness_deg` (mean dihedral angle between adjacent faces: the ripple figure).

Conventions
-----------
* Mesh distances reported by :func:`mesh_metrics` are divided by the diagonal of the *reference* mesh's
  axis-aligned bounding box, so they are unitless and comparable across shapes.
* Distances are point-to-surface: each surface sample is matched to the exact closest point on the other
  mesh (open3d ``RaycastingScene.compute_closest_points``), so a mesh scores 0 / 0 degrees against itself.
* Inside/outside tests never trust face winding and tolerate open meshes: open3d ray-parity occupancy with
  a majority vote over several random ray directions.
* Every stochastic function takes an explicit ``seed``.
* Empty meshes (no faces, or only zero-area faces) and empty mask pairs raise
  :class:`~fieldstudio.errors.FieldStudioError`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import trimesh

from fieldstudio.control import check_cancel
from fieldstudio.errors import FieldStudioError

__all__ = [
    "mesh_metrics",
    "iou_meshes",
    "surface_distances",
    "psnr",
    "ssim",
    "image_metrics",
    "dice",
    "hd95_mm",
    "contour_fidelity",
    "mesh_section",
    "roughness_deg",
    "distances_to",
    "inside_mesh",
    "mask_surface",
]

# Rays per occupancy query (odd: majority vote of ray parity over random directions).
_OCCUPANCY_RAYS = 3
# Points per open3d query: each call holds the GIL, so a window's thread waits at most for one (~30 ms).
_QUERY_CHUNK = 20_000


# --------------------------------------------------------------------------------------------------------
# mesh helpers
# --------------------------------------------------------------------------------------------------------
def _mesh_arrays(mesh: trimesh.Trimesh, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(vertices (V,3) float64, faces (F,3) int64)``; raise a user error for empty meshes."""
    if not isinstance(mesh, trimesh.Trimesh):
        raise TypeError(f"{name} must be a trimesh.Trimesh, got {type(mesh).__name__}")
    faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    vertices = np.asarray(mesh.vertices, dtype=np.float64).reshape(-1, 3)
    if len(faces) == 0 or len(vertices) == 0:
        raise FieldStudioError(
            f"the {name} mesh is empty (no faces): there is nothing to measure. "
            "Check that the mesh file loaded correctly or that marching cubes found a surface."
        )
    if not np.isfinite(vertices).all():
        raise FieldStudioError(
            f"the {name} mesh has non-finite (NaN or inf) vertex coordinates. "
            "Re-export it or check the field that produced it."
        )
    return vertices, faces


def _face_normals_areas(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit face normals ``(F,3)`` (zero for degenerate faces) and face areas ``(F,)``, in float64."""
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(cross, axis=1)
    normals = np.zeros_like(cross)
    ok = norm > 0
    normals[ok] = cross[ok] / norm[ok, None]
    return normals, 0.5 * norm


def _bbox_diagonal(vertices: np.ndarray) -> float:
    return float(np.linalg.norm(vertices.max(axis=0) - vertices.min(axis=0)))


def _raycasting_scene(vertices: np.ndarray, faces: np.ndarray):
    """An open3d ``RaycastingScene`` holding one triangle mesh (float32 vertices, uint32 indices)."""
    import open3d as o3d  # heavy import, only when a mesh metric is computed

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.ascontiguousarray(vertices, dtype=np.float32)),
        o3d.core.Tensor(np.ascontiguousarray(faces, dtype=np.uint32)),
    )
    return scene


def _o3d_points(points: np.ndarray):
    import open3d as o3d

    return o3d.core.Tensor(np.ascontiguousarray(points, dtype=np.float32))


def _sample_surface(
    vertices: np.ndarray, faces: np.ndarray, areas: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted uniform samples on a triangle mesh.

    Returns
    -------
    points : (count, 3) float64
    face_index : (count,) int64
        The face each sample lies on.
    """
    cdf = np.cumsum(areas)
    face_index = np.searchsorted(cdf, rng.random(count) * cdf[-1], side="right")
    face_index = np.minimum(face_index, len(faces) - 1)
    uv = rng.random((count, 2))
    flip = uv.sum(axis=1) > 1.0
    uv[flip] = 1.0 - uv[flip]  # fold the unit square onto the triangle: uniform barycentrics
    tri = vertices[faces[face_index]]
    points = tri[:, 0] + uv[:, :1] * (tri[:, 1] - tri[:, 0]) + uv[:, 1:] * (tri[:, 2] - tri[:, 0])
    return points, face_index.astype(np.int64)


class _Surface:
    """One mesh prepared for queries: centred float64 arrays, unit normals, areas, and a lazy scene."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, name: str):
        self.name = name
        self.vertices = vertices
        self.normals, self.areas = _face_normals_areas(vertices, faces)
        # Zero-area faces cannot be sampled and have no normal: keep them out of the scene too.
        self.keep = np.flatnonzero(self.areas > 0)
        if len(self.keep) == 0:
            raise FieldStudioError(
                f"the {name} mesh has only zero-area faces: there is no surface to measure. "
                "Check the mesh file or the field that produced it."
            )
        self.faces = faces
        self._scene = None

    @property
    def scene(self):
        if self._scene is None:
            self._scene = _raycasting_scene(self.vertices, self.faces[self.keep])
        return self._scene

    def closest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact closest points on this surface: (distances (n,) float64, face ids (n,) int64)."""
        distance, face = np.empty(len(points)), np.empty(len(points), np.int64)
        for s in range(0, len(points), _QUERY_CHUNK):
            check_cancel()
            part = points[s:s + _QUERY_CHUNK]
            result = self.scene.compute_closest_points(_o3d_points(part))
            closest = result["points"].numpy().astype(np.float64)
            distance[s:s + _QUERY_CHUNK] = np.linalg.norm(part - closest, axis=1)
            face[s:s + _QUERY_CHUNK] = self.keep[result["primitive_ids"].numpy().astype(np.int64)]
        return distance, face

    def occupancy(self, points: np.ndarray) -> np.ndarray:
        """Inside test by ray parity, majority of ``_OCCUPANCY_RAYS`` random rays: (n,) bool."""
        inside = np.empty(len(points), bool)
        for s in range(0, len(points), _QUERY_CHUNK):
            check_cancel()
            occ = self.scene.compute_occupancy(_o3d_points(points[s:s + _QUERY_CHUNK]), nsamples=_OCCUPANCY_RAYS)
            inside[s:s + _QUERY_CHUNK] = occ.numpy() > 0.5
        return inside


def _prepare(pred: trimesh.Trimesh, ref: trimesh.Trimesh) -> tuple[_Surface, _Surface, float, np.ndarray]:
    """Both meshes translated by the centre of ref's box (open3d works in float32; metrics are
    translation invariant, so centring keeps precision for meshes far from the origin, e.g. patient mm)."""
    v_pred, f_pred = _mesh_arrays(pred, "predicted")
    v_ref, f_ref = _mesh_arrays(ref, "reference")
    centre = 0.5 * (v_ref.min(axis=0) + v_ref.max(axis=0))
    surf_pred = _Surface(v_pred - centre, f_pred, "predicted")
    surf_ref = _Surface(v_ref - centre, f_ref, "reference")
    diag = _bbox_diagonal(v_ref)
    if diag <= 0:
        raise FieldStudioError(
            "the reference mesh has a zero-size bounding box: distances cannot be normalised. Check the mesh."
        )
    return surf_pred, surf_ref, diag, centre


# --------------------------------------------------------------------------------------------------------
# mesh metrics
# --------------------------------------------------------------------------------------------------------
def iou_meshes(
    pred: trimesh.Trimesh,
    ref: trimesh.Trimesh,
    n_points: int = 400_000,
    pad: float = 0.05,
    seed: int = 0,
) -> float:
    """Volumetric IoU of two meshes estimated on uniform random points.

    Points are drawn uniformly in the reference's bounding box padded on each side by ``pad`` times its
    extent along that axis (``pad`` times the diagonal for a flat axis). If the prediction reaches outside
    that box, the box is grown to also cover the prediction's bounding box, so volume predicted far from the
    reference is still counted against it (for predictions inside the padded box this is exactly the spec).

    Inside is decided by ray parity with a majority vote over 3 random ray directions (open3d
    ``compute_occupancy(nsamples=3)``): face winding is ignored and open meshes or stray edge hits only
    perturb single rays.

    Parameters
    ----------
    pred, ref : trimesh.Trimesh
        Predicted and reference meshes, same frame.
    n_points : int
        Number of uniform points (the spec asks for at least 400k).
    pad : float
        Relative padding of the reference box.
    seed : int
        Seed of the point sampler.

    Returns
    -------
    float
        ``|pred ∩ ref| / |pred ∪ ref|`` over the points, in [0, 1]; ``nan`` if no point is inside either
        mesh (e.g. two open surfaces that enclose nothing).
    """
    surf_pred, surf_ref, diag, _ = _prepare(pred, ref)
    lo = surf_ref.vertices.min(axis=0)
    hi = surf_ref.vertices.max(axis=0)
    extent = hi - lo
    margin = np.where(extent > 0, pad * extent, pad * diag)
    lo = np.minimum(lo - margin, surf_pred.vertices.min(axis=0))
    hi = np.maximum(hi + margin, surf_pred.vertices.max(axis=0))
    rng = np.random.default_rng(seed)
    points = lo + rng.random((int(n_points), 3)) * (hi - lo)
    occ_pred = surf_pred.occupancy(points)
    occ_ref = surf_ref.occupancy(points)
    union = np.count_nonzero(occ_pred | occ_ref)
    if union == 0:
        return float("nan")
    return float(np.count_nonzero(occ_pred & occ_ref) / union)


def surface_distances(
    pred: trimesh.Trimesh, ref: trimesh.Trimesh, n_samples: int = 200_000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Per-sample point-to-surface distances and normal angles, both directions.

    ``n_samples`` points are drawn on each surface (area-weighted, uniform within triangles, seeded); each
    sample is matched to the exact closest point on the *other* mesh (open3d ``compute_closest_points``).
    The angle of a sample is ``acos(|n_s · n_c|)`` in degrees, where ``n_s`` is the normal of the face the
    sample lies on and ``n_c`` the normal of the other mesh's face holding the closest point: unoriented
    (inward-wound meshes are not penalised), as NeuRBF's supplementary Eq. 12.

    Parameters
    ----------
    pred, ref : trimesh.Trimesh
        Predicted and reference meshes, same frame.
    n_samples : int
        Samples per surface.
    seed : int
        Seed of the surface sampler.

    Returns
    -------
    dict
        ``pred_points`` : (n, 3) float64, samples on pred (input frame);
        ``pred_to_ref`` : (n,) float64, distance from each to ref, in input units (not normalised);
        ``pred_to_ref_deg`` : (n,) float64, normal angle in degrees;
        ``ref_points``, ``ref_to_pred``, ``ref_to_pred_deg`` : the same from ref to pred;
        ``diagonal`` : () float64, the reference bounding-box diagonal used for normalisation.
    """
    surf_pred, surf_ref, diag, centre = _prepare(pred, ref)
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {"diagonal": np.float64(diag)}
    for src, dst, side, key in ((surf_pred, surf_ref, "pred", "pred_to_ref"), (surf_ref, surf_pred, "ref", "ref_to_pred")):
        points, face_index = _sample_surface(src.vertices, src.faces, src.areas, int(n_samples), rng)
        dist, closest_face = dst.closest(points)
        cos = np.abs(np.einsum("ij,ij->i", src.normals[face_index], dst.normals[closest_face]))
        out[key] = dist
        out[f"{key}_deg"] = np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))
        out[f"{side}_points"] = points + centre
    return out


def distances_to(points: np.ndarray, mesh: trimesh.Trimesh) -> np.ndarray:
    """Exact distance (n,) float64 from each of ``points`` (n, 3) to the surface of ``mesh``, in the frame and units
    both share (e.g. a result's vertices against its input, for colouring the surface by error)."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    centre = vertices.mean(axis=0)  # open3d is float32: query near the origin
    surface = _Surface(vertices - centre, np.asarray(mesh.faces, dtype=np.int64), "reference")
    return surface.closest(np.asarray(points, dtype=np.float64) - centre)[0]


def inside_mesh(points: np.ndarray, mesh: trimesh.Trimesh) -> np.ndarray:
    """(n,) bool: which of ``points`` (n, 3) lie inside ``mesh`` (same frame), by ray parity with a majority vote
    over random directions (face winding ignored, open meshes tolerated, as :func:`iou_meshes`)."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    centre = vertices.mean(axis=0)  # open3d is float32: query near the origin
    surface = _Surface(vertices - centre, np.asarray(mesh.faces, dtype=np.int64), "predicted")
    return surface.occupancy(np.asarray(points, dtype=np.float64) - centre)


def mask_surface(mask: np.ndarray, affine: np.ndarray) -> trimesh.Trimesh:
    """The boundary of a voxel mask (the 0.5 level of the mask padded with empty voxels, so it is closed) as a
    mesh in the world frame of ``affine`` (index -> world): the reference a label-map result is compared with."""
    from fieldstudio.mesh import marching_cubes

    if not np.any(mask):
        raise FieldStudioError("the mask is empty: no surface to compare with")
    padded = np.pad(np.asarray(mask, dtype=np.float32), 1)
    n = np.array(padded.shape)
    # Inside is below the level: -mask; grid index i of the padded array is voxel index i - 1.
    surface = marching_cubes(-padded, level=-0.5, bounds=[(-1.0, float(k) - 2.0) for k in n])
    vertices = np.asarray(surface.vertices) @ affine[:3, :3].T + affine[:3, 3]
    return trimesh.Trimesh(vertices, np.asarray(surface.faces), process=False)


def mesh_metrics(
    pred: trimesh.Trimesh,
    ref: trimesh.Trimesh,
    n_samples: int = 200_000,
    n_iou_points: int = 400_000,
    seed: int = 0,
) -> dict:
    """All mesh metrics of ``docs/benchmarks.md`` for a predicted mesh against a reference.

    Parameters
    ----------
    pred, ref : trimesh.Trimesh
        Predicted and reference meshes in the same frame.
    n_samples : int
        Surface samples per mesh for the distance metrics (spec: 200k).
    n_iou_points : int
        Uniform points for IoU (spec: at least 400k).
    seed : int
        Seed for all sampling.

    Returns
    -------
    dict
        ``iou`` : float, see :func:`iou_meshes`;
        ``chamfer_l1`` : float, mean of the two one-sided mean distances / ref diagonal;
        ``hausdorff`` : float, largest distance over both directions / ref diagonal;
        ``hd95`` : float, max of the two one-sided 95th percentiles / ref diagonal (the usual "symmetric
        HD95"; the 95th percentile of the pooled distances would be lower when only one side is off);
        ``nae_deg`` : float, mean unoriented normal angle in degrees over the samples of both sides;
        ``watertight_pred`` : bool, whether pred is watertight (trimesh's check).

    Raises
    ------
    FieldStudioError
        If either mesh is empty.
    """
    d = surface_distances(pred, ref, n_samples=n_samples, seed=seed)
    check_cancel()  # between the two long parts, so a job's cancel is felt while it scores
    diag = float(d["diagonal"])
    a, b = d["pred_to_ref"], d["ref_to_pred"]
    return {
        "iou": iou_meshes(pred, ref, n_points=n_iou_points, seed=seed),
        "chamfer_l1": float(0.5 * (a.mean() + b.mean()) / diag),
        "hausdorff": float(max(a.max(), b.max()) / diag),
        "hd95": float(max(np.percentile(a, 95), np.percentile(b, 95)) / diag),
        "nae_deg": float(np.concatenate([d["pred_to_ref_deg"], d["ref_to_pred_deg"]]).mean()),
        "watertight_pred": bool(pred.is_watertight),
    }


# --------------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------------
def _image_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"images differ in shape: {p.shape} vs {t.shape}")
    if p.ndim not in (2, 3):
        raise ValueError(f"images must be (H, W) or (H, W, C), got shape {p.shape}")
    return p, t


def psnr(pred, target, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)``.

    Parameters
    ----------
    pred, target : (H, W) or (H, W, C) array_like
        Images with values in ``[0, data_range]`` (e.g. floats in [0, 1]; no rescaling is done).
    data_range : float
        Peak value.

    Returns
    -------
    float
        PSNR in dB over all pixels and channels; ``inf`` for identical images.
    """
    p, t = _image_pair(pred, target)
    mse = float(np.mean((p - t) ** 2))
    if mse == 0.0:
        return math.inf
    return float(10.0 * math.log10(data_range**2 / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim(pred, target, data_range: float = 1.0) -> float:
    """Structural similarity (Wang et al. 2004) with an 11-tap Gaussian window, sigma 1.5.

    Local statistics use the normalised Gaussian window (population covariance, as the paper), only
    where the window fits inside the image ("valid" region); ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with
    ``L = data_range``. For ``(H, W, C)`` images the SSIM map is averaged over pixels and channels.

    Parameters
    ----------
    pred, target : (H, W) or (H, W, C) array_like
        Images with values in ``[0, data_range]``, H and W at least 11.
    data_range : float
        Peak value.

    Returns
    -------
    float
        Mean SSIM, 1 for identical images.
    """
    from scipy.ndimage import correlate1d

    p, t = _image_pair(pred, target)
    if p.shape[0] < 11 or p.shape[1] < 11:
        raise ValueError(f"SSIM needs images of at least 11 x 11 pixels, got {p.shape[:2]}")
    window = _gaussian_window()
    half = len(window) // 2

    def local_mean(x: np.ndarray) -> np.ndarray:
        y = correlate1d(x, window, axis=0, mode="reflect")
        y = correlate1d(y, window, axis=1, mode="reflect")
        return y[half:-half, half:-half]  # keep only windows fully inside the image

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_p, mu_t = local_mean(p), local_mean(t)
    var_p = local_mean(p * p) - mu_p**2
    var_t = local_mean(t * t) - mu_t**2
    cov = local_mean(p * t) - mu_p * mu_t
    num = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
    den = (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
    return float(np.mean(num / den))


def image_metrics(pred: np.ndarray, stored: np.ndarray, peak: float = 1.0) -> dict:
    """PSNR, SSIM, MSE and the largest error of a reconstruction, one channel at a time (bounded memory on 4k).

    pred: (H, W, C) float, values in [0, 1] units; stored: (H, W, C) the picture as stored, ``stored / peak`` in
    the same units. PSNR and SSIM use a peak of 1 and average over all channels (as the whole-array functions)."""
    sq_sum, worst, ssims = 0.0, 0.0, []
    for c in range(pred.shape[2]):
        t = stored[:, :, c].astype(np.float32) / np.float32(peak)
        d = pred[:, :, c] - t
        sq_sum += float(np.dot(d.ravel().astype(np.float64), d.ravel().astype(np.float64)))
        worst = max(worst, float(np.abs(d).max()))
        ssims.append(ssim(pred[:, :, c], t))
        check_cancel()
    mse = sq_sum / pred.size
    return {"psnr": math.inf if mse == 0 else 10 * math.log10(1.0 / mse), "ssim": float(np.mean(ssims)),
            "mse": mse, "max_abs_error": worst}


# --------------------------------------------------------------------------------------------------------
# medical masks
# --------------------------------------------------------------------------------------------------------
def _mask_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a).astype(bool, copy=False)
    b = np.asarray(b).astype(bool, copy=False)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}; resample one onto the other's grid")
    if not a.any() and not b.any():
        raise FieldStudioError(
            "both masks are empty: there is nothing to compare. Check the label value and that the "
            "reconstruction was voxelised onto the right grid."
        )
    return a, b


def dice(a, b) -> float:
    """Dice coefficient ``2 |A ∩ B| / (|A| + |B|)`` of two boolean masks of the same shape.

    Raises
    ------
    FieldStudioError
        If both masks are empty (the coefficient is undefined).
    """
    a, b = _mask_pair(a, b)
    return float(2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


def hd95_mm(a, b, spacing: float | Sequence[float] = 1.0) -> float:
    """Symmetric 95th-percentile Hausdorff distance between mask surfaces, in millimetres.

    Surfaces are the boundary voxels of each mask (mask voxels with a face-neighbour outside the mask or
    outside the array). For each boundary voxel of A the Euclidean distance to the nearest boundary voxel
    of B is measured on the voxel grid with ``scipy.ndimage.distance_transform_edt(sampling=spacing)``, and
    vice versa; the result is the larger of the two directed 95th percentiles.

    Parameters
    ----------
    a, b : (..., ) array_like of bool
        Masks on the same grid (2-D or 3-D), indexed like ``spacing``.
    spacing : float or sequence of float
        Voxel size in mm along each array axis, in array-axis order (NumPy order, not ITK order).

    Returns
    -------
    float
        HD95 in mm; ``inf`` if exactly one mask is empty.

    Raises
    ------
    FieldStudioError
        If both masks are empty.
    """
    from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

    a, b = _mask_pair(a, b)
    spacing_arr = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (a.ndim,)).copy()
    if not np.all(spacing_arr > 0):
        raise FieldStudioError(f"voxel spacing must be positive, got {spacing_arr.tolist()}: check the image header.")
    if not a.any() or not b.any():
        return math.inf
    # Crop to the joint bounding box plus one voxel: distances between boundary voxels are unchanged and
    # the arrays shrink a lot for organs in large scans. (Voxels on the original array edge stay on the crop edge.)
    idx = np.argwhere(a | b)
    lo = np.maximum(idx.min(axis=0) - 1, 0)
    hi = np.minimum(idx.max(axis=0) + 2, a.shape)
    crop = tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))
    a, b = a[crop], b[crop]
    structure = generate_binary_structure(a.ndim, 1)

    def boundary(m: np.ndarray) -> np.ndarray:
        return m & ~binary_erosion(m, structure=structure, border_value=0)

    edge_a, edge_b = boundary(a), boundary(b)
    dist_to_b = distance_transform_edt(~edge_b, sampling=spacing_arr)
    dist_to_a = distance_transform_edt(~edge_a, sampling=spacing_arr)
    return float(max(np.percentile(dist_to_b[edge_a], 95), np.percentile(dist_to_a[edge_b], 95)))


# --------------------------------------------------------------------------------------------------------
# cross-sections
# --------------------------------------------------------------------------------------------------------
# A plane closer than this (times the mesh's extent) to a mesh vertex is moved by _SECTION_NUDGE along its
# normal before cutting (as ``slice_mesh`` does), so the cut never runs through vertices or along edges.
_SECTION_NEAR = 1e-7
_SECTION_NUDGE = 1e-6


def mesh_section(mesh: trimesh.Trimesh, plane) -> tuple[list[np.ndarray], int]:
    """Closed loops ``(n, 3)`` where ``mesh`` crosses ``plane`` (a ``cross_sections.Plane``), world frame.

    Only faces that straddle the plane are cut (``trimesh.intersections.mesh_plane``); the segments are chained
    with ``fieldstudio.data.slicing.chain_segments``. Returns the loops and the number of open chains dropped
    (a mesh that is not closed where the plane cuts it).
    """
    from fieldstudio.data.slicing import chain_segments  # fields.data imports nothing from here; keep it lazy anyway

    vertices, faces = _mesh_arrays(mesh, "measured")
    extent = float(np.ptp(vertices, axis=0).max())
    normal = np.asarray(plane.normal, dtype=np.float64)
    offset = float(normal @ plane.origin)
    dist = vertices @ normal - offset
    for step in (1, -2, 3, -4, 5):
        if np.abs(dist).min() > _SECTION_NEAR * extent:
            break
        offset += step * _SECTION_NUDGE * extent
        dist = vertices @ normal - offset
    d = dist[faces]
    cut = faces[(d.min(axis=1) < 0) & (d.max(axis=1) > 0)]
    if len(cut) == 0:
        return [], 0
    used, inverse = np.unique(cut, return_inverse=True)
    part = trimesh.Trimesh(vertices[used], inverse.reshape(-1, 3), process=False)
    segments = trimesh.intersections.mesh_plane(part, normal, normal * offset)
    return chain_segments(segments, 1e-8 * max(extent, 1e-300))


def contour_fidelity(mesh: trimesh.Trimesh, cs, resolution: int = 256, pad: float = 0.1) -> dict:
    """How well ``mesh`` reproduces the input contours: per-plane 2-D IoU of its section with the polygons.

    For each plane of ``cs`` (a ``CrossSections`` in the mesh's frame), the mesh is cut with the plane
    (:func:`mesh_section`) and both the input polygons and the mesh's section loops are rasterised on the
    same ``resolution x resolution`` grid of pixel centres in the plane's (u, v) frame, with the even-odd rule
    of ``inside_2d`` for both (so holes need no orientation). The grid spans the input contours' bounding box
    padded on each side by ``pad`` times its extent along that axis, grown to also cover the mesh's section,
    so section area produced outside the contours counts against the mesh. A plane where neither has any area
    scores 1; one where only one of them has area scores 0.

    Multi-label inputs: the parity runs over all loops of a plane (call ``cs.union()`` or ``cs.select``
    first for a meaningful per-object figure). Protocol target (shared benchmarks): every plane >= 0.97.

    Returns
    -------
    dict
        ``per_plane`` : list of float, IoU per plane in ``cs.planes`` order;
        ``plane_ids`` : list of int, the planes' ids;
        ``min``, ``mean`` : float over the planes;
        ``open_chains`` : int, open section chains dropped (0 for a closed mesh);
        ``missed_loops`` : list of (plane id, loop index, area), the input loops (of at least 4 pixels) of which the
        section covers less than half: a part the contours show and the mesh lacks, however small (a plane's IoU
        hardly moves when its smallest loop is missing);
        ``resolution`` : int.
    """
    from fieldstudio.data.cross_sections import Polygon, inside_2d

    r = int(resolution)
    if r < 2:
        raise ValueError(f"resolution must be at least 2, got {resolution}")
    if not cs.planes:
        raise FieldStudioError("the cross-sections hold no planes: there are no contours to compare with")
    per_plane, ids, n_open, missed = [], [], 0, []
    for plane in cs.planes:
        loops, opened = mesh_section(mesh, plane)
        n_open += opened
        section = plane.copy(loops=[Polygon(lp) for lp in loops])
        boxes = []
        if plane.loops:
            q = plane.to_2d(plane.vertices())
            lo, hi = q.min(axis=0), q.max(axis=0)
            margin = pad * (hi - lo)
            boxes.append(np.stack([lo - margin, hi + margin]))
        if loops:
            q = plane.to_2d(np.concatenate(loops))
            lo, hi = q.min(axis=0), q.max(axis=0)
            if not boxes:  # no input contour on this plane: frame the section alone
                margin = pad * (hi - lo)
                lo, hi = lo - margin, hi + margin
            boxes.append(np.stack([lo, hi]))
        ids.append(int(plane.id))
        if not boxes:
            per_plane.append(1.0)
            continue
        lo = np.min([b[0] for b in boxes], axis=0)
        hi = np.max([b[1] for b in boxes], axis=0)
        hi = np.where(hi > lo, hi, lo + 1e-12)
        cu = lo[0] + (np.arange(r) + 0.5) * (hi[0] - lo[0]) / r
        cv = lo[1] + (np.arange(r) + 0.5) * (hi[1] - lo[1]) / r
        pts = np.stack(np.meshgrid(cu, cv, indexing="ij"), axis=-1).reshape(-1, 2)
        a = inside_2d(plane, pts) if plane.loops else np.zeros(len(pts), dtype=bool)
        b = inside_2d(section, pts) if loops else np.zeros(len(pts), dtype=bool)
        union = np.count_nonzero(a | b)
        per_plane.append(1.0 if union == 0 else float(np.count_nonzero(a & b) / union))
        pixel = float(np.prod((hi - lo) / r))
        for j, lp in enumerate(plane.loops):
            own = a & inside_2d(plane.copy(loops=[lp]), pts)
            n_own = np.count_nonzero(own)
            if n_own >= 4 and np.count_nonzero(own & b) < 0.5 * n_own:
                missed.append((int(plane.id), j, float(n_own * pixel)))
    values = np.asarray(per_plane)
    return {"per_plane": per_plane, "plane_ids": ids, "min": float(values.min()), "mean": float(values.mean()),
            "open_chains": int(n_open), "missed_loops": missed, "resolution": r}


def roughness_deg(mesh: trimesh.Trimesh) -> float:
    """Mean dihedral-angle deviation between adjacent faces, in degrees: the ripple figure.

    For every pair of faces sharing an edge, the angle between their unit normals (0 for coplanar faces),
    averaged over all such pairs (trimesh's ``face_adjacency`` / ``face_adjacency_angles``, computed here
    with zero-area faces left out, since they have no normal). Duplicate vertices are merged first, so
    triangle soups (STL) get their adjacency. The winding must be consistent (marching cubes' is): a flipped
    neighbour reads as a fold of nearly 180 degrees.

    What it measures: bending per edge. A smooth surface scores about ``edge length / curvature radius``
    radians; ripples between input planes (what OReX's gradient penalty is meant to remove) and noise raise it.
    It depends on the tessellation, so compare meshes extracted the same way at the same marching cubes
    resolution over similar sizes (fieldstudio's benchmarks: 256^3 over the padded shape box), e.g. one field
    with and without the penalty. It is not a terracing figure: marching cubes of a binary voxel mask (naive
    stacking, contour interpolation) is mostly flat facets with 45-90 degree steps, whose mean over all pairs
    stays in single digits (eight_15 at 256: 6.3 naive, 9.6 contour interpolation, 5.5 the reference STL);
    the normal angular error of ``mesh_metrics`` shows terracing.

    Returns
    -------
    float
        Mean angle in degrees; 0 for a mesh with no adjacent faces.
    """
    vertices, faces = _mesh_arrays(mesh, "measured")
    merged = trimesh.Trimesh(vertices, faces, process=True, validate=False)
    normals, areas = _face_normals_areas(np.asarray(merged.vertices), np.asarray(merged.faces))
    adjacency = np.asarray(merged.face_adjacency, dtype=np.int64).reshape(-1, 2)
    adjacency = adjacency[(areas[adjacency[:, 0]] > 0) & (areas[adjacency[:, 1]] > 0)]
    if len(adjacency) == 0:
        return 0.0
    cos = np.einsum("ij,ij->i", normals[adjacency[:, 0]], normals[adjacency[:, 1]])
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).mean())


def voxelize(mesh: trimesh.Trimesh, affine: np.ndarray, shape: tuple[int, int, int],
             chunk: int = 2_000_000) -> np.ndarray:
    """Which voxel centres of a grid (index -> world ``affine``, ``shape``) lie inside ``mesh``: (shape) bool.

    Only voxels inside the mesh's bounding box are tested (ray-parity occupancy, winding ignored).
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    centre = vertices.mean(axis=0)  # open3d is float32: query near the origin
    surface = _Surface(vertices - centre, np.asarray(mesh.faces, dtype=np.int64), "predicted")
    inv = np.linalg.inv(affine)
    corners = np.array(np.meshgrid(*[[0, 1]] * 3, indexing="ij")).reshape(3, -1).T
    lo_w, hi_w = vertices.min(axis=0), vertices.max(axis=0)
    box_w = lo_w + corners * (hi_w - lo_w)
    box_ijk = box_w @ inv[:3, :3].T + inv[:3, 3]
    lo = np.clip(np.floor(box_ijk.min(axis=0)).astype(int), 0, np.array(shape) - 1)
    hi = np.clip(np.ceil(box_ijk.max(axis=0)).astype(int), 0, np.array(shape) - 1)
    out = np.zeros(shape, dtype=bool)
    axes = [np.arange(lo[a], hi[a] + 1) for a in range(3)]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    inside = np.zeros(len(ijk), dtype=bool)
    for s in range(0, len(ijk), chunk):
        check_cancel()
        world = ijk[s:s + chunk] @ affine[:3, :3].T + affine[:3, 3]
        inside[s:s + chunk] = surface.occupancy(world - centre)
    out[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = inside.reshape([len(a) for a in axes])
    return out


def mask_report(mesh: trimesh.Trimesh, reference: np.ndarray, affine: np.ndarray) -> dict:
    """Mesh volume (ml) and area (mm^2), and Dice / HD95 (mm) of its voxelisation against a reference mask."""
    pred = voxelize(mesh, affine, reference.shape)
    check_cancel()
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    voxel_mm3 = abs(float(np.linalg.det(affine[:3, :3])))  # not prod(spacing): a tilted (sheared) grid is smaller
    return {"volume_ml": abs(float(mesh.volume)) / 1000.0, "area_mm2": float(mesh.area),
            "mask_volume_ml": float(reference.sum() * voxel_mm3 / 1000.0),
            "dice": dice(pred, reference), "hd95_mm": hd95_mm(pred, reference, spacing)}
