"""The slab prior: labelled points between neighbouring parallel contours (tasks/slab_prior.py)."""

import numpy as np
import torch

from fieldstudio.config import SlicesTaskConfig
from fieldstudio.data.cross_sections import CrossSections, Plane, Polygon
from fieldstudio.tasks.slab_prior import signed_distance_2d
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


def test_task_batches_carry_the_prior_share_when_it_is_on():
    cs = CrossSections([Plane.through([0, 0, 1], [disc(z, 0.5)], offset=-z) for z in (-0.4, 0.0, 0.4)])
    task = SlicesTask(cs, SlicesTaskConfig(white_noise=200, hull_points=200, prior_weight=1.0), seed=0)
    b = task.batch(0, 1000, torch.Generator().manual_seed(0), progress=0.5)
    assert b["prior"] == 250 and len(b["x"]) == 1000
    off = SlicesTask(cs, SlicesTaskConfig(white_noise=200, hull_points=200), seed=0)  # the default: off
    assert len(off.prior[0]) == 0
    assert off.batch(0, 1000, torch.Generator().manual_seed(0), progress=0.5)["prior"] == 0
