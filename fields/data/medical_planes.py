"""medical_planes.py
==================
A label map (:class:`~fieldstudio.data.medical_readers.LabelVolume`) as cross-sections in its world frame (mm):
per label, the label's boundary on chosen planes.

Planes are every ``every``-th slice along the acquisition axis (the one with the largest spacing; ties: the last
array axis) from ``offset``, or families such as ``axial:6,sagittal:6,coronal:6`` (evenly spaced through the
label's extent, along the array axis closest to that anatomical direction), or oblique families such as
``1/0/1:6`` (a plane normal in world coordinates; the volume is resampled on those planes). Boundaries come from
marching squares at level 0.5 on the zero-padded slice (contourpy), so a label cut by the edge of the volume is
closed along that edge (noted); along the slice axis the padding is an empty plane one slice beyond a border slice
that holds the label. Slices without the label stay in as planes where it is known to be absent.

:func:`kept_planes` gives the same choice of planes as world plane equations (for drawing them).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fieldstudio.data.cross_sections import CrossSections, Plane, Polygon, orient_loops, plane_basis
from fieldstudio.data.medical_readers import LabelVolume, nonzero_bounds
from fieldstudio.errors import FieldStudioError

DIRECTIONS = {"sagittal": 0, "coronal": 1, "axial": 2}  # anatomical normal: world axis x, y, z (RAS and LPS alike)

def index_along(a: np.ndarray, index: int, axis: int) -> np.ndarray:
    """``a``'s slice ``index`` along ``axis``, as a view (np.take copies element by element: 21 ms per slice of a
    233 x 167 x 191 label map along its last axis, 4 s for all of them)."""
    return a[(slice(None),) * axis + (index,)]


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
    """Slice ``index`` along ``axis``; an index just outside the volume gives an empty plane (zero padding)."""
    others = [a for a in range(3) if a != axis]
    inside = 0 <= index < vol.data.shape[axis]
    plane_data = index_along(vol.data, index, axis) if inside else None
    loops = []
    for lab in labels if inside else []:
        mask = plane_data == lab
        if not mask.any():
            continue
        for q in _loops_2d(mask):
            ijk = np.zeros((len(q), 3))
            ijk[:, others[0]], ijk[:, others[1]], ijk[:, axis] = q[:, 0], q[:, 1], index
            loops.append(Polygon(vol.to_world(ijk), label=lab))
    n, d = slice_plane(vol, axis, index)
    return Plane.through(n, loops, offset=d, id=pid)


def slice_plane(vol: LabelVolume, axis: int, index: float) -> tuple[np.ndarray, float]:
    """World plane (unit normal n, offset d: n . x + d = 0) of slice ``index`` along array ``axis``."""
    others = [a for a in range(3) if a != axis]
    normal = np.cross(vol.affine[:3, others[0]], vol.affine[:3, others[1]])
    origin = vol.to_world(np.eye(3)[axis][None] * index)[0]
    n = normal / np.linalg.norm(normal)
    return n, -float(n.dot(origin))


def parse_families(text: str) -> list[tuple[str | np.ndarray, int]]:
    """``"axial:6,sagittal:6,1/0/1:4"`` -> [("axial", 6), ("sagittal", 6), (unit vector (1, 0, 1)/sqrt 2, 4)].

    A family is an anatomical direction (axial, sagittal, coronal) or an oblique plane normal written x/y/z in
    the file's world frame, then the number of planes.
    """
    out: list[tuple[str | np.ndarray, int]] = []
    number = r"[-+]?(?:\d+\.?\d*|\.\d+)"
    for part in filter(None, (t.strip() for t in text.split(","))):
        m = re.fullmatch(rf"(axial|sagittal|coronal|{number}/{number}/{number}):(\d+)", part.lower())
        if not m or int(m.group(2)) < 1:
            raise FieldStudioError(f"plane family {part!r} not understood; write e.g. axial:6,sagittal:6,coronal:6 "
                                   "or an oblique normal in world coordinates such as 1/0/1:6")
        direction: str | np.ndarray = m.group(1)
        if "/" in m.group(1):
            vec = np.array([float(c) for c in m.group(1).split("/")])
            if np.linalg.norm(vec) == 0:
                raise FieldStudioError(f"plane family {part!r}: the normal 0/0/0 has no direction")
            direction = vec / np.linalg.norm(vec)
        out.append((direction, int(m.group(2))))
    if not out:
        raise FieldStudioError("no plane family given; write e.g. axial:6,sagittal:6,coronal:6")
    return out


def axis_for(vol: LabelVolume, direction: str) -> int:
    """The array axis whose world direction is closest to the anatomical normal ``direction``."""
    world_axis = DIRECTIONS[direction]
    cols = vol.affine[:3, :3] / vol.spacing
    return int(np.argmax(np.abs(cols[world_axis])))


def _label_box(vol: LabelVolume, labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Index bounds (lo, hi inclusive) of the voxels holding any of ``labels`` (which occur in ``vol``)."""
    return nonzero_bounds(np.isin(vol.data, labels))


def _widened(vol: LabelVolume, box: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The labels' index bounds (_label_box), widened by a voxel of background."""
    lo, hi = box
    return np.maximum(lo - 1, 0), np.minimum(hi + 1, np.array(vol.data.shape) - 1)


def _oblique_offsets(vol: LabelVolume, labels: list[int], box: tuple[np.ndarray, np.ndarray], normal: np.ndarray,
                     count: int) -> np.ndarray:
    """``count`` positions along the world ``normal`` evenly through the labels' extent (half a step in from each
    end): the planes are ``normal . x = offset``."""
    lo, hi = _widened(vol, box)
    t = vol.to_world(np.argwhere(np.isin(vol.data[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1], labels))
                     + lo) @ normal  # the labels' own extent along the normal, not their box's
    step = (t.max() - t.min()) / count
    return t.min() + (np.arange(count) + 0.5) * step


def _oblique_planes(vol: LabelVolume, labels: list[int], box: tuple[np.ndarray, np.ndarray], normal: np.ndarray,
                    offsets: np.ndarray, first_id: int) -> list[Plane]:
    """The planes ``normal . x = offset`` (world), the volume resampled on each.

    Every label's mask is interpolated trilinearly on a grid of the smallest voxel spacing, and its 0.5 level
    traced by marching squares, so a boundary between voxel centres falls where it does on acquired slices.
    """
    from scipy.ndimage import map_coordinates

    lo, hi = _widened(vol, box)
    corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1).T
    world = vol.to_world(corners)
    u, v = plane_basis(normal)
    h = float(vol.spacing.min())
    a = np.arange((world @ u).min(), (world @ u).max() + h, h)
    b = np.arange((world @ v).min(), (world @ v).max() + h, h)
    inv = np.linalg.inv(vol.affine)
    crop = vol.data[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
    masks = {lab: (crop == lab).astype(np.float32) for lab in labels}
    planes = []
    for pid, off in enumerate(offsets, start=first_id):
        pts = off * normal + a[:, None, None] * u + b[None, :, None] * v  # (len a, len b, 3) world mm
        ijk = pts.reshape(-1, 3) @ inv[:3, :3].T + inv[:3, 3] - lo
        loops = []
        for lab, m in masks.items():
            values = map_coordinates(m, ijk.T, order=1, mode="constant", cval=0.0).reshape(len(a), len(b))
            for q in _loops_2d(values):
                loops.append(Polygon(off * normal + np.outer(a[0] + q[:, 0] * h, u) + np.outer(b[0] + q[:, 1] * h, v),
                                     label=lab))
        planes.append(Plane.through(normal, loops, offset=-float(off), id=pid))
    return planes


def _checked_labels(vol: LabelVolume, labels: list[int] | None, every: int, offset: int) -> list[int]:
    """The labels to cut (all present ones by default), after checking them and the slice choice."""
    present = vol.labels()
    if not present:
        raise FieldStudioError(f"{Path(vol.source).name} holds no label (every voxel is 0); nothing to reconstruct")
    labels = present if labels is None else labels
    missing = [lab for lab in labels if lab not in present]
    if missing:
        raise FieldStudioError(f"label(s) {missing} do not occur in {Path(vol.source).name}; its labels are {present}")
    if every < 1 or not 0 <= offset < every:
        raise FieldStudioError(f"--every {every} with offset {offset}: need every >= 1 and 0 <= offset < every")
    return labels


def _choose(vol: LabelVolume, labels: list[int], every: int, offset: int, families: str):
    """The one rule for which planes are kept: acquired slices [(axis, index)] and oblique families
    [(world unit normal, offsets)], in plane order (acquired first)."""
    chosen: list[tuple[int, int]] = []  # (axis, index) of acquired slices
    oblique: list[tuple[np.ndarray, np.ndarray]] = []
    if families:
        box = _label_box(vol, labels)
        lo, hi = box
        for direction, count in parse_families(families):
            if not isinstance(direction, str):
                oblique.append((direction, _oblique_offsets(vol, labels, box, direction, count)))
                continue
            axis = axis_for(vol, direction)
            # Evenly through the extent, half a step in from each end so the first and last planes cut the shape.
            n = hi[axis] - lo[axis] + 1
            picks = np.unique(np.round(lo[axis] + (np.arange(count) + 0.5) * n / count - 0.5).astype(int))
            chosen += [(axis, int(i)) for i in picks]
    else:
        axis = vol.slice_axis()
        n = vol.data.shape[axis]
        chosen = [(axis, int(i)) for i in range(offset, n, every)]
        # Zero padding along the slice axis too: a label on a border slice gets an empty plane one slice beyond
        # it, as marching squares closes it half a voxel beyond the edge in-plane. Without it only the hull's
        # margin (5 % of the distance to the centre: 0.03 mm on a 3-slice SEG) bounds it: the cap is cut off at
        # the last slice, and outside samples that close to inside ones slow training down.
        if np.isin(index_along(vol.data, 0, axis), labels).any():
            chosen.insert(0, (axis, -1))
        if np.isin(index_along(vol.data, n - 1, axis), labels).any():
            chosen.append((axis, n))
    return chosen, oblique


def kept_planes(vol: LabelVolume, labels: list[int] | None = None, every: int = 1, offset: int = 0,
                families: str = "") -> list[tuple[np.ndarray, float]]:
    """The world planes (unit normal n, offset d: n . x + d = 0) that :func:`volume_sections` cuts, in its order,
    without tracing any boundary (cheap: for drawing them)."""
    labels = _checked_labels(vol, labels, every, offset)
    chosen, oblique = _choose(vol, labels, every, offset, families)
    planes = [slice_plane(vol, axis, index) for axis, index in chosen]
    return planes + [(normal, -float(off)) for normal, offsets in oblique for off in offsets]


def volume_sections(vol: LabelVolume, labels: list[int] | None = None, every: int = 1, offset: int = 0,
                    families: str = "") -> CrossSections:
    """The chosen slices of ``vol`` as cross-sections in world mm, loops labelled by their label value."""
    labels = _checked_labels(vol, labels, every, offset)
    notes = list(vol.notes)
    chosen, oblique = _choose(vol, labels, every, offset, families)
    _note_border(vol, labels, notes)
    planes = [_slice_plane(vol, axis, index, labels, pid) for pid, (axis, index) in enumerate(chosen, start=1)]
    if oblique:
        box = _label_box(vol, labels)
        for normal, offsets in oblique:
            planes += _oblique_planes(vol, labels, box, normal, offsets, len(planes) + 1)
    cs = CrossSections(planes, notes, vol.source)
    orient_loops(cs, report=False)
    return cs


def _note_border(vol: LabelVolume, labels: list[int], notes: list[str]) -> None:
    for lab in labels:
        mask = vol.data == lab
        faces = [f"{'ijk'[a]}={'0' if side == 0 else vol.data.shape[a] - 1}" for a in range(3) for side in (0, -1)
                 if index_along(mask, side, a).any()]
        if faces:
            notes.append(f"label {lab} touches the volume border ({', '.join(faces)}): it is cut open there in the "
                         "data; the mesh is closed along the border (as if the volume were padded with background)")


__all__ = ["volume_sections", "kept_planes", "slice_plane", "parse_families", "axis_for", "DIRECTIONS"]
