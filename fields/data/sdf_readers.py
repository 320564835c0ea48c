"""sdf_readers.py
==============
Signed distance fields as inputs, read and checked: dense grids and scattered samples.

* Grids: ``.npy`` (a 3-D float array; origin 0 and spacing 1, so distances are in voxels), ``.npz`` with ``sdf``
  (3-D) and optional ``origin`` (3,) and ``spacing`` (3,) or a scalar, or NIfTI ``.nii``/``.nii.gz`` (world mm
  through the file's affine, which may rotate). Arrays are indexed [i, j, k] along x, y, z: voxel (i, j, k) lies at
  ``origin + (i, j, k) * spacing`` (NIfTI: ``affine @ (i, j, k, 1)``).
* Samples: ``.npz`` with ``points`` (N, 3) and ``sdf`` (N,), optionally ``normals`` (N, 3) (outward).

Sign: negative inside, positive outside (``[sdf] flip_sign = true`` reads the other convention). Units: the
input's; fieldstudio never rescales the values (it maps them to its box with the positions). A NIfTI holding
float values of both signs is an SDF; an integer one (or one of a single sign) is a label map, see
:func:`nifti_holds_sdf`. Every problem is a one-line ``FieldStudioError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fieldstudio.errors import FieldStudioError
from fieldstudio.data.medical_readers import suffix_of

GRID_SUFFIXES = (".npy", ".npz", ".nii", ".nii.gz")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
MIN_GRID = 4              # voxels per axis, at least
SLAB = 2**24              # voxels per slab when scanning a grid (bounded temporaries)
FLIPPED_SHARE = 0.5       # more than this share of the border negative: the sign looks flipped
FLIP_HINT = "set [sdf] flip_sign = true (in a --config file, or overrides={'sdf.flip_sign': True})"


@dataclass
class SDFGrid:
    """A dense grid of signed distances. ``values`` float32 (nx, ny, nz); ``affine`` (4, 4) maps index
    (i, j, k, 1) to the input's world frame."""

    values: np.ndarray
    affine: np.ndarray
    units: str
    source: str = ""
    notes: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)  # check_grid's

    @property
    def spacing(self) -> np.ndarray:
        """World length of one step along each array axis."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def to_world(self, ijk: np.ndarray) -> np.ndarray:
        return np.asarray(ijk, dtype=np.float64) @ self.affine[:3, :3].T + self.affine[:3, 3]

    def to_index(self, world: np.ndarray) -> np.ndarray:
        inv = np.linalg.inv(self.affine)
        return np.asarray(world, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]

    def corners(self) -> np.ndarray:
        """(8, 3) world positions of the corner voxels' centres (their box bounds every voxel centre)."""
        n = np.array(self.values.shape) - 1
        ijk = np.array([[a, b, c] for a in (0, n[0]) for b in (0, n[1]) for c in (0, n[2])], dtype=np.float64)
        return self.to_world(ijk)


@dataclass
class SDFPoints:
    """Scattered samples: ``points`` (N, 3) float64 world, ``sdf`` (N,) float64, ``normals`` (N, 3) or None."""

    points: np.ndarray
    sdf: np.ndarray
    normals: np.ndarray | None
    units: str
    source: str = ""
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ kinds

def input_kind(path: str | Path) -> str:
    """``"grid"``, ``"samples"`` (an .npz with ``points``) or ``"mesh"`` (any other suffix)."""
    suffix = suffix_of(path)
    if suffix == ".npz":
        return "samples" if "points" in _npz_names(Path(path)) else "grid"
    return "grid" if suffix in GRID_SUFFIXES else "mesh"


def nifti_holds_sdf(path: str | Path) -> bool:
    """Whether a NIfTI file holds signed distances: float data with both negative and positive values (read slab
    by slab until both signs have shown). Integer data are label maps; an unreadable file is left to the label
    map reader, which reports it."""
    try:
        import nibabel

        img = nibabel.load(str(path))
        if not np.issubdtype(img.get_data_dtype(), np.floating) or len(img.shape) < 3:
            return False
        shape = img.shape
        step = max(1, SLAB // max(1, shape[0] * shape[1]))
        neg = pos = False
        for k0 in range(0, shape[2], step):
            slab = np.asarray(img.dataobj[:, :, k0:k0 + step, ...])
            neg = neg or bool(np.any(slab < 0))
            pos = pos or bool(np.any(slab > 0))
            if neg and pos:
                return True
        return False
    except Exception:  # not readable here: the label-map reader says why
        return False


# ------------------------------------------------------------------------------------------------ reading

def _damaged(path: Path, err: Exception) -> FieldStudioError:
    what = {".npy": "a NumPy .npy array", ".npz": "a NumPy .npz archive"}.get(suffix_of(path), "a NIfTI volume")
    reason = str(err).splitlines()[0] if str(err) else ""
    return FieldStudioError(f"cannot read {path.name}: it is damaged, truncated or not {what} "
                            f"({type(err).__name__}{': ' + reason if reason else ''})")


def _npz_names(path: Path) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return list(z.files)
    except Exception as err:
        raise _damaged(path, err) from None


def read_sdf(path: str | Path, flip_sign: bool = False) -> SDFGrid | SDFPoints:
    """The SDF at ``path`` (grid or samples), checked (see :func:`check_grid`, :func:`check_samples`), with its sign
    negated when ``flip_sign``."""
    path = Path(path)
    if not path.is_file():
        raise FieldStudioError(f"input not found: {path}")
    suffix = suffix_of(path)
    if suffix == ".npy":
        out = _read_npy(path)
    elif suffix == ".npz":
        out = _read_npz(path)
    elif suffix in NIFTI_SUFFIXES:
        out = _read_nifti(path)
    else:
        raise FieldStudioError(f"{path.name}: not a signed distance input; give .npy, .npz, .nii or .nii.gz")
    if isinstance(out, SDFGrid):
        if flip_sign:
            if out.values.flags.writeable:
                np.negative(out.values, out=out.values)
            else:
                out.values = np.negative(out.values)
            out.notes.append("sign flipped on reading ([sdf] flip_sign)")
        out.stats = check_grid(out, path.name, flip_sign, nifti=suffix in NIFTI_SUFFIXES)
    else:
        if flip_sign:
            out.sdf = -out.sdf
            out.notes.append("sign flipped on reading ([sdf] flip_sign)")
        check_samples(out, path.name, flip_sign)
    return out


def _as_grid_values(data: np.ndarray, name: str, what: str) -> np.ndarray:
    """A 3-D real array as float32 (no copy when it is one already)."""
    data = np.asanyarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise FieldStudioError(f"{name}: {what} has shape {data.shape}; a grid of signed distances is a 3-D array "
                               "indexed [i, j, k] along x, y, z (scattered samples: an .npz with points (N, 3) and "
                               "sdf (N,))")
    if data.dtype == bool or not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise FieldStudioError(f"{name}: {what} holds {data.dtype} values; signed distances must be numbers "
                               "(float32 or float64)")
    if min(data.shape) < MIN_GRID:
        raise FieldStudioError(f"{name}: the grid is {' x '.join(map(str, data.shape))} voxels; at least "
                               f"{MIN_GRID} per axis are needed to place a surface in it")
    return np.asarray(data, dtype=np.float32)


def _read_npy(path: Path) -> SDFGrid:
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
        if not isinstance(data, np.ndarray):
            raise ValueError("no array")
        values = _as_grid_values(data, path.name, "the array")  # reads the file (a float32 copy at most)
    except FieldStudioError:
        raise
    except Exception as err:
        raise _damaged(path, err) from None
    return SDFGrid(values, np.eye(4), "voxels (origin 0, spacing 1)", str(path),
                   ["a .npy grid has origin 0 and spacing 1: distances and the mesh are in voxel units"])


def _vector(z, key: str, name: str, scalar_ok: bool) -> np.ndarray | None:
    if key not in z.files:
        return None
    raw = np.asarray(z[key])
    if raw.dtype == bool or not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
        raise FieldStudioError(f"{name}: {key} holds {raw.dtype} values; give numbers")
    v = raw.astype(np.float64)
    if scalar_ok and v.size == 1:
        v = np.full(3, float(v.reshape(-1)[0]))
    if v.shape != (3,):
        raise FieldStudioError(f"{name}: {key} must hold 3 numbers (x, y, z){' or one' if scalar_ok else ''}, "
                               f"got shape {raw.shape}")
    if not np.isfinite(v).all():
        raise FieldStudioError(f"{name}: {key} holds NaN or infinite values: {v.tolist()}")
    return v


def _read_npz(path: Path) -> SDFGrid | SDFPoints:
    name = path.name
    try:
        with np.load(path, allow_pickle=False) as z:
            if "sdf" not in z.files:
                raise FieldStudioError(f"{name} has no 'sdf' array (it holds: {', '.join(z.files) or 'nothing'}); "
                                       "give sdf as a 3-D grid (with optional origin and spacing), or as N values "
                                       "with points (N, 3)")
            if "points" in z.files:
                return _samples_from(z, name, path)
            values = _as_grid_values(z["sdf"], name, "sdf")
            origin = _vector(z, "origin", name, scalar_ok=False)
            spacing = _vector(z, "spacing", name, scalar_ok=True)
    except FieldStudioError:
        raise
    except Exception as err:
        raise _damaged(path, err) from None
    if spacing is not None and (spacing <= 0).any():
        raise FieldStudioError(f"{name}: spacing must be > 0 along every axis, got {spacing.tolist()}")
    affine = np.eye(4)
    if spacing is not None:
        affine[:3, :3] = np.diag(spacing)
    if origin is not None:
        affine[:3, 3] = origin
    notes = [] if spacing is not None else ["no spacing given: 1 per voxel"]
    return SDFGrid(values, affine, "input units (origin + index * spacing)", str(path), notes)


def _samples_from(z, name: str, path: Path) -> SDFPoints:
    points = np.asarray(z["points"])
    sdf = np.asarray(z["sdf"])
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise FieldStudioError(f"{name}: points must have shape (N, 3), got {points.shape}")
    if sdf.ndim == 2 and sdf.shape[1] == 1:
        sdf = sdf[:, 0]
    if sdf.ndim != 1:
        raise FieldStudioError(f"{name}: with points, sdf must hold one value per point (shape (N,)), got shape "
                               f"{sdf.shape}")
    if len(sdf) != len(points):
        raise FieldStudioError(f"{name}: points and sdf differ in length ({len(points)} points, {len(sdf)} sdf "
                               "values); give one signed distance per point")
    normals = None
    if "normals" in z.files:
        normals = np.asarray(z["normals"])
        if normals.shape != points.shape:
            raise FieldStudioError(f"{name}: normals must have the shape of points {points.shape}, got "
                                   f"{normals.shape}")
    for key, arr in (("points", points), ("sdf", sdf), ("normals", normals)):
        if arr is None:
            continue
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise FieldStudioError(f"{name}: {key} holds {arr.dtype} values; give numbers")
        bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
        if bad.any():
            raise FieldStudioError(f"{name}: {key} holds NaN or infinite values at {int(bad.sum())} of {len(arr)} "
                                   f"samples (the first at row {int(np.argmax(bad))}); drop or fix those samples")
    return SDFPoints(points.astype(np.float64), sdf.astype(np.float64),
                     None if normals is None else normals.astype(np.float64), "input units", str(path), [])


def _read_nifti(path: Path) -> SDFGrid:
    try:
        import nibabel

        img = nibabel.load(str(path))
        if len(img.shape) < 3 or any(n != 1 for n in img.shape[3:]):
            raise FieldStudioError(f"{path.name}: expected a 3-D volume of signed distances, got shape {img.shape}")
        data = img.get_fdata(dtype=np.float32, caching="unchanged")  # scl_slope / scl_inter applied
        affine = np.asarray(img.affine, dtype=np.float64)
        values = _as_grid_values(data, path.name, "the volume")
    except FieldStudioError:
        raise
    except Exception as err:
        raise _damaged(path, err) from None
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise FieldStudioError(f"{path.name}: its voxel-to-world affine is degenerate; the file's geometry is broken")
    return SDFGrid(values, affine, "mm (NIfTI world, RAS)", str(path), [])


# ------------------------------------------------------------------------------------------------ checks

def grid_stats(values: np.ndarray) -> dict:
    """One pass over the grid in slabs along its first axis (bounded temporaries): ``n_bad`` (NaN or inf) and
    the first bad index, ``min``, ``max``, ``n_negative``."""
    n_bad, first_bad, lo, hi, n_neg = 0, None, np.inf, -np.inf, 0
    step = max(1, SLAB // max(1, values.shape[1] * values.shape[2]))
    for i0 in range(0, values.shape[0], step):
        slab = values[i0:i0 + step]
        finite = np.isfinite(slab)
        if not finite.all():
            bad = ~finite
            n_bad += int(bad.sum())
            if first_bad is None:
                first_bad = tuple(int(a[0]) + (i0 if d == 0 else 0) for d, a in enumerate(np.nonzero(bad)))
            slab = slab[finite]
        if slab.size:
            lo, hi = min(lo, float(slab.min())), max(hi, float(slab.max()))
            n_neg += int(np.count_nonzero(slab < 0))
    return {"n_bad": n_bad, "first_bad": first_bad, "min": lo, "max": hi, "n_negative": n_neg}


def border_values(values: np.ndarray) -> np.ndarray:
    """The values of the grid's six outer faces (edges counted more than once; fine for a share)."""
    v = values
    return np.concatenate([v[0].ravel(), v[-1].ravel(), v[:, 0].ravel(), v[:, -1].ravel(), v[:, :, 0].ravel(),
                           v[:, :, -1].ravel()])


def check_grid(grid: SDFGrid, name: str, flip_sign: bool = False, nifti: bool = False) -> dict:
    """Refuse grids that cannot be fitted: NaN or inf values, no zero level (one sign only), a sign that looks
    flipped (mostly negative on the border). Returns :func:`grid_stats` with ``border_negative`` added."""
    s = grid_stats(grid.values)
    if s["n_bad"]:
        raise FieldStudioError(f"{name}: {s['n_bad']:,} of {grid.values.size:,} values are NaN or infinite (the "
                               f"first at index {s['first_bad']}); fill them with distances (a large positive "
                               "value outside the shape) first")
    if not (s["min"] < 0 < s["max"]):
        sign = "positive or zero" if s["min"] >= 0 else "negative or zero"
        head = f"{name}: every value is {sign} ({s['min']:.4g} .. {s['max']:.4g}), so there is no zero level"
        if nifti:
            raise FieldStudioError(f"{head}: it is not a signed distance field (negative inside, positive outside); "
                                   "a label map is read by --task slices (or leave --task out)")
        where = ("outside the shape: make the grid cover the shape" if s["min"] >= 0
                 else "inside the shape: extend the grid beyond the shape")
        raise FieldStudioError(f"{head}: no surface to fit. Signed distances are negative inside and positive "
                               f"outside, so the whole grid lies {where} (or check the values)")
    border = border_values(grid.values)
    s["border_negative"] = float(np.count_nonzero(border < 0) / border.size)
    if s["border_negative"] > FLIPPED_SHARE:
        fix = ("[sdf] flip_sign = true is set and negated them: remove it" if flip_sign
               else f"negate the values, or {FLIP_HINT}")
        image = " (an intensity image such as a CT is not a signed distance field)" if nifti else ""
        raise FieldStudioError(f"{name}: the sign looks flipped: {100 * s['border_negative']:.0f} % of the grid's "
                               "outer border is negative while it is positive inside; fieldstudio expects negative "
                               f"inside and positive outside, so {fix}{image}")
    return s


def check_samples(samples: SDFPoints, name: str, flip_sign: bool = False) -> dict:
    """Refuse samples without both sides (no sign information) or whose sign looks flipped (mostly negative
    on the outer shell of their bounding box). Returns stats (``min``, ``max``, ``n_negative``,
    ``shell_negative``)."""
    sdf, pts = samples.sdf, samples.points
    diag = float(np.linalg.norm(np.ptp(pts, axis=0)))
    if diag <= 0:
        raise FieldStudioError(f"{name}: all {len(pts)} points are at one position; give samples around the shape")
    zero = np.abs(sdf) <= 1e-9 * diag
    with_normals = samples.normals is not None
    neg = bool((sdf < 0).any() or (with_normals and zero.any()))
    pos = bool((sdf > 0).any() or (with_normals and zero.any()))
    if not (neg and pos):
        if zero.all():
            raise FieldStudioError(f"{name}: every sdf value is 0 and there are no normals, so inside and outside "
                                   "cannot be told apart; give off-surface samples (negative inside, positive "
                                   "outside) or normals (N, 3)")
        sign = "positive or zero" if not neg else "negative or zero"
        raise FieldStudioError(f"{name}: every sdf value is {sign} ({sdf.min():.4g} .. {sdf.max():.4g}), so there "
                               "is no zero level: no surface to fit; give samples on both sides of the surface "
                               "(negative inside, positive outside)")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    margin = 0.05 * (hi - lo)
    shell = ((pts < lo + margin) | (pts > hi - margin)).any(axis=1) & ~zero
    stats = {"min": float(sdf.min()), "max": float(sdf.max()), "n_negative": int((sdf < 0).sum())}
    if shell.sum() >= 20:
        stats["shell_negative"] = float((sdf[shell] < 0).mean())
        if stats["shell_negative"] > FLIPPED_SHARE:
            fix = ("[sdf] flip_sign = true is set and negated them: remove it" if flip_sign
                   else f"negate sdf, or {FLIP_HINT}")
            raise FieldStudioError(f"{name}: the sign looks flipped: {100 * stats['shell_negative']:.0f} % of the "
                                   "samples on the outer shell of their bounding box are negative; fieldstudio "
                                   f"expects negative inside and positive outside, so {fix}")
    return stats


__all__ = ["SDFGrid", "SDFPoints", "read_sdf", "input_kind", "nifti_holds_sdf", "check_grid", "check_samples",
           "grid_stats", "GRID_SUFFIXES", "NIFTI_SUFFIXES"]
