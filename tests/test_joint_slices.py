"""Several labels in one field (fieldstudio.tasks.joint_slices): labels that touch share one boundary and never
overlap, labels that overlap are fitted one by one instead, and a joint run's objects can be meshed again."""

import json

import numpy as np
import pytest
import trimesh

from fieldstudio.data.cross_sections import CrossSections, Plane, Polygon, inside_by_label_2d, write_csl
from fieldstudio.errors import FieldStudioError
from fieldstudio.metrics import inside_mesh
from fieldstudio.run import fit, mesh_from_run


def rectangle(x0, x1, y0, y1, label):
    return Polygon(np.array([[x0, y0, 0.0], [x1, y0, 0.0], [x1, y1, 0.0], [x0, y1, 0.0]]), label=label)


def stack(loops_at, zs):
    """Planes z = const holding ``loops_at(z)`` (loops drawn at z = 0, moved up)."""
    planes = []
    for i, z in enumerate(zs):
        loops = [lp.copy(points=lp.points + [0.0, 0.0, z]) for lp in loops_at(z)]
        planes.append(Plane.through([0.0, 0.0, 1.0], loops, offset=-z, id=i))
    return CrossSections(planes)


def test_labels_are_classified_per_label_in_one_pass():
    """inside_by_label_2d answers as inside_2d of each label alone: a hole of label 1 filled by label 2."""
    outer = rectangle(-1, 1, -1, 1, 1)
    hole = rectangle(-0.5, 0.5, -0.5, 0.5, 1)
    island = rectangle(-0.5, 0.5, -0.5, 0.5, 2)
    plane = Plane.through([0, 0, 1], [outer, hole, island], offset=0.0)
    pts = np.array([[0.0, 0.0], [0.8, 0.0], [1.5, 0.0]])
    got = inside_by_label_2d(plane, plane.to_2d(np.c_[pts, np.zeros(3)]), [1, 2])
    assert got.tolist() == [[False, True], [True, False], [False, False]]


def test_touching_labels_share_their_boundary_and_never_overlap(tmp_path, quick_slices_config):
    """A slab cut in two at x = 0.2 (two labels on every plane, one shared edge): one field meshes both halves
    watertight, with almost no volume in both (a voxel sheet at most) and the slab filled."""
    zs = np.linspace(-0.6, 0.6, 9)
    cs = stack(lambda z: [rectangle(-1.0, 0.2, -0.6, 0.6, 1), rectangle(0.2, 1.0, -0.6, 0.6, 2)], zs)
    path = write_csl(cs, tmp_path / "halves.csl")
    cfg = quick_slices_config(path, steps=300, resolution=64)
    result = fit(cfg, tmp_path / "run")
    assert result.metrics["multi_label"] == "joint" and len(result.objects) == 2
    left, right = (trimesh.load(tmp_path / "run" / f"label_{k}" / "mesh.ply", process=False) for k in (1, 2))
    assert left.is_watertight and right.is_watertight
    rng = np.random.default_rng(0)
    pts = rng.uniform([-1.0, -0.6, -0.6], [1.0, 0.6, 0.6], size=(20_000, 3)) * 0.98
    a, b = inside_mesh(pts, left), inside_mesh(pts, right)
    assert (a & b).mean() < 0.01        # separate fits of the two halves overlap or gap by their own errors
    assert (a | b).mean() > 0.95        # together they fill the slab
    assert a[pts[:, 0] < 0.0].mean() > 0.95 and b[pts[:, 0] > 0.4].mean() > 0.95
    # Mesh one object again, as `fieldstudio mesh --object` does: the same field, the same box.
    path_again, report = mesh_from_run(tmp_path / "run", tmp_path / "right.ply", object_name="label_2")
    assert report["n_faces"] == len(right.faces)
    with pytest.raises(FieldStudioError, match="--object"):
        mesh_from_run(tmp_path / "run", tmp_path / "any.ply")


def test_overlapping_labels_are_fitted_one_by_one_with_a_note(tmp_path, quick_slices_config):
    """Nested structures (a body outline around an organ) cannot be one class per point: the run fits them
    separately and says why."""
    zs = np.linspace(-0.6, 0.6, 7)
    cs = stack(lambda z: [rectangle(-1.0, 1.0, -0.8, 0.8, 1), rectangle(-0.4, 0.4, -0.3, 0.3, 2)], zs)
    path = write_csl(cs, tmp_path / "nested.csl")
    cfg = quick_slices_config(path, steps=250, resolution=32)
    fit(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert any("label 1 and label 2 overlap" in note for note in metrics["notes"])
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    for name, (x, y) in (("label_1", (1.0, 0.8)), ("label_2", (0.4, 0.3))):  # each run has its own box and config
        assert (tmp_path / "run" / name / "checkpoint.pt").exists()
        assert (tmp_path / "run" / name / "config.toml").exists()
        mesh = trimesh.load(tmp_path / "run" / name / "mesh.ply", process=False)
        assert mesh.is_watertight
        assert np.allclose(mesh.bounds[1, :2], [x, y], atol=0.1)  # the outline holds the inner one, not a hole
