"""SDF task: ground truth, sampling, and a fitted sphere."""

import numpy as np
import pytest
import torch
import trimesh

from fieldstudio.config import SDFTaskConfig, TrainConfig
from fieldstudio.data.meshes import BoxFrame, load_mesh
from fieldstudio.errors import FieldStudioError
from fieldstudio.field import Field, preset, resolve_budget
from fieldstudio.tasks.sdf import MeshOracle, SDFSamples, SDFTask
from fieldstudio.train import train


def test_oracle_sign_ignores_winding_and_survives_holes():
    sphere = trimesh.creation.icosphere(3, radius=0.5)
    inward = trimesh.Trimesh(sphere.vertices, sphere.faces[:, ::-1], process=False)
    holed = trimesh.Trimesh(sphere.vertices, sphere.faces[5:], process=False)  # open scan-like surface
    pts = np.array([[0, 0, 0], [0.2, 0.1, 0], [0.9, 0, 0], [0, 0, -0.7]], np.float32)
    expect = np.array([-0.5, -(0.5 - np.hypot(0.2, 0.1)), 0.4, 0.2])
    for mesh, watertight in ((sphere, True), (inward, True), (holed, False)):
        sdf = MeshOracle(mesh, watertight).signed_distance(pts)
        np.testing.assert_allclose(sdf, expect, atol=0.01)


def test_pool_proportions_and_frame(sphere_file):
    mesh = trimesh.load(sphere_file)
    task = SDFTask(mesh, True, SDFTaskConfig(pool_size=8000), seed=0)
    assert task.points.shape == (8000, 3)
    assert (task.sdf[:4000] == 0).all()                     # half exactly on the surface
    assert task.points.abs().max() <= 1.0 + 1e-6
    # the sphere of radius 20 mm maps to radius ~0.95 in the box; the frame maps back exactly
    r = task.points[:4000].norm(dim=1)
    assert torch.allclose(r, torch.full_like(r, 0.95), atol=0.01)
    world = trimesh.transform_points(task.points[:10].numpy(), task.frame.to_world_matrix())
    assert np.allclose(np.linalg.norm(world - [5, -3, 40], axis=1), 20.0, atol=0.3)
    assert BoxFrame.from_dict(task.frame.to_dict()) == task.frame


def test_sphere_sdf_fit_reaches_iou_099(sphere_file):
    torch.manual_seed(0)
    mesh = trimesh.load(sphere_file)
    task = SDFTask(mesh, True, SDFTaskConfig(pool_size=60_000, kmeans_points=20_000), seed=0)
    cfg = preset("hybrid", "sdf", 40_000)
    cfg.grid.n_levels, cfg.grid.base_resolution, cfg.grid.max_resolution = 6, 8, 64
    field = Field(resolve_budget(cfg))
    train(field, task, TrainConfig(steps=250, batch_size=4096, lr=1e-2, lr_decoder=2e-3, seed=0))
    g = np.random.default_rng(5)
    q = g.uniform(-1, 1, (100_000, 3)).astype(np.float32)
    inside_true = np.linalg.norm(q, axis=1) < 0.95
    with torch.no_grad():
        inside_pred = (field(torch.from_numpy(q))[:, 0] < 0).numpy()
    iou = (inside_true & inside_pred).sum() / (inside_true | inside_pred).sum()
    assert iou >= 0.99, iou


def test_eikonal_term_reaches_the_field(sphere_file):
    """The optional eikonal term is differentiated through the encoders (second derivatives)."""
    mesh = trimesh.load(sphere_file)
    task = SDFTask(mesh, True, SDFTaskConfig(pool_size=8000, kmeans_points=4000, eikonal_weight=0.1), seed=0)
    cfg = preset("hybrid", "sdf", 40_000)
    cfg.grid.n_levels, cfg.grid.base_resolution, cfg.grid.max_resolution = 6, 8, 64
    field = Field(resolve_budget(cfg))
    state = train(field, task, TrainConfig(steps=50, batch_size=1024, lr=1e-2, lr_decoder=2e-3, seed=0))
    first, last = state.history[0], state.history[-1]
    assert "eikonal" in last and last["eikonal"] < first["eikonal"]


def test_mape_denominator_is_the_configured_floor():
    """MAPE divides each error by |sdf| + mape_eps: a surface sample's error weighs 1 / mape_eps."""
    class Constant(torch.nn.Module):  # predicts 0.01 everywhere
        def forward_all(self, x, rbf_idx=None):
            return [torch.full((len(x), 1), 0.01)]

    x = torch.zeros(2, 3)
    batch = {"x": x, "sdf": torch.tensor([0.0, 0.03])}
    for eps, expected in ((0.01, (1.0 + 0.02 / 0.04) / 2), (0.03, (0.01 / 0.03 + 0.02 / 0.06) / 2)):
        task = SDFSamples(x, batch["sdf"], SDFTaskConfig(loss="mape", mape_eps=eps), BoxFrame.fit(np.eye(3)))
        loss, _ = task.loss(Constant(), batch)
        assert loss.item() == pytest.approx(expected, rel=1e-5)
    # left out: torch-ngp's 0.01 for given distances; meshes get 0.03 (SDFTask, below)
    assert SDFSamples(x, batch["sdf"], SDFTaskConfig(), BoxFrame.fit(np.eye(3))).mape_eps == 0.01


def test_mesh_pools_default_to_the_wider_mape_floor(sphere_file):
    task = SDFTask(trimesh.load(sphere_file), True, SDFTaskConfig(pool_size=8000, kmeans_points=4000), seed=0)
    assert task.mape_eps == 0.03
    task = SDFTask(trimesh.load(sphere_file), True, SDFTaskConfig(pool_size=8000, mape_eps=0.02), seed=0)
    assert task.mape_eps == 0.02


def test_meshes_get_the_coarser_finest_level_and_given_distances_keep_neurbfs(sphere_file, tmp_path):
    from fieldstudio.api import Request, resolve

    mesh = resolve(Request(sphere_file, steps=10))
    assert (mesh.field.grid.max_resolution, mesh.train.batch_size, mesh.sdf.surface_redraw) == (1024, 8192, 4.0)
    pts = np.random.default_rng(0).uniform(-1, 1, (2000, 3))
    np.savez(tmp_path / "samples.npz", points=pts, sdf=np.linalg.norm(pts, axis=1) - 0.5)
    samples = resolve(Request(tmp_path / "samples.npz", steps=10))
    assert samples.field.grid.max_resolution == 2048
    mine = resolve(Request(sphere_file, steps=10, overrides={"field.grid.max_resolution": 512}))
    assert mine.field.grid.max_resolution == 512


# ------------------------------------------------------------------ meshes that enclose no volume


def _strip(bend: float) -> trimesh.Trimesh:
    """An open strip 2 x 0.4, bent along x into z = bend * x^2 (a grid of 29 x 4 quads)."""
    x, y = np.meshgrid(np.linspace(-1, 1, 30), np.linspace(0, 0.4, 5), indexing="ij")
    vertices = np.stack([x, y, bend * x**2], axis=-1).reshape(-1, 3)
    a = (np.arange(29)[:, None] * 5 + np.arange(4)[None, :]).ravel()
    faces = np.concatenate([np.stack([a, a + 5, a + 6], 1), np.stack([a, a + 6, a + 1], 1)])
    return trimesh.Trimesh(vertices, faces)


def test_flat_meshes_are_refused_when_loaded(tmp_path):
    square = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    tilted = square.copy()
    tilted.apply_transform(trimesh.transformations.rotation_matrix(0.7, [1, 1, 0]))
    for name, mesh in (("square.obj", square), ("tilted.ply", tilted)):
        mesh.export(tmp_path / name)
        with pytest.raises(FieldStudioError, match=rf"^{name} encloses no volume: it is flat") as info:
            load_mesh(tmp_path / name)
        assert "\n" not in str(info.value)


def test_open_nearly_flat_strip_is_refused_before_training(tmp_path):
    _strip(0.05).export(tmp_path / "strip.obj")
    mesh, report = load_mesh(tmp_path / "strip.obj")  # not flat: 1/40 as thick as long
    assert not report["watertight"]
    with pytest.raises(FieldStudioError, match=r"^strip.obj encloses no volume: .* close the mesh") as info:
        SDFTask(mesh, report["watertight"], SDFTaskConfig(pool_size=8000), seed=0)
    assert "\n" not in str(info.value)
    # the pool check alone also refuses a flat square given in code (no file, no flatness check)
    square = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    with pytest.raises(FieldStudioError, match="^the mesh encloses no volume"):
        SDFTask(square, False, SDFTaskConfig(pool_size=8000), seed=0)


def test_open_scan_and_closed_sphere_still_have_an_inside(tmp_path, sphere_file):
    sphere = trimesh.creation.icosphere(3, radius=1.0)
    bowl = sphere.submesh([np.flatnonzero(sphere.triangles_center[:, 2] < 0.2)], append=True)  # top cut off
    bowl.export(tmp_path / "bowl.ply")
    for path, watertight in ((tmp_path / "bowl.ply", False), (sphere_file, True)):
        mesh, report = load_mesh(path)
        assert report["watertight"] == watertight
        task = SDFTask(mesh, watertight, SDFTaskConfig(pool_size=8000), seed=0)
        assert task.inside_share > 0.05, (path.name, task.inside_share)
    # deep in the bowl nearly every ray crosses it once; above its rim, only rays through the opening do
    oracle = MeshOracle(bowl, watertight=False)
    assert oracle.inside_votes(np.array([[0.0, 0.0, -0.7]]), seed=1)[0] >= 0.9
    assert oracle.inside_votes(np.array([[0.0, 0.0, 1.5]]), seed=1)[0] < 0.5


def test_surface_points_are_on_the_triangles_in_proportion_to_area():
    # two triangles, in z = 0 and z = 0.5, of areas 1 and 2
    v = np.array([[-1, -1, 0], [0, -1, 0], [-1, 1, 0], [-1, -1, 0.5], [1, -1, 0.5], [-1, 1, 0.5]], float)
    f = np.array([[0, 1, 2], [3, 4, 5]])
    task = SDFTask.__new__(SDFTask)  # only the sampler's tables: no pool, no oracle
    mesh = trimesh.Trimesh(v, f, process=False)
    task.triangles = torch.as_tensor(np.array(mesh.triangles, dtype=np.float32))
    cdf = np.cumsum(mesh.area_faces)
    task.area_cdf = torch.from_numpy(cdf / cdf[-1])
    p = task.surface_points(40_000, torch.Generator().manual_seed(0)).numpy()
    low = p[:, 2] == 0
    assert np.isclose(p[~low, 2], 0.5).all()
    assert abs(low.mean() - 1 / 3) < 0.01
    assert (p[low, 0] + p[low, 1] / 2 <= -0.5 + 1e-6).all()  # inside the first triangle: x/1 + (y+1)/2 <= 1
    assert (p[~low, 0] / 2 + p[~low, 1] / 2 <= 1e-6).all()


def test_surface_redraw_redraws_the_surface_half_and_replays_on_resume(sphere_file):
    mesh = trimesh.load(sphere_file)
    cfg = SDFTaskConfig(pool_size=6000, kmeans_points=3000, surface_redraw=2.0)  # 750 steps of 16
    fc = preset("hybrid", "sdf", 40_000)
    fc.grid.n_levels, fc.grid.base_resolution, fc.grid.max_resolution = 4, 8, 32
    field = Field(resolve_budget(fc))

    def task_at(step):
        task = SDFTask(mesh, True, cfg, seed=3)
        task.init_field(field, 3)
        task.attach(field)
        task.batch(step, 16, torch.Generator().manual_seed(0))
        return task

    first = SDFTask(mesh, True, cfg, seed=3)
    first.init_field(field, 3)
    first.attach(field)
    start = first.points[:3000].clone()
    off = first.points[3000:].clone()
    first.batch(749, 16, torch.Generator().manual_seed(0))
    assert torch.equal(first.points[:3000], start)  # epoch 0: the pool as built
    first.batch(750, 16, torch.Generator().manual_seed(0))
    moved = first.points[:3000]
    assert not torch.allclose(moved, start)
    assert torch.equal(first.points[3000:], off) and (first.sdf[:3000] == 0).all()  # off-surface samples kept
    r = moved.norm(dim=1)
    assert torch.allclose(r, torch.full_like(r, 0.95), atol=0.01)  # still on the sphere
    assert torch.equal(first.neighbours[:3000].long(), field.neighbours(moved))
    resumed = task_at(1000)  # a run resumed inside epoch 1 trains on the same points
    assert torch.equal(resumed.points, first.points)
    assert torch.equal(resumed.neighbours, first.neighbours)
    first.batch(3, 16, torch.Generator().manual_seed(0))
    assert torch.equal(first.points[:3000], start)
