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


def test_labels_of_a_sliced_sphere_are_right_between_planes_and_within_half_a_gap_beyond():
    """Every label is checked against the sphere itself. Between the planes few are wrong (the outside cones near the
    poles, where the wall leaves a plane at a shallow angle: 30 of 21,500 here), all hugging the surface; beyond the
    end planes the inside cone bets on a cap half a gap high (stacking's bet), so its wrong labels (the sphere's caps
    are lower) lie within half a gap of the surface."""
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.8)
    cs = slice_mesh(sphere, 8, "parallel", axis="z")
    heights = sorted(p.origin[2] for p in cs.planes)
    gap = float(np.diff(heights).mean())
    x, y = slab_prior(cs, np.random.default_rng(0))
    r = np.linalg.norm(x, axis=1)
    truth = np.where(r < 0.8, 0.0, 1.0)
    assert (y == 0).sum() > 1000 and (y == 1).sum() > 1000
    beyond = (x[:, 2] < heights[0]) | (x[:, 2] > heights[-1])
    wrong = y != truth
    between = wrong & ~beyond
    assert between.sum() < 0.005 * (~beyond).sum()
    assert np.abs(r[between] - 0.8).max() < 0.1 * gap
    assert ((y == 0) & beyond).any()  # the caps are held inside
    assert np.abs(r[wrong] - 0.8).max() < 0.5 * gap
    off_plane = np.min([np.abs(x[:, 2] - h) for h in heights], axis=0) > 0.1 * gap
    # heights are drawn uniformly (0.8 of them beyond 0.1 gap); the cones keep more of those near a plane (0.77 here)
    assert off_plane.mean() > 0.7  # the points are between the planes, where nothing else supervises


def test_a_thin_tube_is_inside_at_mid_gap_and_far_points_are_outside():
    """Two planes 0.15 apart cutting a tube of radius 0.05: its axis half-way between them is inside (the contours
    agree by more than the 0.03 margin), a point far from the tube between the planes is outside; a lone oblique
    plane adds nothing."""
    cs = CrossSections([Plane.through([0, 0, 1], [disc(z, 0.05)], offset=-z) for z in (0.0, 0.15)])
    x, y = slab_prior(cs, np.random.default_rng(0), points_per_gap=20000)
    mid = np.abs(x[:, 2] - 0.075) < 0.02
    core = mid & (np.linalg.norm(x[:, :2], axis=1) < 0.015)
    far = mid & (np.linalg.norm(x[:, :2], axis=1) > 0.1)
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
    from fieldstudio.field import Field, preset, resolve_budget

    cfg = preset("mlp", "slices", params=2000)
    cfg.fourier.sigma = 1.0
    field = Field(resolve_budget(cfg))
    task.cfg.hinge_weight = 0.0  # the BCE alone
    task.cfg.prior_weight = 0.0  # the prior's quarter weighs nothing: the loss is the data points' alone
    data_only = {**b, "x": b["x"][:-250], "y": b["y"][:-250], "prior": 0}
    torch.testing.assert_close(task.loss(field, b)[0] * 1000 / 750, task.loss(field, data_only)[0])
    off = SlicesTask(cs, SlicesTaskConfig(white_noise=200, hull_points=200), seed=0)  # the default: off
    assert len(off.prior[0]) == 0
    assert off.batch(0, 1000, torch.Generator().manual_seed(0), progress=0.5)["prior"] == 0


def test_every_loop_gets_its_lens_points_however_small():
    """slices.loop_cores: n points per loop, the same for a tiny loop as for a large one, lifted off the plane by at
    most half their depth; on a sliced ball (a large and a small one) nearly all labels are right."""
    from fieldstudio.tasks.slices import loop_cores

    big = trimesh.creation.icosphere(subdivisions=4, radius=0.6)
    small = trimesh.creation.icosphere(subdivisions=3, radius=0.08)
    small.apply_translation([0.8, 0.0, 0.0])
    cs = slice_mesh(trimesh.util.concatenate([big, small]), 5, "parallel", axis="z")
    plane = next(p for p in cs.planes if len(p.loops) == 2)
    x, y = loop_cores(plane, 200, np.random.default_rng(0))
    assert len(x) == 400 and (y == 0).all()  # no holes here: every lens point is inside
    near_small = np.linalg.norm(x - [0.8, 0.0, 0.0], axis=1) < 0.1
    assert near_small.sum() == 200
    h = np.abs((x - plane.origin) @ plane.normal)
    d = -signed_distance_2d(plane, plane.to_2d(x))
    assert (h <= d / 2 + 1e-9).all()
    inside_truth = (np.linalg.norm(x, axis=1) < 0.6) | near_small & (np.linalg.norm(x - [0.8, 0, 0], axis=1) < 0.08)
    assert inside_truth.mean() > 0.99


def test_a_part_that_ends_gets_a_steep_cap_and_a_shrinking_part_does_not():
    """Plane 0 cuts a big disc and a small one; plane 1 only a smaller big disc. With a cap slope of 0.25 the small
    part, which plane 1 no longer shows, is held inside up to half a gap above its plane (stacking's bet) almost to
    its rim; the ring where the big part shrinks keeps the ordinary 1:2 cone (a cap there would be a terrace)."""
    gap = 0.2
    a = Plane.through([0, 0, 1], [disc(0.0, 0.3, (-0.4, 0)), disc(0.0, 0.1, (0.5, 0))], offset=0.0)
    b = Plane.through([0, 0, 1], [disc(gap, 0.2, (-0.4, 0))], offset=-gap)
    x, y = slab_prior(CrossSections([a, b]), np.random.default_rng(0), points_per_gap=40000, cap_slope=0.25)
    h = x[:, 2]
    r_small = np.linalg.norm(x[:, :2] - [0.5, 0], axis=1)
    r_big = np.linalg.norm(x[:, :2] - [-0.4, 0], axis=1)
    high = (h > 0.35 * gap) & (h < 0.5 * gap)
    cap = high & (r_small < 0.1 - 0.25 * h - 0.005)
    assert cap.sum() > 20 and (y[cap] == 0).all()
    ring = high & (r_big > 0.22) & (r_big < 0.28)  # inside plane 0's loop by at most 0.08 < 2 x the height
    assert not ((y[ring] == 0).any())
    x0, y0 = slab_prior(CrossSections([a, b]), np.random.default_rng(0), points_per_gap=40000)
    h0 = x0[:, 2]
    cap0 = (h0 > 0.35 * gap) & (h0 < 0.5 * gap) & (np.linalg.norm(x0[:, :2] - [0.5, 0], axis=1) < 0.05)
    assert not (y0[cap0] == 0).any()  # the ordinary cone reaches 0.05 high at most there (depth 0.1 / 2)
