"""NeRF scene folders: both json layouts give the same cameras and rays, pictures load as the training sees them,
and every bad scene is refused in one line before anything is decoded."""

import json
import math

import numpy as np
import pytest

from fieldstudio.data.images import write_image
from fieldstudio.data.nerf_scenes import camera_rays, is_scene, load_pictures, read_scene
from fieldstudio.errors import FieldStudioError

SIZE = 16
ANGLE_X = 0.69


def look_at(eye):
    """Camera-to-world (OpenGL axes) of a camera at ``eye`` looking at the origin, z up."""
    eye = np.asarray(eye, float)
    back = eye / np.linalg.norm(eye)
    right = np.cross([0, 0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, back, eye
    return m


def poses(n=8):
    return [look_at([4 * math.cos(a), 4 * math.sin(a), 1.0]) for a in np.linspace(0, 2 * math.pi, n, endpoint=False)]


def pictures(folder, names, size=SIZE):
    rng = np.random.default_rng(0)
    for name in names:
        rgba = (rng.random((size, size, 4)) * 255).astype(np.uint8)
        write_image(folder / f"{name}.png", rgba)


def blender(folder, n=8, **changes):
    (folder / "train").mkdir(parents=True, exist_ok=True)
    pictures(folder / "train", [f"r_{i}" for i in range(n)])
    frames = [{"file_path": f"./train/r_{i}", "transform_matrix": p.tolist()} for i, p in enumerate(poses(n))]
    meta = {"camera_angle_x": ANGLE_X, "frames": frames, **changes}
    (folder / "transforms_train.json").write_text(json.dumps(meta))
    return folder


def nerfstudio(folder, n=8):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    pictures(folder / "images", [f"r_{i}" for i in range(n)])
    fx = 0.5 * SIZE / math.tan(0.5 * ANGLE_X)
    frames = [{"file_path": f"images/r_{i}.png", "transform_matrix": p.tolist()} for i, p in enumerate(poses(n))]
    meta = {"fl_x": fx, "fl_y": fx, "cx": SIZE / 2, "cy": SIZE / 2, "w": SIZE, "h": SIZE, "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(meta))
    return folder


def test_both_layouts_give_the_same_rays(tmp_path):
    a = read_scene(blender(tmp_path / "a"))
    b = read_scene(nerfstudio(tmp_path / "b"))
    assert a.format == "blender" and b.format == "nerfstudio" and is_scene(tmp_path / "a")
    assert len(a.splits["train"]) == 8 and len(b.splits["train"]) == 7 and len(b.splits["test"]) == 1
    cam_a, cam_b = a.splits["train"][1], b.splits["train"][0]  # the same pose (b's frame 0 is held out)
    for x, y in zip(camera_rays(cam_a), camera_rays(cam_b)):
        assert np.allclose(x, y)


def test_rays_go_through_pixel_centres(tmp_path):
    cam = read_scene(blender(tmp_path)).splits["train"][0]
    origins, dirs = camera_rays(cam)
    assert np.allclose(origins, cam.c2w[:3, 3])
    assert np.allclose(np.linalg.norm(dirs, axis=1), 1)
    # the four pixels around the principal point look symmetrically about the optical axis
    axis = -cam.c2w[:3, 2]
    centre = [(SIZE // 2 - 1) * SIZE + SIZE // 2 - 1, (SIZE // 2 - 1) * SIZE + SIZE // 2,
              (SIZE // 2) * SIZE + SIZE // 2 - 1, (SIZE // 2) * SIZE + SIZE // 2]
    angles = np.degrees(np.arccos(dirs[centre] @ axis))
    assert np.allclose(angles, angles[0]) and angles[0] > 0
    assert np.allclose(dirs[centre].mean(axis=0) / np.linalg.norm(dirs[centre].mean(axis=0)), axis)


def test_downscale_averages_areas_and_composites_on_the_background(tmp_path):
    folder = blender(tmp_path)
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[:, : SIZE // 2] = [255, 0, 0, 255]  # left half opaque red, right half transparent
    write_image(folder / "train" / "r_0.png", rgba)
    cam = read_scene(folder).splits["train"][0]
    full = load_pictures([cam])[0]
    assert np.allclose(full[0, 0], [1, 0, 0]) and np.allclose(full[0, -1], [1, 1, 1])  # white background
    black = load_pictures([cam], background=(0, 0, 0))[0]
    assert np.allclose(black[0, -1], [0, 0, 0])
    small = load_pictures([cam], downscale=4)[0]
    assert small.shape == (SIZE // 4, SIZE // 4, 3)
    assert np.allclose(small[:, :2], [1, 0, 0]) and np.allclose(small[:, 2:], [1, 1, 1])
    scaled = cam.scaled(4)
    assert (scaled.width, scaled.height) == (4, 4) and math.isclose(scaled.fx, cam.fx / 4)


def test_box_covers_the_region_the_cameras_look_at(tmp_path):
    centre, half = read_scene(blender(tmp_path)).box()
    assert np.allclose(centre, 0, atol=1e-6)
    assert 0.5 < half < 4.0


def test_held_out_splits_may_be_thinned_out(tmp_path):
    folder = blender(tmp_path)
    (folder / "test").mkdir()
    pictures(folder / "test", ["r_0"])
    frames = [{"file_path": f"./test/r_{i}", "transform_matrix": p.tolist()} for i, p in enumerate(poses(4))]
    (folder / "transforms_test.json").write_text(json.dumps({"camera_angle_x": ANGLE_X, "frames": frames}))
    scene = read_scene(folder)
    assert len(scene.splits["test"]) == 1 and "3 of 4 pictures are missing" in scene.notes[0]


def _edit(folder, fn):
    path = folder / "transforms_train.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("breaks, words", [
    (lambda d: (d / "transforms_train.json").unlink(), "not a NeRF scene"),
    (lambda d: (d / "transforms_train.json").write_text("{\"frames\": [1, 2"), "not valid JSON"),
    (lambda d: (d / "transforms_train.json").write_text("{\"camera\": 1}"), "no 'frames' list"),
    (lambda d: _edit(d, lambda m: m.update(frames=[])), "lists no frames"),
    (lambda d: (d / "train" / "r_3.png").unlink(), "1 of 8 pictures are missing"),
    (lambda d: _edit(d, lambda m: m["frames"][2]["transform_matrix"][0].__setitem__(3, float("nan"))), "NaN"),
    (lambda d: _edit(d, lambda m: m["frames"][2].update(
        transform_matrix=(np.diag([2.0, 1, 1, 1]) @ poses()[2]).tolist())), "not a rigid pose"),
    (lambda d: write_image(d / "train" / "r_5.png", np.zeros((20, 20, 3), np.uint8)), "different sizes"),
    (lambda d: _edit(d, lambda m: m.pop("camera_angle_x")), "no focal length"),
])
def test_bad_scenes_get_one_clear_line(tmp_path, breaks, words):
    folder = blender(tmp_path / "scene")
    breaks(folder)
    with pytest.raises(FieldStudioError) as err:
        read_scene(folder)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_aabb_scale_sets_the_box(tmp_path):
    import json as _json

    from nerf_synth import make_scene

    folder = make_scene(tmp_path / "s", n_train=4, n_test=1, size=16, fmt="nerfstudio")
    meta = _json.loads((folder / "transforms.json").read_text())
    centre, half = read_scene(folder).box()
    assert half < 2.0  # from the cameras: what they see
    meta.update({"aabb_scale": 4, "scale": 0.5, "offset": [0.5, 0.5, 0.0]})
    (folder / "transforms.json").write_text(_json.dumps(meta))
    centre, half = read_scene(folder).box()
    np.testing.assert_allclose(centre, [0.0, 0.0, 1.0])
    assert half == pytest.approx(4.0)
