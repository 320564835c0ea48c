"""medical_readers.py
===================
Medical files as label maps or contours in patient millimetres: NIfTI, NRRD, a folder holding a DICOM series, a
DICOM SEG (label maps, :class:`LabelVolume`) and DICOM RTSTRUCT (planar contours, :class:`CrossSections`); CT and
MR images to show under the labels (:class:`IntensityVolume`).

World frames: every reader keeps its format's patient frame and says which. NIfTI world axes increase towards
the patient's Right, Anterior, Superior (RAS); DICOM's towards Left, Posterior, Superior (LPS); NRRD states its
``space``. A volume's affine maps voxel indices (i, j, k) to mm in that frame; nothing is flipped. It may be
sheared (a DICOM series acquired with a gantry tilt keeps each slice at its position). Files too large to hold are
read in slabs and cropped to their labels (``MAX_VOXELS``). Broken inputs end in one-line FieldStudioErrors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fieldstudio.data.cross_sections import CrossSections, Plane, Polygon, orient_loops
from fieldstudio.errors import FieldStudioError

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr")
RTSTRUCT_SUFFIXES = (".dcm",)
MAX_VOXELS = 512**3  # larger label maps are read in slabs and cropped to their labels (bounded memory)
SLAB_VOXELS = 2**24  # voxels per slab while looking for the labels' extent


def suffix_of(path: str | Path) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def is_medical(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() or suffix_of(p) in VOLUME_SUFFIXES + RTSTRUCT_SUFFIXES


def dicom_modality(path: str | Path) -> str:
    """The Modality of a DICOM file (header only), with a clear error for files that are not DICOM."""
    import pydicom

    path = Path(path)
    if not path.exists():
        raise FieldStudioError(f"input not found: {path}")
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as err:
        reason = "no DICOM header" if type(err).__name__ == "InvalidDicomError" else f"{type(err).__name__}: {err}"
        raise FieldStudioError(f"{path.name} is not a readable DICOM file ({reason}); give a DICOM RTSTRUCT or SEG, "
                               "a label map (.nii, .nii.gz, .nrrd, a DICOM series folder) or a .csl file") from None
    return str(getattr(ds, "Modality", ""))


def is_label_map(path: str | Path) -> bool:
    """A voxel label map (NIfTI, NRRD, a DICOM series folder, a DICOM SEG), as opposed to contours."""
    p = Path(path)
    if p.is_dir() or suffix_of(p) in VOLUME_SUFFIXES:
        return True
    return suffix_of(p) in RTSTRUCT_SUFFIXES and p.is_file() and dicom_modality(p) == "SEG"


@dataclass
class LabelVolume:
    """An integer label map with its voxel-to-world affine (index (i, j, k, 1) -> mm in ``world``)."""

    data: np.ndarray
    affine: np.ndarray
    world: str
    source: str = ""
    notes: list[str] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)  # structure names by label (DICOM SEG segment labels)

    @property
    def spacing(self) -> np.ndarray:
        """Step per index along each array axis, mm (with a sheared affine: the step, not the plane distance)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def slice_axis(self) -> int:
        """The acquisition axis: largest spacing, ties resolved towards the last array axis."""
        s = self.spacing
        return int(max(range(3), key=lambda a: (round(float(s[a]), 6), a)))

    def labels(self) -> list[int]:
        return [int(v) for v in np.unique(self.data) if v != 0]

    def to_world(self, ijk: np.ndarray) -> np.ndarray:
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]


# ------------------------------------------------------------------------------------------------ readers

def _as_labels(data: np.ndarray, name: str) -> np.ndarray:
    data = np.asarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise FieldStudioError(f"{name}: expected a 3-D label map, got an array of shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        if not np.isfinite(data).all():
            raise FieldStudioError(f"{name}: the volume holds NaN or infinite values; it is not a label map")
        rounded = np.rint(data)
        if np.abs(data - rounded).max() > 1e-3:
            raise FieldStudioError(f"{name} holds non-integer values (e.g. {float(data.flat[np.argmax(np.abs(data - rounded))]):g}): "
                                   "it looks like an image, not a segmentation; give a label map (0 = background)")
        data = rounded
    return data.astype(np.int32)


def nonzero_bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-axis index bounds (lo, hi inclusive) of the True voxels of a 3-D mask, or None when there are none."""
    hits = [np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
    if not len(hits[0]):
        return None
    return np.array([h[0] for h in hits]), np.array([h[-1] for h in hits])


def _too_big(name: str, n: int) -> FieldStudioError:
    return FieldStudioError(f"{name}: its labels span {n:,} voxels, more than this tool holds in memory at once "
                            f"({MAX_VOXELS:,}); crop the volume around the structures, or split it, first")


def _crop_to_labels(name: str, shape: tuple[int, ...], read_slab, read_box, affine: np.ndarray):
    """Read a label map too large to hold whole: find the labels' bounding box slab by slab along the last axis
    (``read_slab(k0, k1)`` -> data[..., k0:k1]), then read only that box (``read_box(lo, hi)``, hi exclusive).
    Returns (data, affine moved to the box's first voxel, note)."""
    lo, hi = np.full(3, np.iinfo(np.int64).max), np.full(3, -1)
    step = max(1, SLAB_VOXELS // max(1, shape[0] * shape[1]))
    for k0 in range(0, shape[2], step):
        slab = np.asarray(read_slab(k0, min(shape[2], k0 + step)))
        bounds = nonzero_bounds(np.rint(slab) != 0 if not np.issubdtype(slab.dtype, np.integer) else slab != 0)
        if bounds is None:
            continue
        shift = np.array([0, 0, k0])
        lo, hi = np.minimum(lo, bounds[0] + shift), np.maximum(hi, bounds[1] + shift)
    if hi[0] < 0:
        raise FieldStudioError(f"{name} holds no label (every voxel is 0); nothing to reconstruct")
    lo, hi = np.maximum(lo - 1, 0), np.minimum(hi + 2, np.array(shape[:3]))  # keep a voxel of background
    n = int(np.prod(hi - lo))
    if n > MAX_VOXELS:
        raise _too_big(name, n)
    moved = affine.copy()
    moved[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    note = (f"{name} has {int(np.prod(shape[:3])):,} voxels: read in slabs and cropped to its labels, index "
            f"{lo.tolist()}..{(hi - 1).tolist()} ({n:,} voxels); world coordinates are unchanged")
    return read_box(lo, hi), moved, note


def read_label_volume(path: str | Path) -> LabelVolume:
    """NIfTI, NRRD or a DICOM series folder as a :class:`LabelVolume`."""
    path = Path(path)
    if not path.exists():
        raise FieldStudioError(f"input not found: {path}")
    if path.is_dir():
        return read_dicom_series(path)
    suffix = suffix_of(path)
    if suffix in RTSTRUCT_SUFFIXES:
        modality = dicom_modality(path)
        if modality != "SEG":
            raise FieldStudioError(f"{path.name} is a DICOM {modality or '?'} object, not a segmentation "
                                   "(SEG); give a label map or an RTSTRUCT")
        return read_dicom_seg(path)
    notes: list[str] = []
    try:
        if suffix in (".nii", ".nii.gz"):
            import nibabel

            img = nibabel.load(str(path))
            affine, world = np.asarray(img.affine, dtype=np.float64), "RAS"
            shape = tuple(img.shape) + (1,) * max(0, 3 - len(img.shape))
            if len(shape) < 3 or np.prod(shape) <= MAX_VOXELS or any(n != 1 for n in shape[3:]):
                data = np.asanyarray(img.dataobj)
            else:  # too large to hold: only the labels' box is read (nibabel slices the file lazily)
                data, affine, note = _crop_to_labels(
                    path.name, shape[:3], lambda k0, k1: img.dataobj[:, :, k0:k1, ...].reshape(shape[0], shape[1], -1),
                    lambda lo, hi: img.dataobj[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2], ...], affine)
                notes.append(note)
        elif suffix in (".nrrd", ".nhdr"):
            data, affine, world = _read_nrrd(path, lambda n: FieldStudioError(
                f"{path.name}: {n:,} voxels is more than this tool holds in memory at once ({MAX_VOXELS:,}); crop "
                "it, or save it as NIfTI (large NIfTI files are cropped to their labels while reading)"))
        else:
            raise FieldStudioError(f"{path.name} is not a label map this tool reads (NIfTI .nii/.nii.gz, NRRD, "
                                   "a DICOM SEG, or a folder with a DICOM series)")
    except FieldStudioError:
        raise
    except Exception as err:  # a corrupt or foreign file
        raise FieldStudioError(f"cannot read {path.name} as {suffix} ({type(err).__name__}: {err})") from None
    _check_affine(path.name, affine)
    return LabelVolume(_as_labels(data, path.name), affine, world, str(path), notes)


def _read_nrrd(path: Path, too_large) -> tuple[np.ndarray, np.ndarray, str]:
    """(data, affine, world) of a NRRD file; ``too_large(voxels)`` is the error raised, from the header alone,
    when it holds more than ``MAX_VOXELS`` (pynrrd reads whole files only)."""
    import nrrd

    n = int(np.prod([int(v) for v in nrrd.read_header(str(path)).get("sizes", [])]))
    if n > MAX_VOXELS:
        raise too_large(n)
    data, header = nrrd.read(str(path))
    return (data, *_nrrd_geometry(path.name, header))


def _nrrd_geometry(name: str, header: dict) -> tuple[np.ndarray, str]:
    """A NRRD header's voxel-to-world affine and world frame ("LPS" or "RAS")."""
    directions = np.asarray(header.get("space directions"), dtype=np.float64)
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    if directions.shape != (3, 3):
        raise FieldStudioError(f"{name}: the NRRD header has no 3-D 'space directions'; cannot place "
                               "it in patient coordinates")
    space = str(header.get("space", "left-posterior-superior")).lower()
    world = {"left-posterior-superior": "LPS", "right-anterior-superior": "RAS"}.get(space)
    if world is None:
        raise FieldStudioError(f"{name}: NRRD space {space!r} is not supported; use "
                               "left-posterior-superior or right-anterior-superior")
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = directions.T, origin  # NRRD lists one row per axis
    return affine, world


def _check_affine(name: str, affine: np.ndarray) -> None:
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise FieldStudioError(f"{name}: its voxel-to-world affine is degenerate; the file's geometry is broken")


def _pixel_array(ds, name: str) -> np.ndarray:
    """``ds.pixel_array``, or a one-line error when its (compressed) pixel data cannot be decoded here."""
    try:
        return ds.pixel_array
    except Exception as err:
        uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax = f"{uid.name} ({uid})" if uid is not None else "unknown transfer syntax"
        raise FieldStudioError(f"{name}: cannot decode its pixel data, {syntax} ({type(err).__name__}); install a "
                               "decoder for it (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, or "
                               "python-gdcm) or decompress the files first (e.g. gdcmconv --raw)") from None


def _pixel_spacing(ds) -> list[float] | None:
    """PixelSpacing as [row spacing, column spacing] in mm, or None when absent or malformed."""
    try:
        values = [float(v) for v in ds.PixelSpacing]
    except (AttributeError, TypeError, ValueError):
        return None
    return values if len(values) == 2 else None


def _series_geometry(folder: Path, slices: list, paths: list[Path]):
    """Check that the headers describe one regular stack; return (slice order, affine, notes).

    A gantry tilt moves the slices sideways as well as along their normal: the voxel grid is then sheared, its
    third axis the actual step between slice positions, so every voxel keeps its ImagePositionPatient-based place.
    """
    iop = np.array([np.asarray(ds.ImageOrientationPatient, dtype=np.float64) for ds in slices])
    odd = np.abs(iop - iop[0]).max(axis=1)
    if odd.max() > 1e-4:
        k = int(np.argmax(odd))
        raise FieldStudioError(f"{folder}: {paths[k].name} is oriented differently from {paths[0].name} "
                               f"(ImageOrientationPatient differs by {odd[k]:.2g}); a series has one orientation: "
                               "move the other images (e.g. a localiser) to their own folder")
    sizes = sorted({(int(ds.Rows), int(ds.Columns)) for ds in slices})
    if len(sizes) > 1:
        raise FieldStudioError(f"{folder}: the slices have different sizes ({', '.join(f'{r} x {c}' for r, c in sizes)}"
                               " pixels); a series has one size: remove the odd images (e.g. a localiser)")
    spacings = [_pixel_spacing(ds) for ds in slices]
    bare = [p.name for p, s in zip(paths, spacings) if s is None]
    if bare:
        raise FieldStudioError(f"{folder}: {bare[0]} ({len(bare)} of {len(slices)} slices) has no PixelSpacing, so "
                               "its pixels cannot be placed in mm; export the series with its pixel spacing")
    spacings = np.array(spacings)
    if np.abs(spacings - spacings[0]).max() > 1e-4 or (spacings[0] <= 0).any():
        raise FieldStudioError(f"{folder}: PixelSpacing varies between slices or is not positive "
                               f"({spacings.min():.4g} to {spacings.max():.4g} mm); a series has one pixel spacing")
    row, col = iop[0].reshape(2, 3)
    normal = np.cross(row, col)
    pos = np.array([np.asarray(ds.ImagePositionPatient, dtype=np.float64) for ds in slices])
    order = np.argsort(pos @ normal)
    steps = np.diff(pos[order], axis=0)  # (n - 1, 3) mm between neighbouring slices
    gaps = steps @ normal
    if (gaps < 1e-3).any():
        raise FieldStudioError(f"{folder}: {int((gaps < 1e-3).sum())} slice position(s) occur twice; remove the "
                               "duplicated files")
    step = float(np.median(gaps))
    if np.abs(gaps - step).max() > 0.01 * step + 1e-3:
        worst = int(np.argmax(np.abs(gaps - step)))
        raise FieldStudioError(f"{folder}: slice spacing is not constant ({gaps[worst]:.3g} mm between slices "
                               f"{worst + 1} and {worst + 2}, {step:.3g} mm elsewhere); a slice is missing or the "
                               "series mixes spacings")
    shift = np.median(steps, axis=0)
    drift = np.linalg.norm(steps - shift, axis=1)
    if drift.max() > 0.01 * step + 1e-3:  # positions off one straight line: no single grid holds them
        worst = int(np.argmax(drift))
        raise FieldStudioError(f"{folder}: slice positions do not lie on one line (slice {worst + 2} is "
                               f"{drift[worst]:.3g} mm off it); it is not one regular stack: check that the folder "
                               "holds one series, or resample it onto a regular grid (e.g. save it as NIfTI)")
    dr, dc = spacings[0]  # row spacing (between rows), column spacing
    affine = np.eye(4)
    # pixel_array[r, c]: c runs along `row` (ImageOrientation's first vector), r along `col`.
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = col * dr, row * dc, shift
    affine[:3, 3] = pos[order[0]]
    tilt = float(np.degrees(np.arctan2(np.linalg.norm(shift - normal * (shift @ normal)), shift @ normal)))
    notes = [f"{folder.name}: the slices are tilted by {tilt:.2f} degrees (gantry tilt): the voxel grid is sheared "
             "to keep every slice at its ImagePositionPatient"] if tilt > 0.01 else []
    return order, affine, notes


def _series_headers(folder: Path) -> tuple[list, list[Path]]:
    """The headers (no pixels) of the DICOM images with a position in ``folder``, and their files: one series."""
    import pydicom

    files = [p for p in sorted(folder.iterdir()) if p.is_file()]
    slices, paths = [], []  # headers only: pixels are read once the series is known to fit
    for p in files:
        try:
            ds = pydicom.dcmread(str(p), stop_before_pixels=True)
        except Exception:
            continue
        if "Rows" in ds and "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            slices.append(ds)
            paths.append(p)
    if len(slices) < 2:
        raise FieldStudioError(f"{folder} holds {len(slices)} DICOM image(s) with a position; a series needs at least "
                               "two slices")
    if len({str(ds.get("SeriesInstanceUID", "")) for ds in slices}) > 1:
        raise FieldStudioError(f"{folder} mixes several DICOM series; put one series per folder")
    return slices, paths


def read_dicom_series(folder: Path) -> LabelVolume:
    """A folder of single-frame DICOM images of one series (pixel values = labels), sorted by position."""
    import pydicom

    slices, paths = _series_headers(folder)
    order, affine, notes = _series_geometry(folder, slices, paths)

    def pixels(k: int) -> np.ndarray:
        path = paths[order[k]]
        return _pixel_array(pydicom.dcmread(str(path)), f"{folder.name}/{path.name}")

    shape = (int(slices[0].Rows), int(slices[0].Columns), len(slices))
    if np.prod(shape) <= MAX_VOXELS:
        data = np.stack([pixels(k) for k in range(shape[2])], axis=-1)  # (rows, cols, slices)
    else:
        data, affine, note = _crop_to_labels(
            folder.name, shape, lambda k0, k1: np.stack([pixels(k) for k in range(k0, k1)], axis=-1),
            lambda lo, hi: np.stack([pixels(k)[lo[0]:hi[0], lo[1]:hi[1]] for k in range(lo[2], hi[2])], axis=-1),
            affine)
        notes.append(note)
    return LabelVolume(_as_labels(data, folder.name), affine, "LPS", str(folder), notes)


# ------------------------------------------------------------------------------------------------ intensity images

@dataclass
class IntensityVolume:
    """A grey-value image (CT in HU, MR in its own units) with its voxel-to-world affine, shown under labels."""

    data: np.ndarray  # float32, 3-D
    affine: np.ndarray
    world: str
    source: str = ""


def _as_image(data: np.ndarray, name: str) -> np.ndarray:
    data = np.asarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3 or not np.issubdtype(data.dtype, np.number):
        raise FieldStudioError(f"{name}: expected a 3-D grey-value image, got an array of shape {data.shape} "
                               f"({data.dtype}); give one 3-D CT or MR volume")
    data = data.astype(np.float32)
    bad = ~np.isfinite(data)
    if bad.all():
        raise FieldStudioError(f"{name}: every voxel is NaN or infinite; the image holds no values to show")
    if bad.any():  # shown as the darkest value rather than refusing the whole image
        data[bad] = data[~bad].min()
    return data


def _too_large_image(name: str, n: int) -> FieldStudioError:
    return FieldStudioError(f"{name}: {n:,} voxels is more than this tool shows at once ({MAX_VOXELS:,}); crop or "
                            "downsample the image first")


def read_intensity_volume(path: str | Path) -> IntensityVolume:
    """A CT or MR image (NIfTI, NRRD or a DICOM series folder) as float32 values in its world frame; a DICOM
    series gets its RescaleSlope / RescaleIntercept (CT: Hounsfield units)."""
    path = Path(path)
    if not path.exists():
        raise FieldStudioError(f"image not found: {path}")
    if path.is_dir():
        return _read_dicom_intensity(path)
    suffix = suffix_of(path)
    try:
        if suffix in (".nii", ".nii.gz"):
            import nibabel

            img = nibabel.load(str(path))
            if np.prod(img.shape) > MAX_VOXELS:
                raise _too_large_image(path.name, int(np.prod(img.shape)))
            data = img.get_fdata(dtype=np.float32)  # applies the file's scl_slope / scl_inter
            affine, world = np.asarray(img.affine, dtype=np.float64), "RAS"
        elif suffix in (".nrrd", ".nhdr"):
            data, affine, world = _read_nrrd(path, lambda n: _too_large_image(path.name, n))
        else:
            raise FieldStudioError(f"{path.name} is not an image this tool shows (NIfTI .nii/.nii.gz, NRRD, or a "
                                   "folder with a DICOM series)")
    except FieldStudioError:
        raise
    except Exception as err:  # a corrupt or foreign file
        raise FieldStudioError(f"cannot read {path.name} as {suffix} ({type(err).__name__}: {err}); give a NIfTI, "
                               "NRRD or DICOM series image") from None
    _check_affine(path.name, affine)
    return IntensityVolume(_as_image(data, path.name), affine, world, str(path))


def _read_dicom_intensity(folder: Path) -> IntensityVolume:
    import pydicom

    slices, paths = _series_headers(folder)
    order, affine, _ = _series_geometry(folder, slices, paths)
    shape = (int(slices[0].Rows), int(slices[0].Columns), len(slices))
    if np.prod(shape) > MAX_VOXELS:
        raise _too_large_image(folder.name, int(np.prod(shape)))
    data = np.empty(shape, np.float32)
    for k, i in enumerate(order):
        ds = pydicom.dcmread(str(paths[i]))
        pixels = _pixel_array(ds, f"{folder.name}/{paths[i].name}")
        if pixels.shape != shape[:2]:
            raise FieldStudioError(f"{folder.name}/{paths[i].name}: {pixels.shape} pixels is not one grey-value "
                                   "slice (colour or multi-frame); give a CT or MR series")
        # Each slice may have its own rescale (CT: stored value -> Hounsfield units).
        data[:, :, k] = pixels * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    return IntensityVolume(data, affine, "LPS", str(folder))


def _frame_item(ds, frame, name: str):
    """The first item of functional group ``name`` for one frame: per-frame, else shared."""
    for groups in (frame, ds.get("SharedFunctionalGroupsSequence", [None])[0]):
        if groups is not None and name in groups and len(groups[name].value):
            return groups[name].value[0]
    raise FieldStudioError(f"the DICOM SEG lacks {name} (frame geometry); cannot place it in patient coordinates")


def read_dicom_seg(path: Path) -> LabelVolume:
    """A DICOM Segmentation (binary or fractional; one frame per segment and plane) as a label map: label =
    segment number, names from the segment labels, LPS. Frames are placed by their positions along the plane
    normal on the grid of SpacingBetweenSlices (else the smallest gap); planes with no frame stay empty."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    frames = list(ds.get("PerFrameFunctionalGroupsSequence", []))
    if not frames or "PixelData" not in ds:
        raise FieldStudioError(f"{path.name}: the DICOM SEG holds no frames; nothing to reconstruct")
    orientation = _frame_item(ds, frames[0], "PlaneOrientationSequence").ImageOrientationPatient
    row, col = np.asarray(orientation, dtype=np.float64).reshape(2, 3)
    normal = np.cross(row, col)
    measures = _frame_item(ds, frames[0], "PixelMeasuresSequence")
    dr, dc = (float(v) for v in measures.PixelSpacing)
    pos = np.array([np.asarray(_frame_item(ds, f, "PlanePositionSequence").ImagePositionPatient, dtype=np.float64)
                    for f in frames])
    segment = np.array([int(_frame_item(ds, f, "SegmentIdentificationSequence").ReferencedSegmentNumber)
                        for f in frames])
    along = pos @ normal
    levels = np.unique(np.round(along, 3))
    gaps = np.diff(levels)
    step = float(getattr(measures, "SpacingBetweenSlices", 0) or (gaps.min() if len(gaps) else 1.0))
    index = np.round((along - levels[0]) / step).astype(int)
    if np.abs(levels[0] + index * step - along).max() > 0.01 * step + 1e-3:
        raise FieldStudioError(f"{path.name}: the SEG's frames do not lie on a regular grid of {step:.3g} mm "
                               "planes; cannot stack them into a volume")
    # Every frame of one plane must start at the same corner (in-plane offsets would need resampling).
    for k in np.unique(index):
        corners = pos[index == k]
        if np.abs(corners - corners[0]).max() > 1e-3:
            raise FieldStudioError(f"{path.name}: frames of one plane start at different positions; not supported")
    shape = (int(ds.Rows), int(ds.Columns), int(index.max()) + 1)
    if np.prod(shape) > MAX_VOXELS:
        raise _too_big(path.name, int(np.prod(shape)))
    pixels = _pixel_array(ds, path.name).reshape(len(frames), shape[0], shape[1])
    fractional = str(getattr(ds, "SegmentationType", "BINARY")).upper() == "FRACTIONAL"
    threshold = 0.5 * float(getattr(ds, "MaximumFractionalValue", 255)) if fractional else 0
    data = np.zeros(shape, dtype=np.int32)
    overlap = 0
    for f in np.argsort(segment, kind="stable"):  # overlaps: the higher segment number wins
        on = pixels[f] > threshold
        overlap += int((on & (data[:, :, index[f]] != 0)).sum())
        data[:, :, index[f]][on] = segment[f]
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = col * dr, row * dc, normal * step
    affine[:3, 3] = pos[np.argmin(along)] - normal * (along.min() - levels[0])
    names = {int(s.SegmentNumber): str(getattr(s, "SegmentLabel", "")) for s in ds.get("SegmentSequence", [])}
    notes = [f"{path.name}: {overlap} voxels belong to several segments; the higher segment number was kept"] \
        if overlap else []
    return LabelVolume(data, affine, "LPS", str(path), notes, {k: v for k, v in names.items() if v})


# ------------------------------------------------------------------------------------------------ RTSTRUCT

def _contour_normal(pts: np.ndarray) -> np.ndarray | None:
    """Unit normal of a planar contour's best-fit plane (largest component positive), or None when the contour
    has no area: under 3 points, or all within 1 micrometre (RMS) of one line, where any normal would do."""
    if len(pts) < 3:
        return None
    _, sv, vt = np.linalg.svd(pts - pts.mean(axis=0), full_matrices=False)
    if sv[1] <= 1e-3 * np.sqrt(len(pts)):
        return None
    return vt[-1] * (1 if vt[-1][int(np.argmax(np.abs(vt[-1])))] > 0 else -1)


def read_rtstruct(path: str | Path) -> tuple[CrossSections, dict[int, str]]:
    """Closed planar contours of every ROI of a DICOM RTSTRUCT, in patient mm (LPS), labelled by ROI number.

    Contours are grouped into planes by their plane (normal and offset, 1e-3 mm); several contours of one ROI
    on a plane are kept (islands, holes: the even-odd rule sorts them out). Returns the sections and the ROI
    names by label.
    """
    import pydicom

    path = Path(path)
    if not path.exists():
        raise FieldStudioError(f"input not found: {path}")
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as err:
        reason = "no DICOM header" if type(err).__name__ == "InvalidDicomError" else f"{type(err).__name__}: {err}"
        raise FieldStudioError(f"{path.name} is not a readable DICOM file ({reason}); give a DICOM RTSTRUCT, a "
                               "label map (.nii, .nii.gz, .nrrd, a DICOM series folder) or a .csl file") from None
    if getattr(ds, "Modality", "") != "RTSTRUCT" or "ROIContourSequence" not in ds:
        raise FieldStudioError(f"{path.name} is a DICOM {getattr(ds, 'Modality', '?')} object, not an RTSTRUCT with "
                               "contours; give the structure set file (or a label-map volume)")
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}
    groups: dict[tuple, list[Polygon]] = {}
    normals: dict[tuple, np.ndarray] = {}
    skipped: dict[str, int] = {}
    for roi in ds.ROIContourSequence:
        label = int(roi.ReferencedROINumber)
        roi_name = f"ROI {names.get(label, '?')!r} (number {label})"
        for number, c in enumerate(roi.get("ContourSequence", []), start=1):
            if str(c.get("ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
                continue
            values = np.asarray(c.get("ContourData", []), dtype=np.float64)
            if len(values) % 3 or not np.isfinite(values).all():
                what = f"{len(values)} values (not x/y/z triples)" if len(values) % 3 else "a NaN or infinite value"
                raise FieldStudioError(f"{path.name}: {roi_name}, contour {number} has {what}; the structure set is "
                                       "corrupt: export it again from the planning system")
            pts = values.reshape(-1, 3)
            n = _contour_normal(pts)
            if n is None:
                skipped[roi_name] = skipped.get(roi_name, 0) + 1
                continue
            key = (tuple(np.round(n, 3)), round(float(n.dot(pts.mean(axis=0))), 3))
            groups.setdefault(key, []).append(Polygon(pts, label=label))
            normals[key] = n
    notes = [f"{roi}: {n} contour(s) skipped: under 3 distinct points or all on one line (no area)"
             for roi, n in skipped.items()]
    if not groups:
        raise FieldStudioError(f"{path.name} holds no closed planar contour with an area"
                               f"{' (' + '; '.join(notes) + ')' if notes else ''}; give the structure set with the "
                               "drawn contours")
    planes = [Plane.through(normals[k], loops, offset=-k[1], id=i + 1)
              for i, (k, loops) in enumerate(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])))]
    cs = CrossSections(planes, notes, str(path))
    orient_loops(cs, report=False)
    return cs, names


__all__ = ["LabelVolume", "IntensityVolume", "read_label_volume", "read_intensity_volume", "read_dicom_series",
           "read_dicom_seg", "read_rtstruct", "is_medical", "is_label_map", "dicom_modality", "suffix_of",
           "nonzero_bounds", "VOLUME_SUFFIXES", "RTSTRUCT_SUFFIXES"]
