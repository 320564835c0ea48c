"""test_nerf_synth.py: the synthetic NeRF scene reads back through the project's reader, its pictures agree with its
own ray tracer, and both folder layouts give the same cameras."""

import math

import numpy as np
from fieldstudio.data.images import read_image
from fieldstudio.data.nerf_scenes import camera_rays, load_pictures, read_scene
from nerf_synth import make_scene, trace


def test_blender_scene_reads_back(tmp_path):
    scene = read_scene(make_scene(tmp_path))
    assert scene.format == "blender"
    assert len(scene.splits["train"]) == 30 and len(scene.splits["test"]) == 6
    for cam in scene.splits["train"] + scene.splits["test"]:
        assert (cam.width, cam.height) == (32, 32)
        assert math.isclose(cam.fx, 16 / math.tan(0.35)) and math.isclose(cam.fy, cam.fx)
        assert (cam.cx, cam.cy) == (16, 16)
        # looks at the origin from radius 3
        assert np.isclose(np.linalg.norm(cam.c2w[:3, 3]), 3.0)
        assert np.allclose(np.cross(-cam.c2w[:3, 2], -cam.c2w[:3, 3]), 0, atol=1e-9)
    train = np.array([c.c2w[:3, 3] for c in scene.splits["train"]])
    test = np.array([c.c2w[:3, 3] for c in scene.splits["test"]])
    assert np.linalg.norm(train[:, None] - test[None], axis=-1).min() > 0.1  # no test camera is a train camera


def test_pictures_agree_with_the_tracer(tmp_path):
    scene = read_scene(make_scene(tmp_path))
    for cam in scene.splits["test"][:2]:
        alpha = read_image(cam.path).as_float()[:, :, 3].reshape(-1)
        _, hit = trace(*camera_rays(cam))
        clear = (alpha > 0.99) | (alpha < 0.01)
        assert 0.05 < (alpha > 0.99).mean() < 0.5  # the shapes fill part of the picture
        assert ((hit > 0.5) == (alpha > 0.99))[clear].mean() >= 0.97


def test_nerfstudio_layout_gives_the_same_cameras(tmp_path):
    blender = read_scene(make_scene(tmp_path / "b", seed=3))
    studio = read_scene(make_scene(tmp_path / "n", fmt="nerfstudio", seed=3))
    assert studio.format == "nerfstudio"
    every = blender.splits["train"] + blender.splits["test"]
    held = every[::8]
    kept = [c for i, c in enumerate(every) if i % 8]
    assert len(studio.splits["test"]) == len(held) == 5 and len(studio.splits["train"]) == 31
    for a, b in zip(studio.splits["test"] + studio.splits["train"], held + kept):
        assert np.allclose(a.c2w, b.c2w)
        assert np.allclose([a.width, a.height, a.fx, a.fy, a.cx, a.cy], [b.width, b.height, b.fx, b.fy, b.cx, b.cy])
    pictures = load_pictures(studio.splits["test"])
    assert pictures.shape == (5, 32, 32, 3)
    assert np.allclose(pictures, load_pictures(held))
