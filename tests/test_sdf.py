"""SDF task: ground truth, sampling, and a fitted sphere."""

import numpy as np
import torch
import trimesh

from fieldstudio.config import SDFTaskConfig, TrainConfig
from fieldstudio.data.meshes import BoxFrame
from fieldstudio.field import Field, preset, resolve_budget
from fieldstudio.tasks.sdf import MeshOracle, SDFTask
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
