"""Tests of the cross-section metrics in fields/metrics.py: contour_fidelity, mesh_section, roughness_deg."""

import numpy as np
import pytest
import trimesh

from fieldstudio.data.cross_sections import CrossSections, Plane, Polygon
from fieldstudio.data.slicing import slice_mesh
from fieldstudio.errors import FieldStudioError
from fieldstudio.metrics import contour_fidelity, mesh_section, roughness_deg

CENTRE = np.array([3.0, -2.0, 5.0])


def _sphere(subdivisions: int = 4, shift=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0)
    mesh.apply_translation(CENTRE + np.asarray(shift))
    return mesh


@pytest.mark.parametrize("layout", ["parallel", "orthogonal", "random"])
def test_sphere_reproduces_its_own_circles(layout):
    sphere = _sphere()
    cs = slice_mesh(sphere, 10, layout)
    fid = contour_fidelity(sphere, cs)
    assert len(fid["per_plane"]) == len(cs.planes) == len(fid["plane_ids"])
    assert fid["min"] > 0.99 and fid["mean"] > 0.99
    assert fid["open_chains"] == 0
    # another tessellation of the same sphere: still every plane well above the protocol's 0.97
    assert contour_fidelity(_sphere(5), cs)["min"] > 0.98


def test_shifted_sphere_scores_clearly_lower():
    cs = slice_mesh(_sphere(), 10, "parallel")
    fid = contour_fidelity(_sphere(shift=(0.1, 0.0, 0.0)), cs)
    assert fid["mean"] < 0.9 and fid["min"] < 0.8
    # a section reaching outside the contours' padded box still counts against the mesh (box grows)
    far = contour_fidelity(_sphere(shift=(0.6, 0.0, 0.0)), cs)
    assert far["mean"] < 0.5


def test_holes_follow_the_even_odd_rule():
    # a torus cut through its axis (plane z = 0 here: a washer with a hole) and by random planes
    torus = trimesh.creation.torus(10.0, 4.0)
    cs = slice_mesh(torus, 12, "random", seed=1)
    assert contour_fidelity(torus, cs)["min"] > 0.99
    washer = slice_mesh(torus, 3, "parallel", axis="z")
    assert any(len(p.loops) == 2 for p in washer.planes)
    # a solid disc in place of the washer: the hole counts against it
    disc = trimesh.creation.cylinder(radius=14.0, height=8.0, sections=128)
    fid = contour_fidelity(disc, washer)
    assert fid["mean"] < 0.8


def test_plane_without_contours_and_empty_section():
    sphere = _sphere()
    cs = slice_mesh(sphere, 4, "parallel")
    # an extra plane far from the sphere with no contour: both empty -> 1
    far = Plane.through([0.0, 0.0, 1.0], [], offset=-(CENTRE[2] + 5.0), id=99)
    fid = contour_fidelity(sphere, CrossSections(cs.planes + [far]))
    assert fid["per_plane"][-1] == 1.0 and fid["min"] > 0.99
    # a contour where the mesh has nothing -> 0 on that plane
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float) + 40.0
    plane = Plane.through([0.0, 0.0, 1.0], [], offset=-CENTRE[2])
    lonely = plane.copy(loops=[Polygon(plane.to_3d(square))])
    assert contour_fidelity(sphere, CrossSections([lonely]))["per_plane"] == [0.0]


def test_mesh_section_survives_planes_through_vertices():
    box = trimesh.creation.box(extents=(2.0, 2.0, 2.0))  # vertices at z = +-1; cut exactly through the face
    plane = Plane.through([0.0, 0.0, 1.0], [], offset=0.0)
    loops, n_open = mesh_section(box, plane)
    assert len(loops) == 1 and n_open == 0
    plane_on_face = Plane.through([0.0, 0.0, 1.0], [], offset=-1.0 + 1e-12)
    loops, n_open = mesh_section(box, plane_on_face)
    assert n_open == 0


def test_no_planes_is_a_user_error():
    with pytest.raises(FieldStudioError):
        contour_fidelity(_sphere(), CrossSections([]))


def test_roughness_small_for_fine_sphere_and_grows_with_noise():
    coarse, fine = roughness_deg(_sphere(3)), roughness_deg(_sphere(5))
    assert fine < 2.0 and fine < coarse  # ~ edge length / radius
    noisy = _sphere(5)
    noisy.vertices = noisy.vertices + np.random.default_rng(0).normal(scale=0.005, size=noisy.vertices.shape)
    assert roughness_deg(noisy) > 3 * fine
    # a cube: 6 coplanar diagonal pairs at 0 deg, 12 edges at 90 deg
    assert roughness_deg(trimesh.creation.box()) == pytest.approx(60.0)


def test_roughness_merges_triangle_soups():
    sphere = _sphere(4)
    soup = trimesh.Trimesh(sphere.vertices[sphere.faces].reshape(-1, 3),
                           np.arange(3 * len(sphere.faces)).reshape(-1, 3), process=False)
    assert roughness_deg(soup) == pytest.approx(roughness_deg(sphere), rel=1e-9)


def test_a_small_part_the_mesh_lacks_is_listed_though_the_plane_iou_barely_moves():
    """A big ball and a small one, cut by parallel planes; a mesh of the big ball alone keeps every plane's IoU
    above 0.95 but lists the small ball's loops as missed; the washer's hole (even-odd: outside) is no miss."""
    big = _sphere()
    small = trimesh.creation.icosphere(3, radius=0.15)
    small.apply_translation(CENTRE + [1.3, 0.0, 0.0])
    both = trimesh.util.concatenate([big, small])
    cs = slice_mesh(both, 7, "parallel", axis="z")
    with_small = [p.id for p in cs.planes if any(lp.points[:, 0].mean() > CENTRE[0] + 1.1 for lp in p.loops)]
    assert with_small
    fid = contour_fidelity(big, cs)
    assert {m[0] for m in fid["missed_loops"]} == set(with_small) and fid["min"] > 0.95
    assert all(0 < m[2] < 0.08 for m in fid["missed_loops"])  # areas: at most the small ball's equator
    assert contour_fidelity(both, cs)["missed_loops"] == []
    torus = trimesh.creation.torus(10.0, 4.0)
    assert contour_fidelity(torus, slice_mesh(torus, 3, "parallel", axis="z"))["missed_loops"] == []
