"""meshes.py
=========
Read triangle meshes (OBJ, PLY, STL, OFF, GLB/GLTF) into a clean ``trimesh.Trimesh`` and map them to the field box.

Frames: ``load_mesh`` keeps the file's own coordinates. ``BoxFrame`` maps them to the normalised box [-1, 1]^3 (a
uniform scale and a translation, so distances scale by one factor and angles are kept) and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from fieldstudio.errors import FieldStudioError

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
# A mesh thinner than this fraction of its length (along its flattest direction) is flat: it encloses no volume,
# and no marching-cubes grid (at most 2048 cells a side) could resolve a solid that thin anyway.
FLAT_RATIO = 1e-4


def load_mesh(path: str | Path) -> tuple[trimesh.Trimesh, dict]:
    """Load, validate and repair a mesh.

    Returns the mesh (duplicate vertices merged, degenerate faces dropped, winding made consistent where the
    surface allows it; ``mesh.metadata["file_name"]`` is the file's name) and a report: ``watertight``,
    ``n_vertices``, ``n_faces``, ``merged_vertices``, ``notes``.
    Raises FieldStudioError for a missing, unreadable, empty or non-finite mesh, and for a flat one (thinner than
    ``FLAT_RATIO`` of its length along its flattest direction, e.g. an open square): it encloses no volume.
    """
    path = Path(path)
    if not path.exists():
        raise FieldStudioError(f"input file not found: {path}")
    if path.is_dir():
        raise FieldStudioError(f"{path} is a folder; give a mesh file ({', '.join(MESH_SUFFIXES)})")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise FieldStudioError(
            f"{path.name}: unsupported mesh format {path.suffix!r}; use one of {', '.join(MESH_SUFFIXES)}")
    try:
        loaded = trimesh.load(path, force="mesh", process=False)
    except Exception as err:
        raise FieldStudioError(f"cannot read mesh {path}: {err or type(err).__name__}. "
                               "Is the file complete and really a mesh?") from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0 or len(loaded.vertices) == 0:
        raise FieldStudioError(f"{path} contains no triangles; export the surface as a triangle mesh")
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    bad = ~np.isfinite(vertices).all(axis=1)
    if bad.any():
        raise FieldStudioError(
            f"{path} has {int(bad.sum())} vertices with NaN or infinite coordinates; repair or re-export the mesh")
    n_before = len(vertices)
    mesh = trimesh.Trimesh(vertices=vertices, faces=np.asarray(loaded.faces), process=True)
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    if len(mesh.faces) == 0:
        raise FieldStudioError(f"{path}: every triangle is degenerate (zero area); the mesh has no surface")
    thickness = flatness(np.asarray(mesh.vertices))
    if thickness <= FLAT_RATIO:
        raise FieldStudioError(
            f"{path.name} encloses no volume: it is flat (its thickness is {thickness:.2g} of its length); fields "
            "are fitted to solids, so give the closed surface of a solid (close or thicken this one first)")
    mesh.metadata["file_name"] = path.name
    notes = []
    trimesh.repair.fix_winding(mesh)
    watertight = bool(mesh.is_watertight)
    if watertight:
        trimesh.repair.fix_inversion(mesh)
    else:
        notes.append("mesh is not watertight: inside/outside comes from ray-parity voting, not face winding")
    report = {"watertight": watertight, "n_vertices": len(mesh.vertices), "n_faces": len(mesh.faces),
              "merged_vertices": n_before - len(mesh.vertices), "notes": notes}
    return mesh, report


def flatness(points: np.ndarray) -> float:
    """Thickness over length of a point set: its span along its least-spread principal axis over its span along
    the most-spread one (0 for coplanar points, about 1 for a ball or a cube). Independent of the orientation:
    a tilted square is as flat as an axis-aligned one."""
    centred = points - points.mean(axis=0)
    _, axes = np.linalg.eigh(centred.T @ centred)
    spans = np.ptp(centred @ axes, axis=0)
    return float(spans.min() / spans.max()) if spans.max() > 0 else 0.0


@dataclass
class BoxFrame:
    """Uniform map from the input's world frame to the field box: ``box = (world - center) * scale``."""

    center: tuple[float, float, float]
    scale: float

    @classmethod
    def fit(cls, points: np.ndarray, extent: float = 0.95) -> "BoxFrame":
        """Centre the bounding box and scale its largest half-side to ``extent`` (< 1 keeps a margin)."""
        lo, hi = points.min(axis=0), points.max(axis=0)
        half = float((hi - lo).max()) / 2
        return cls(center=tuple(float(c) for c in (lo + hi) / 2), scale=extent / half)

    def to_box(self, points: np.ndarray) -> np.ndarray:
        return (points - np.asarray(self.center)) * self.scale

    def to_world_matrix(self) -> np.ndarray:
        """(4, 4) matrix taking box coordinates back to the input's world frame."""
        m = np.eye(4)
        m[:3, :3] /= self.scale
        m[:3, 3] = self.center
        return m

    def to_dict(self) -> dict:
        return {"center": list(self.center), "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> "BoxFrame":
        return cls(center=tuple(d["center"]), scale=float(d["scale"]))
