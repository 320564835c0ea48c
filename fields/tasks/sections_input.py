"""sections_input.py
=================
The cross-section task's inputs end to end: reading CSL files, label maps and RTSTRUCT contours as cross-sections,
splitting several labels into objects, building the training task, and scoring a mesh (Dice and HD95 against the
full label map; volume and area for contours).

Frames and units: everything stays in the input's world frame (patient mm for medical inputs); the task maps it
into the field box itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fieldstudio.config import label_list
from fieldstudio.data.medical_readers import RTSTRUCT_SUFFIXES as DICOM_SUFFIXES
from fieldstudio.data.medical_readers import VOLUME_SUFFIXES, is_label_map
from fieldstudio.errors import FieldStudioError
from fieldstudio.tasks.spec import Prepared, suffix_of

SUFFIXES = (".csl",) + VOLUME_SUFFIXES + DICOM_SUFFIXES


def load_sections(cfg):
    """The input's cross-sections (CSL, label-map slices or RTSTRUCT contours) and structure names by label
    (RTSTRUCT ROI names, DICOM SEG segment labels). Read once per job: planning and building both ask."""
    from fieldstudio.control import memoized

    sl = cfg.slices
    path = Path(cfg.input)
    stamp = path.stat().st_mtime_ns if path.exists() else 0
    key = ("sections", str(path), stamp, sl.label, sl.every, sl.slice_offset, sl.families)
    return memoized(key, lambda: _read_sections(cfg))


def _read_sections(cfg):
    from fieldstudio.data.cross_sections import read_csl
    from fieldstudio.data.medical_planes import volume_sections
    from fieldstudio.data.medical_readers import read_rtstruct

    if suffix_of(cfg.input) == ".csl":
        return read_csl(cfg.input), {}
    if suffix_of(cfg.input) in DICOM_SUFFIXES and not is_label_map(cfg.input):
        return read_rtstruct(cfg.input)
    sl = cfg.slices
    vol = read_volume(cfg.input)
    labels = [sl.label] if sl.label is not None else None
    cs = volume_sections(vol, labels, every=sl.every, offset=sl.slice_offset, families=sl.families)
    cs.notes.append(f"world frame {vol.world}, mm")
    return cs, vol.names


def read_volume(path):
    """The label map at ``path``, read once per job (sections per object and the scores all use it)."""
    from fieldstudio.control import memoized
    from fieldstudio.data.medical_readers import read_label_volume

    p = Path(path)
    return memoized(("volume", str(p), p.stat().st_mtime_ns if p.exists() else 0), lambda: read_label_volume(p))


def plan_objects(cfg) -> tuple[list[tuple[str, int]], list[str], dict[int, float]]:
    """The (folder name, label) objects a run reconstructs separately, notes on labels left out, and each object's
    world extent (largest side of its contours' box, for one voxel size across objects).

    An empty list means one object: inputs with one label, ``labels = "union"``, or a run of one label (then
    ``cfg.slices.label`` is set here). Labels with contours on fewer than two planes cannot make a volume and
    are left out with a note, unless the user asked for them by number (then it is an error).
    """
    if cfg.slices.label is not None or cfg.slices.labels.strip().lower() == "union":
        return [], [], {}
    cs, names = load_sections(cfg)
    labels = cs.labels()
    asked = label_list(cfg.slices.labels)
    if cfg.slices.rois:
        by_name = {v.lower(): k for k, v in names.items()}
        wanted_names = [t.strip() for t in cfg.slices.rois.split(",") if t.strip()]
        unknown = [n for n in wanted_names if n.lower() not in by_name]
        if unknown:
            raise FieldStudioError(f"ROI(s) {unknown} are not in {Path(cfg.input).name}; its ROIs are "
                                   f"{', '.join(repr(names[k]) for k in labels if k in names)}")
        asked = sorted({by_name[n.lower()] for n in wanted_names})
    if asked:
        missing = [lab for lab in asked if lab not in labels]
        if missing:
            raise FieldStudioError(f"label(s) {missing} do not occur in {Path(cfg.input).name}; its labels are "
                                   f"{labels}")
    elif len(labels) == 1:
        return [], [], {}
    planes_with = {lab: sum(any(lp.label == lab for lp in p.loops) for p in cs.planes) for lab in labels}
    wanted, skipped = [], []
    for lab in asked or labels:
        if planes_with[lab] >= 2:
            wanted.append(lab)
        elif asked:
            raise FieldStudioError(f"label {lab} has contours on {planes_with[lab]} plane(s); a volume needs at "
                                   "least two")
        else:
            skipped.append(f"label {lab} left out: it has contours on one plane only")
    if not wanted:
        raise FieldStudioError("no label has contours on two or more planes; nothing can be reconstructed")
    if len(wanted) == 1:
        cfg.slices.label = wanted[0]
        return [], skipped, {}
    extents = {lab: float(np.ptp(cs.select(lab).all_vertices(), axis=0).max()) for lab in wanted}
    return list(zip(object_names(wanted, names), wanted)), skipped, extents


def object_names(labels: list[int], names: dict[int, str]) -> list[str]:
    """Folder names of the labels' objects: the structure name made file-safe, else ``label_<N>``; names that
    collide (after sanitising, or duplicated ROI names, compared without case) get ``_label_<N>`` appended, so two
    objects never share a folder."""
    base = {}
    for lab in labels:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", names.get(lab, "")).strip("_.")
        base[lab] = safe or f"label_{lab}"
    counts: dict[str, int] = {}
    for name in base.values():
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    return [base[lab] if counts[base[lab].lower()] == 1 else f"{base[lab]}_label_{lab}" for lab in labels]


def build(cfg) -> Prepared:
    """The occupancy task of ``cfg.input`` (one label, or the union of all)."""
    from fieldstudio.tasks.slices import SlicesTask, fourier_sigma

    cs, names = load_sections(cfg)
    report = {**cs.summary(), "notes": list(cs.notes)}
    if cfg.slices.label is None and cfg.slices.multi_label == "joint":
        objects, _, _ = plan_objects(cfg)
        if objects:
            return _build_joint(cfg, cs, names, objects, report)
    if cfg.slices.label is not None:
        # Planes without this label's loops stay: they say the object is absent there.
        cs = cs.select(cfg.slices.label)
        report["label"] = cfg.slices.label
        if cfg.slices.label in names:
            report["roi"] = names[cfg.slices.label]
    elif len(cs.labels()) > 1:
        report["notes"].append(f"labels {cs.labels()} reconstructed as one object (their union)")
        report["labels"] = cs.labels()
        cs = cs.union()
    task = SlicesTask(cs, cfg.slices, seed=cfg.train.seed)
    x, y = task.levels[-1]
    return Prepared(task, task.frame, None, report, fourier_sigma=fourier_sigma(task.cs), surface=x[y == 0.5])


def _build_joint(cfg, cs, names: dict[int, str], objects: list[tuple[str, int]], report: dict) -> Prepared:
    """One task for every object's label: a field with an output per label (tasks/joint_slices.py)."""
    from fieldstudio.tasks.joint_slices import JointSlicesTask
    from fieldstudio.tasks.slices import fourier_sigma

    labels = [label for _, label in objects]
    task = JointSlicesTask(cs, labels, cfg.slices, seed=cfg.train.seed, names=names)
    report.update({"labels": labels, "multi_label": "joint"})
    x, y = task.levels[-1]
    edges = x[(y[:, 0] != y[:, 1]) & (y[:, 0] >= 0)]
    # The bandwidth cap of 1 holds for an object that fills the box; here the objects are smaller than the box, so
    # the cap grows with the box over the median object's extent (example_seg.nii.gz, 40 labels, 150 s: mean Dice
    # 0.915 at sigma 1, 0.962 at 2, 0.978 at 4; docs/benchmarks.md "Several labels").
    sizes = [float(np.ptp(task.cs.select(lab).all_vertices(), axis=0).max()) for lab in labels]
    cap = max(1.0, float(np.ptp(task.cs.all_vertices(), axis=0).max()) / float(np.median(sizes)))
    return Prepared(task, task.frame, None, report, fourier_sigma=fourier_sigma(task.cs, default=cap),
                    surface=edges, objects=[(name, label, box) for (name, label), box in zip(objects, task.boxes)])


def score(cfg, mesh, prepared: Prepared, run_dir: Path) -> tuple[dict, dict]:
    """Label maps: an STL beside the PLY (what planning tools import) and Dice/HD95 of the mesh voxelised back onto
    the input grid against the full mask of the labels it reconstructs. RTSTRUCT: STL, volume and area."""
    from fieldstudio.control import check_cancel
    from fieldstudio.mesh import export_mesh

    check_cancel()
    if is_label_map(cfg.input):
        from fieldstudio.metrics import mask_report

        files = {"stl": export_mesh(mesh, Path(run_dir) / "mesh.stl")}
        vol = read_volume(cfg.input)
        if cfg.slices.label is not None:
            labels = [cfg.slices.label]
        else:  # one object: the union of every label the input holds (or the one it has)
            labels = prepared.report.get("labels") or vol.labels()
        check_cancel()
        metrics = mask_report(mesh, np.isin(vol.data, labels), vol.affine)
        metrics.update({"world_frame": vol.world, "scored_labels": [int(v) for v in labels]})
        return metrics, files
    if suffix_of(cfg.input) in DICOM_SUFFIXES:
        files = {"stl": export_mesh(mesh, Path(run_dir) / "mesh.stl")}
        return {"volume_ml": abs(float(mesh.volume)) / 1000.0, "area_mm2": float(mesh.area),
                "world_frame": "LPS"}, files
    return {}, {}


__all__ = ["load_sections", "plan_objects", "object_names", "build", "score", "SUFFIXES"]
