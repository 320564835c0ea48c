"""The slab prior: labelled points between neighbouring parallel contours (tasks/slab_prior.py)."""

import numpy as np
import torch
import trimesh

from fieldstudio.config import SlicesTaskConfig
from fieldstudio.data.cross_sections import CrossSections, Plane, Polygon
from fieldstudio.data.slicing import slice_mesh
from fieldstudio.tasks.slab_prior import signed_distance_2d, slab_prior
from fieldstudio.tasks.slices import SlicesTask


def disc(z: float, r: float, centre=(0.0, 0.0), n: int = 64) -> Polygon:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return Polygon(np.stack([centre[0] + r * np.cos(a), centre[1] + r * np.sin(a), np.full(n, z)], axis=1))


def test_signed_distance_is_negative_inside_and_exact_for_a_square():
    sq = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], float)
    plane = Plane.through([0, 0, 1], [Polygon(sq)], offset=0.0)
    q = plane.to_2d(np.array([[0, 0, 0], [0.5, 0, 0], [3, 0, 0], [2, 2, 0]], float))
    d = signed_distance_2d(plane, q)
    np.testing.assert_allclose(d, [-1.0, -0.5, 2.0, np.sqrt(2)], atol=1e-12)
    assert np.isinf(signed_distance_2d(Plane.through([0, 0, 1], [], offset=0.0), q)).all()


def test_labels_of_a_sliced_sphere_are_right_except_near_its_surface():
    """Every label is checked against the sphere itself: inside and outside both occur, between planes and beyond
    the outermost ones; the few wrong ones (surfaces curving between planes) lie within a fifth of a gap of it."""
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.8)
    cs = slice_mesh(sphere, 8, "parallel", axis="z")
    gap = float(np.diff(sorted(p.origin[2] for p in cs.planes)).mean())
    x, y = slab_prior(cs, np.random.default_rng(0))
    r = np.linalg.norm(x, axis=1)
    truth = np.where(r < 0.8, 0.0, 1.0)
    assert (y == 0).sum() > 1000 and (y == 1).sum() > 1000
    wrong = y != truth
    assert wrong.mean() < 0.01
    assert np.abs(r[wrong] - 0.8).max() < 0.2 * gap
    top = max(p.origin[2] for p in cs.planes)
    assert ((x[:, 2] > top) & (y == 0)).any()  # the cap beyond the last plane is held inside
    off_plane = np.min([np.abs(x[:, 2] - p.origin[2]) for p in cs.planes], axis=0) > 0.1 * gap
    assert off_plane.mean() > 0.8  # the points are between the planes, where nothing else supervises


def test_a_thin_tube_is_inside_at_mid_gap_and_far_points_are_outside():
    """Two planes cutting a thin vertical tube: its axis half-way between them is inside (agreement), and a point
    far from the tube between the planes is outside; a lone oblique plane adds nothing."""
    cs = CrossSections([Plane.through([0, 0, 1], [disc(z, 0.05)], offset=-z) for z in (0.0, 0.3)])
    x, y = slab_prior(cs, np.random.default_rng(0), points_per_gap=20000)
    mid = (np.abs(x[:, 2] - 0.15) < 0.03)
    core = mid & (np.linalg.norm(x[:, :2], axis=1) < 0.02)
    far = mid & (np.linalg.norm(x[:, :2], axis=1) > 0.2)
    assert core.any() and (y[core] == 0).all()
    assert far.any() and (y[far] == 1).all()
    tilted = CrossSections([Plane.through([0, 0, 1], [disc(0.0, 0.3)], offset=0.0),
                            Plane.through([1, 0, 1], [disc(0.0, 0.3)], offset=0.0)])
    assert len(slab_prior(tilted, np.random.default_rng(0))[0]) == 0


def test_task_batches_carry_the_prior_share_when_it_is_on():
    cs = CrossSections([Plane.through([0, 0, 1], [disc(z, 0.5)], offset=-z) for z in (-0.4, 0.0, 0.4)])
    task = SlicesTask(cs, SlicesTaskConfig(white_noise=200, hull_points=200, prior_weight=1.0), seed=0)
    b = task.batch(0, 1000, torch.Generator().manual_seed(0), progress=0.5)
    assert b["prior"] == 250 and len(b["x"]) == 1000
    off = SlicesTask(cs, SlicesTaskConfig(white_noise=200, hull_points=200), seed=0)  # the default: off
    assert len(off.prior[0]) == 0
    assert off.batch(0, 1000, torch.Generator().manual_seed(0), progress=0.5)["prior"] == 0
