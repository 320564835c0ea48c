"""The contour bound (tasks/contour_bound.py): the slab prior's regions imposed on the meshed function."""

import numpy as np
import pytest
import torch

from fieldstudio.data.cross_sections import CrossSections, Plane, Polygon
from fieldstudio.mesh import extract_mesh
from fieldstudio.tasks.contour_bound import ContourBound
from fieldstudio.tasks.slab_prior import slab_prior

GAP = 0.25


def _circle(radius: float, z: float, centre=(0.0, 0.0), n: int = 128) -> Polygon:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return Polygon(np.stack([centre[0] + radius * np.cos(t), centre[1] + radius * np.sin(t), np.full(n, z)], axis=1))


def _stack(radii: list[float], z0: float = -0.5) -> CrossSections:
    """Planes z = z0 + i * GAP with a circle of radius ``radii[i]`` each (0: an empty plane)."""
    planes = []
    for i, r in enumerate(radii):
        z = z0 + i * GAP
        planes.append(Plane.through((0, 0, 1), [_circle(r, z)] if r > 0 else [], offset=-z, id=i + 1))
    return CrossSections(planes)


def _g(bound: ContourBound, pts) -> tuple[np.ndarray, np.ndarray]:
    g_in, g_out = bound.regions(torch.tensor(pts, dtype=torch.float32))
    return g_in.numpy(), g_out.numpy()


def test_regions_follow_the_cones_and_the_agreement_of_neighbouring_planes():
    cs = _stack([0.4, 0.4, 0.4, 0.0])  # a cylinder over three planes, then an empty plane at z = 0.25
    bound = ContourBound(cs, "both")
    g_in, g_out = _g(bound, [
        [0.0, 0.0, -0.375],   # between two planes inside both: inside
        [0.37, 0.0, -0.375],  # inside both, but by less than the margin (0.2 gap): undecided
        [0.6, 0.0, -0.375],   # outside both by more than the margin: outside
        [0.0, 0.0, 0.1],      # 0.4 gap above the last loop, deep inside it: the inside cone
        [0.0, 0.0, 0.2],      # 0.8 gap above it, 0.2 below the empty plane: its outside half-gap
        [0.0, 0.0, -0.6],     # 0.4 gap below the first plane, deep inside: the inside cone beyond the end
        [0.0, 0.0, -0.7],     # 0.8 gap below the first plane: nothing is said beyond half a gap
        [0.39, 0.0, -0.45],   # 0.2 gap above a plane but 0.01 inside its loop: not deep enough for the cone
    ])
    assert g_in[0] < 0 and g_out[0] > 0
    assert g_in[1] > 0 and g_out[1] > 0
    assert g_in[2] > 0 and g_out[2] < 0
    assert g_in[3] < 0 and g_out[3] > 0
    assert g_in[4] > 0 and g_out[4] < 0
    assert g_in[5] < 0 and g_out[5] > 0
    assert g_in[6] > 0 and g_out[6] > 0
    assert g_in[7] > 0
    # distance-like: in the middle of the first gap the agreement region is 0.4 - 0.05 deep
    assert g_in[0] == pytest.approx(-(0.4 - 0.2 * GAP), abs=0.01)


def test_regions_agree_with_the_slab_prior_labels():
    """The prior's labels (exact 2-D distances) and the bound's regions (rasters) say the same but within a pixel."""
    cs = _stack([0.3, 0.5, 0.45, 0.0, 0.2])
    bound = ContourBound(cs, "both")
    pts, y = slab_prior(cs, np.random.default_rng(0), points_per_gap=2048)
    g_in, g_out = _g(bound, pts)
    pixel = 1.0 / 256
    assert (g_in[y == 0] <= pixel).all() and (g_out[y == 1] <= pixel).all()
    assert (g_in[y == 0] <= 0).mean() > 0.9 and (g_out[y == 1] <= 0).mean() > 0.9
    assert not ((g_in < 0) & (g_out < 0)).any()


def test_the_bound_raises_a_part_the_field_closed_on_its_plane():
    """A field that is outside everywhere above z = -0.5 (it closed the cylinder on its last plane) meshes, bounded,
    to a surface that reaches the inside cone above that plane; outside mode "inside" nothing is cut away."""
    cs = _stack([0.4, 0.4])  # planes at z = -0.5 and -0.25

    def field(x: torch.Tensor) -> torch.Tensor:
        # the cylinder from z = -0.75, ending on the last plane
        return torch.maximum(torch.maximum(x[:, 2] + 0.25, -0.75 - x[:, 2]), x[:, :2].norm(dim=1) - 0.4)

    bounded = ContourBound(cs, "inside").bound(field)
    mesh = extract_mesh(bounded, 96)
    top = mesh.vertices[:, 2].max()
    # the cone's tip: half a gap (0.125) above the plane, at most a cell off
    assert top == pytest.approx(-0.25 + GAP / 2, abs=2.5 / 95)
    assert mesh.is_watertight
    plain = extract_mesh(field, 96)
    assert plain.vertices[:, 2].max() < -0.23


def test_planes_without_a_parallel_neighbour_give_no_bound():
    cs = CrossSections([Plane.through((0, 0, 1), [_circle(0.4, 0.0)], offset=0.0, id=1),
                        Plane.through((1, 0, 0), [], offset=0.0, id=2)])
    assert not ContourBound(cs, "inside")


def test_caps_hold_a_part_that_ends_between_planes_up_to_nearly_half_a_gap():
    """A disc on one plane that the next plane no longer shows (it shows another part elsewhere): with caps its cone
    reaches half a gap over most of the disc, without them only over its middle."""
    planes = [Plane.through((0, 0, 1), [_circle(0.2, -0.5, (-0.4, 0))], offset=0.5, id=1),
              Plane.through((0, 0, 1), [_circle(0.2, -0.25, (0.4, 0))], offset=0.25, id=2)]
    cs = CrossSections(planes)
    probe = [[-0.4 + 0.15, 0.0, -0.5 + 0.4 * GAP]]  # 0.05 inside the disc's rim, 0.4 gap above it
    assert _g(ContourBound(cs, "inside"), probe)[0][0] > 0
    assert _g(ContourBound(cs, "inside", cap_slope=0.25), probe)[0][0] < 0
    # the part that goes on above (the second disc seen from the first plane's side) gets no cap below it
    below_second = [[0.4 + 0.15, 0.0, -0.25 - 0.4 * GAP]]
    assert _g(ContourBound(cs, "inside", cap_slope=0.25), below_second)[0][0] < 0  # it ends too, going down


def test_a_fit_with_the_bound_meshes_around_what_both_planes_show(tmp_path, quick_slices_config, monkeypatch,
                                                                  capsys):
    """End to end (``slices.contour_bound``): after a few steps the field knows little, yet the mesh holds every
    point that two neighbouring contours both show by the margin; ``fieldstudio mesh --contour-bound`` meshes the
    same field again with or without the bound."""
    from conftest import run_cli

    import trimesh

    from fieldstudio.data.cross_sections import write_csl
    from fieldstudio.data.slicing import slice_mesh
    from fieldstudio.metrics import inside_mesh
    from fieldstudio.run import fit

    path = tmp_path / "capsule.csl"
    write_csl(slice_mesh(trimesh.creation.capsule(height=6.0, radius=2.0), 6, "parallel", axis="z"), path)
    cfg = quick_slices_config(path, steps=3, resolution=48)
    cfg.slices.contour_bound = "inside"
    result = fit(cfg, tmp_path / "run")
    mesh = trimesh.load(result.files["mesh"], force="mesh")
    assert mesh.is_watertight
    # the capsule's axis between its planes: inside both planes' circles by far more than the margin
    axis = np.stack([np.zeros(9), np.zeros(9), np.linspace(-2.5, 2.5, 9)], axis=1)
    assert inside_mesh(axis, mesh).all()

    code, _, err = run_cli(["mesh", tmp_path / "run", "-o", tmp_path / "plain.ply", "--contour-bound", "off"],
                           monkeypatch, capsys)
    # after 3 steps the field alone is outside everywhere: the bound made the surface above
    assert code == 2 and "no surface" in err and not (tmp_path / "plain.ply").exists()
    code, _, err = run_cli(["mesh", tmp_path / "run", "-o", tmp_path / "x.ply", "--contour-bound", "outside"],
                           monkeypatch, capsys)
    assert code == 2 and "contour_bound" in err and "off, inside or both" in err and "Traceback" not in err
    assert not (tmp_path / "x.ply").exists()


def test_outside_regions_only_for_a_single_stack():
    """A plane across the stack may show a part between two of its planes: "both" then keeps the inside regions and
    cuts nothing away."""
    cs = _stack([0.4, 0.4, 0.4])
    across = Plane.through((1, 0, 0), [Polygon(np.array([[0.0, 0.6, -0.4], [0.0, 0.8, -0.4], [0.0, 0.8, -0.3],
                                                         [0.0, 0.6, -0.3]]))], offset=0.0, id=9)
    probe = [[0.0, 0.7, -0.375]]  # outside both circles by far more than the margin, inside the other plane's loop
    assert _g(ContourBound(cs, "both"), probe)[1][0] < 0
    two = CrossSections(cs.planes + [across])
    bound = ContourBound(two, "both")
    assert _g(bound, probe)[1][0] == np.inf

    def outside_everywhere(x):
        return torch.ones(len(x))

    assert bound.bound(outside_everywhere)(torch.tensor(probe, dtype=torch.float32))[0] > 0
