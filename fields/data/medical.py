"""medical.py
==========
Medical inputs as cross-sections in patient millimetres: label maps (NIfTI, NRRD, a folder holding a DICOM
series) and planar contours (DICOM RTSTRUCT).

World frames: every reader keeps its format's patient frame and says which. NIfTI world axes increase towards
the patient's Right, Anterior, Superior (RAS); DICOM's towards Left, Posterior, Superior (LPS); NRRD states its
``space``. Meshes are written in that same frame, in mm, and ``metrics.json`` names it; nothing is flipped.

A label map becomes, per label, the label's boundary on chosen slices: ``every`` k-th slice along the acquisition
axis (the one with the largest spacing; ties: the last array axis) starting at ``offset``, or families such as
``axial:6,sagittal:6,coronal:6`` (evenly spaced through the label's extent, along the array axis closest to that
anatomical direction). Boundaries come from marching squares at level 0.5 on the zero-padded slice (contourpy),
so a label cut by the edge of the volume is closed along that edge (noted). Slices without the label stay in as
planes where it is known to be absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fields.data.cross_sections import CrossSections, Plane, Polygon, orient_loops
from fields.errors import FieldStudioError

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr")
RTSTRUCT_SUFFIXES = (".dcm",)
DIRECTIONS = {"sagittal": 0, "coronal": 1, "axial": 2}  # anatomical normal: world axis x, y, z (RAS and LPS alike)
MAX_VOXELS = 512**3  # label maps beyond this are refused (memory), with a pointer to cropping


def suffix_of(path: str | Path) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def is_medical(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() or suffix_of(p) in VOLUME_SUFFIXES + RTSTRUCT_SUFFIXES


@dataclass
class LabelVolume:
    """An integer label map with its voxel-to-world affine (index (i, j, k, 1) -> mm in ``world``)."""

    data: np.ndarray
    affine: np.ndarray
    world: str
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def spacing(self) -> np.ndarray:
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
    if data.size > MAX_VOXELS:
        raise FieldStudioError(f"{name}: {data.size:,} voxels is more than this tool holds in memory at once "
                               f"({MAX_VOXELS:,}); crop the volume around the structures first")
    if not np.issubdtype(data.dtype, np.integer):
        if not np.isfinite(data).all():
            raise FieldStudioError(f"{name}: the volume holds NaN or infinite values; it is not a label map")
        rounded = np.rint(data)
        if np.abs(data - rounded).max() > 1e-3:
            raise FieldStudioError(f"{name} holds non-integer values (e.g. {float(data.flat[np.argmax(np.abs(data - rounded))]):g}): "
                                   "it looks like an image, not a segmentation; give a label map (0 = background)")
        data = rounded
    return data.astype(np.int32)


def read_label_volume(path: str | Path) -> LabelVolume:
    """NIfTI, NRRD or a DICOM series folder as a :class:`LabelVolume`."""
    path = Path(path)
    if not path.exists():
        raise FieldStudioError(f"input not found: {path}")
    if path.is_dir():
        return read_dicom_series(path)
    suffix = suffix_of(path)
    try:
        if suffix in (".nii", ".nii.gz"):
            import nibabel

            img = nibabel.load(str(path))
            data, affine, world = np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=np.float64), "RAS"
        elif suffix in (".nrrd", ".nhdr"):
            import nrrd

            data, header = nrrd.read(str(path))
            directions = np.asarray(header.get("space directions"), dtype=np.float64)
            origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
            if directions.shape != (3, 3):
                raise FieldStudioError(f"{path.name}: the NRRD header has no 3-D 'space directions'; cannot place "
                                       "it in patient coordinates")
            space = str(header.get("space", "left-posterior-superior")).lower()
            world = {"left-posterior-superior": "LPS", "right-anterior-superior": "RAS"}.get(space)
            if world is None:
                raise FieldStudioError(f"{path.name}: NRRD space {space!r} is not supported; use "
                                       "left-posterior-superior or right-anterior-superior")
            affine = np.eye(4)
            affine[:3, :3], affine[:3, 3] = directions.T, origin  # NRRD lists one row per axis
        else:
            raise FieldStudioError(f"{path.name} is not a label map this tool reads (NIfTI .nii/.nii.gz, NRRD, "
                                   "or a folder with a DICOM series)")
    except FieldStudioError:
        raise
    except Exception as err:  # a corrupt or foreign file
        raise FieldStudioError(f"cannot read {path.name} as {suffix} ({type(err).__name__}: {err})") from None
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise FieldStudioError(f"{path.name}: its voxel-to-world affine is degenerate; the file's geometry is broken")
    return LabelVolume(_as_labels(data, path.name), affine, world, str(path))


def read_dicom_series(folder: Path) -> LabelVolume:
    """A folder of single-frame DICOM images of one series (pixel values = labels), sorted by position."""
    import pydicom

    files = [p for p in sorted(folder.iterdir()) if p.is_file()]
    slices = []
    for p in files:
        try:
            ds = pydicom.dcmread(str(p))
        except Exception:
            continue
        if "PixelData" in ds and "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            slices.append(ds)
    if len(slices) < 2:
        raise FieldStudioError(f"{folder} holds {len(slices)} DICOM image(s) with a position; a series needs at least "
                               "two slices")
    if len({str(ds.get("SeriesInstanceUID", "")) for ds in slices}) > 1:
        raise FieldStudioError(f"{folder} mixes several DICOM series; put one series per folder")
    row, col = (np.asarray(slices[0].ImageOrientationPatient, dtype=np.float64).reshape(2, 3))
    normal = np.cross(row, col)
    pos = np.array([np.asarray(ds.ImagePositionPatient, dtype=np.float64) for ds in slices])
    along = pos @ normal
    order = np.argsort(along)
    gaps = np.diff(along[order])
    if (gaps < 1e-3).any():
        raise FieldStudioError(f"{folder}: {int((gaps < 1e-3).sum())} slice position(s) occur twice; remove the "
                               "duplicated files")
    step = float(np.median(gaps))
    if np.abs(gaps - step).max() > 0.01 * step + 1e-3:
        worst = int(np.argmax(np.abs(gaps - step)))
        raise FieldStudioError(f"{folder}: slice spacing is not constant ({gaps[worst]:.3g} mm between slices "
                               f"{worst + 1} and {worst + 2}, {step:.3g} mm elsewhere); a slice is missing or the "
                               "series mixes spacings")
    data = np.stack([slices[i].pixel_array for i in order], axis=-1)  # (rows, cols, slices)
    dr, dc = (float(v) for v in slices[0].PixelSpacing)  # row spacing (between rows), column spacing
    affine = np.eye(4)
    # pixel_array[r, c]: c runs along `row` (ImageOrientation's first vector), r along `col`.
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = col * dr, row * dc, normal * step
    affine[:3, 3] = pos[order[0]]
    return LabelVolume(_as_labels(data, folder.name), affine, "LPS", str(folder))


# ------------------------------------------------------------------------------------------------ label map -> planes

def _loops_2d(mask: np.ndarray) -> list[np.ndarray]:
    """Closed boundary loops (m, 2) of a 2-D boolean mask in its index coordinates (row, col), via marching
    squares at 0.5 on the mask padded with one empty voxel all round (so every loop closes)."""
    import contourpy

    padded = np.pad(mask.astype(np.float64), 1)
    gen = contourpy.contour_generator(z=padded, line_type="Separate")
    loops = []
    for line in gen.lines(0.5):
        pts = np.asarray(line, dtype=np.float64)
        if len(pts) > 1 and np.allclose(pts[0], pts[-1]):
            pts = pts[:-1]
        if len(pts) >= 3:
            loops.append(pts[:, ::-1] - 1.0)  # contourpy gives (x = col, y = row) of the padded array
    return loops


def _slice_plane(vol: LabelVolume, axis: int, index: int, labels: list[int], pid: int) -> Plane:
    others = [a for a in range(3) if a != axis]
    sl = [slice(None)] * 3
    sl[axis] = index
    plane_data = vol.data[tuple(sl)]
    loops = []
    for lab in labels:
        mask = plane_data == lab
        if not mask.any():
            continue
        for q in _loops_2d(mask):
            ijk = np.zeros((len(q), 3))
            ijk[:, others[0]], ijk[:, others[1]], ijk[:, axis] = q[:, 0], q[:, 1], index
            loops.append(Polygon(vol.to_world(ijk), label=lab))
    normal = np.cross(vol.affine[:3, others[0]], vol.affine[:3, others[1]])
    origin = vol.to_world(np.eye(3)[axis][None] * index)[0]
    n = normal / np.linalg.norm(normal)
    return Plane.through(n, loops, offset=-float(n.dot(origin)), id=pid)


def parse_families(text: str) -> dict[str, int]:
    """``"axial:6,sagittal:6"`` -> {"axial": 6, "sagittal": 6}."""
    out = {}
    for part in filter(None, (t.strip() for t in text.split(","))):
        m = re.fullmatch(r"(axial|sagittal|coronal):(\d+)", part.lower())
        if not m or int(m.group(2)) < 1:
            raise FieldStudioError(f"plane family {part!r} not understood; write e.g. axial:6,sagittal:6,coronal:6")
        out[m.group(1)] = int(m.group(2))
    if not out:
        raise FieldStudioError("no plane family given; write e.g. axial:6,sagittal:6,coronal:6")
    return out


def _axis_for(vol: LabelVolume, direction: str) -> int:
    """The array axis whose world direction is closest to the anatomical normal ``direction``."""
    world_axis = DIRECTIONS[direction]
    cols = vol.affine[:3, :3] / vol.spacing
    return int(np.argmax(np.abs(cols[world_axis])))


def volume_sections(vol: LabelVolume, labels: list[int] | None = None, every: int = 1, offset: int = 0,
                    families: str = "") -> CrossSections:
    """The chosen slices of ``vol`` as cross-sections in world mm, loops labelled by their label value."""
    present = vol.labels()
    if not present:
        raise FieldStudioError(f"{Path(vol.source).name} holds no label (every voxel is 0); nothing to reconstruct")
    labels = present if labels is None else labels
    missing = [lab for lab in labels if lab not in present]
    if missing:
        raise FieldStudioError(f"label(s) {missing} do not occur in {Path(vol.source).name}; its labels are {present}")
    if every < 1 or not 0 <= offset < every:
        raise FieldStudioError(f"--every {every} with offset {offset}: need every >= 1 and 0 <= offset < every")
    notes = list(vol.notes)
    chosen: list[tuple[int, int]] = []  # (axis, index)
    if families:
        mask = np.isin(vol.data, labels)
        for name, count in parse_families(families).items():
            axis = _axis_for(vol, name)
            occupied = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
            lo, hi = int(occupied.min()), int(occupied.max())
            # Evenly through the extent, half a step in from each end so the first and last planes cut the shape.
            picks = np.unique(np.round(lo + (np.arange(count) + 0.5) * (hi - lo + 1) / count - 0.5).astype(int))
            chosen += [(axis, int(i)) for i in picks]
    else:
        axis = vol.slice_axis()
        chosen = [(axis, int(i)) for i in range(offset, vol.data.shape[axis], every)]
    _note_border(vol, labels, notes)
    planes = [_slice_plane(vol, axis, index, labels, pid) for pid, (axis, index) in enumerate(chosen, start=1)]
    cs = CrossSections(planes, notes, vol.source)
    orient_loops(cs, report=False)
    return cs


def _note_border(vol: LabelVolume, labels: list[int], notes: list[str]) -> None:
    for lab in labels:
        mask = vol.data == lab
        faces = [f"{'ijk'[a]}={'0' if side == 0 else vol.data.shape[a] - 1}" for a in range(3) for side in (0, -1)
                 if np.take(mask, side, axis=a).any()]
        if faces:
            notes.append(f"label {lab} touches the volume border ({', '.join(faces)}): it is cut open there in the "
                         "data; the mesh is closed along the border")


# ------------------------------------------------------------------------------------------------ RTSTRUCT

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
    for roi in ds.ROIContourSequence:
        label = int(roi.ReferencedROINumber)
        for c in roi.get("ContourSequence", []):
            if str(c.get("ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
                continue
            pts = np.asarray(c.ContourData, dtype=np.float64).reshape(-1, 3)
            if len(pts) < 3:
                continue
            centre = pts.mean(axis=0)
            _, _, vt = np.linalg.svd(pts - centre, full_matrices=False)
            n = vt[-1] * (1 if vt[-1][int(np.argmax(np.abs(vt[-1])))] > 0 else -1)
            key = (tuple(np.round(n, 3)), round(float(n.dot(centre)), 3))
            groups.setdefault(key, []).append(Polygon(pts, label=label))
            normals[key] = n
    if not groups:
        raise FieldStudioError(f"{path.name} holds no closed planar contour")
    planes = [Plane.through(normals[k], loops, offset=-k[1], id=i + 1)
              for i, (k, loops) in enumerate(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])))]
    cs = CrossSections(planes, [], str(path))
    orient_loops(cs, report=False)
    return cs, names


__all__ = ["LabelVolume", "read_label_volume", "read_dicom_series", "volume_sections", "read_rtstruct",
           "is_medical", "parse_families", "VOLUME_SUFFIXES"]
