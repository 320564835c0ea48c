"""The slice view, driven as the window drives it (pytest-qt, under Xvfb): a CT/MR background on another grid and
frame with window/level, meshes cut by the slice, a live field's outline, and kept planes of any orientation.

Volumes are tiny and made here: a 24^3 ellipsoid label map in a rotated, anisotropic, shifted affine.
"""

import os

import numpy as np
import pytest
import trimesh

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
    pytest.skip("no display: run under xvfb-run (make test does)", allow_module_level=True)

from fieldstudio.app.gui.view3d import colour  # noqa: E402
from fieldstudio.data.medical_planes import kept_planes  # noqa: E402
from fieldstudio.data.medical_readers import read_intensity_volume, read_label_volume  # noqa: E402

SPACING = np.array([1.5, 1.2, 2.0])  # mm; the last axis (largest spacing) is the acquisition axis
CENTRE = np.array([12, 12, 12])  # the ellipsoid's centre voxel
FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS


def label_affine():
    a = np.radians(30.0)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) * SPACING
    affine[:3, 3] = [-20.0, 10.0, 50.0]
    return affine


def save_nifti(path, data, affine):
    import nibabel

    nibabel.save(nibabel.Nifti1Image(data, affine), str(path))
    return path


@pytest.fixture
def volume(tmp_path):
    i, j, k = np.meshgrid(*(np.arange(24),) * 3, indexing="ij")
    data = (((i - 12) / 8.0) ** 2 + ((j - 12) / 6.0) ** 2 + ((k - 12) / 7.0) ** 2 <= 1).astype(np.int16)
    return read_label_volume(save_nifti(tmp_path / "blob.nii.gz", data, label_affine()))


@pytest.fixture
def view(qtbot, volume):
    from fieldstudio.app.gui.slice_view import SliceView

    v = SliceView()
    qtbot.addWidget(v)
    v.resize(600, 600)
    v.show()
    v.set_volume(volume, [1])
    v.direction.setCurrentText("axial")  # looks along the last array axis
    v.slider.setValue(12)
    return v


def background_image(tmp_path):
    """A half-spacing grid shifted so that label voxel ijk sits on its voxel (4, 6, 2) + 2 ijk; value
    10 m0 + m1 - 200 at voxel m; it ends at m0 = 39, so label voxels with i >= 18 lie outside it."""
    affine = label_affine()
    affine[:3, :3] /= 2
    affine[:3, 3] -= affine[:3, :3] @ [4, 6, 2]
    m0, m1, _ = np.meshgrid(np.arange(40), np.arange(54), np.arange(52), indexing="ij")
    data = (10 * m0 + m1 - 200).astype(np.int16)
    return save_nifti(tmp_path / "ct.nii.gz", data, affine), data, affine


def grey(value, w, l):
    return np.clip((value - (l - w / 2)) / w, 0, 1) * 255


def test_background_is_resampled_with_window_level_presets_and_label_opacity(view, tmp_path):
    path, data, _ = background_image(tmp_path)
    view.set_background(read_intensity_volume(path))
    assert view.controls.isVisible() and view.preset.currentText().startswith("auto")
    p1, p99 = np.percentile(data, [1, 99])  # auto: the 1-99 % range
    assert view.window_box.value() == pytest.approx(p99 - p1, abs=0.01)
    view.window_box.setValue(400)
    view.level_box.setValue(0)
    rgb = view.image.image[..., :3].astype(float)
    for i, j in ((2, 3), (10, 20)):  # outside the label: grey only
        value = 10 * (4 + 2 * i) + (6 + 2 * j) - 200
        assert np.abs(rgb[i, j] - grey(value, 400, 0)).max() <= 1
    assert np.abs(rgb[20, 12] - 0.5 * np.array(colour(0)[:3]) * 255).max() <= 1  # label over no image (black)
    assert (rgb[22, 0] == 0).all()  # outside the image, no label

    view.preset.setCurrentText("CT soft tissue W400 L40")
    assert (view.window_box.value(), view.level_box.value()) == (400, 40)
    assert abs(view.image.image[2, 3, 0] - grey(10 * 8 + 12 - 200, 400, 40)) <= 1
    view.preset.setCurrentText("CT lung W1500 L-600")
    assert abs(view.image.image[2, 3, 0] - grey(10 * 8 + 12 - 200, 1500, -600)) <= 1

    inside = 10 * (4 + 24) + (6 + 24) - 200  # the label's centre voxel (12, 12)
    label = np.array(colour(0)[:3]) * 255
    assert np.abs(view.image.image[12, 12, :3] - (0.5 * grey(inside, 1500, -600) + 0.5 * label)).max() <= 1
    view.opacity.setValue(100)
    assert np.abs(view.image.image[12, 12, :3] - label).max() <= 1
    view.opacity.setValue(0)
    assert np.abs(view.image.image[12, 12, :3] - grey(inside, 1500, -600)).max() <= 1

    view.set_background(None)  # as without a background: opaque labels, a dark empty colour
    assert not view.controls.isVisible()
    assert np.abs(view.image.image[12, 12, :3] - label).max() <= 1
    assert (view.image.image[2, 3, :3] == (45, 48, 54)).all()


def test_lps_background_lands_where_the_ras_one_does(view, tmp_path):
    import nrrd

    path, data, affine = background_image(tmp_path)
    view.set_background(read_intensity_volume(path))
    ras = view._background_slice().copy()
    lps_affine = FLIP @ affine  # the same voxels, written in LPS
    nrrd.write(str(tmp_path / "ct.nrrd"), data, {"space": "left-posterior-superior",
                                                  "space directions": lps_affine[:3, :3].T,
                                                  "space origin": lps_affine[:3, 3]})
    lps = read_intensity_volume(tmp_path / "ct.nrrd")
    assert lps.world == "LPS"
    view.set_background(lps)
    assert np.isfinite(ras).sum() > 300 and np.array_equal(ras, view._background_slice(), equal_nan=True)


def test_right_drag_changes_window_and_level(view, qtbot, tmp_path):
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    view.set_background(read_intensity_volume(background_image(tmp_path)[0]))
    view.preset.setCurrentText("CT soft tissue W400 L40")
    qtbot.wait(50)
    vb, port = view.plot.getViewBox(), view.plot.viewport()
    start = view.plot.mapFromScene(vb.mapViewToScene(QPointF(18.0, 14.0)))  # on the image
    step = view._auto[0] / 500  # window/level units per pixel

    def send(kind, pos, button, buttons):
        pos = QPointF(pos)
        QApplication.sendEvent(port, QMouseEvent(kind, pos, port.mapToGlobal(pos), button, buttons,
                                                 Qt.KeyboardModifier.NoModifier))

    right = Qt.MouseButton.RightButton
    send(QEvent.Type.MouseButtonPress, start, right, right)
    for t in range(1, 6):  # right 60 px, down 25 px
        send(QEvent.Type.MouseMove, start + QPointF(12 * t, 5 * t).toPoint(), Qt.MouseButton.NoButton, right)
    send(QEvent.Type.MouseButtonRelease, start + QPointF(60, 25).toPoint(), right, Qt.MouseButton.NoButton)
    assert view.window_box.value() == pytest.approx(400 + 60 * step, abs=0.02)
    assert view.level_box.value() == pytest.approx(40 + 25 * step, abs=0.02)


def test_meshes_are_cut_by_the_slice_plane(view, volume):
    centre = volume.to_world(CENTRE[None])[0]
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=6.0)
    sphere.apply_translation(centre)
    view.set_meshes({"ball": (sphere, 2), "far": (sphere.copy().apply_translation([0, 0, 100]), 3)})
    centre_image = (CENTRE[:2] + 0.5) * SPACING[:2]
    for index, radius in ((12, 6.0), (14, np.sqrt(36 - 4.0**2))):  # 2 mm per slice along the axis
        view.slider.setValue(index)
        segs = view.mesh_segments["ball"]
        assert len(segs) > 30 and len(view.mesh_segments["far"]) == 0
        r = np.linalg.norm(segs.reshape(-1, 2) - centre_image, axis=1)
        assert np.abs(r - radius).max() < 0.05, (index, r.min(), r.max())
    view.set_mesh_visible("ball", False)
    assert len(view.mesh_segments["ball"]) == 0
    view.set_mesh_visible("ball", True)
    view.direction.setCurrentText("sagittal")  # another normal: on the centre slice, again a 6 mm circle
    view.slider.setValue(12)
    segs = view.mesh_segments["ball"].reshape(-1, 2)
    assert np.abs(np.linalg.norm(segs - (CENTRE[1:] + 0.5) * SPACING[1:], axis=1) - 6).max() < 0.05
    view.set_meshes({})
    assert not view.mesh_items and not view.mesh_segments


def test_live_values_outline_the_inside_and_are_dropped_on_scroll(view, volume, qtbot):
    centre = volume.to_world(CENTRE[None])[0]
    points = view.slice_points_world()
    assert points.shape == (24 * 24, 3)
    assert np.allclose(points[5 * 24 + 7], volume.to_world([[5, 7, 12]]))  # row-major (axis 0, axis 1)
    before = view.image.image.copy()
    shown = view.shown_slice
    view.set_live(np.linalg.norm(points - centre, axis=1) - 5.0)  # a sphere's SDF, radius 5 mm
    outline = np.concatenate(view.live_outline)
    r = np.linalg.norm(outline - (CENTRE[:2] + 0.5) * SPACING[:2], axis=1)
    assert len(outline) > 20 and np.abs(r - 5.0).max() < 0.15
    assert (view.image.image[12, 12] != before[12, 12]).any() and (view.image.image[0, 0] == before[0, 0]).all()
    with pytest.raises(ValueError):
        view.set_live(np.zeros(10))
    with qtbot.waitSignal(view.slice_changed, timeout=1000):
        view.slider.setValue(13)
    drawn = view.live_item.getData()[0]
    assert view.live is None and view.live_outline == [] and (drawn is None or len(drawn) == 0)
    view.set_live(np.zeros(24 * 24) - 1, at=shown)  # values for the slice no longer shown: ignored
    assert view.live is None
    with qtbot.waitSignal(view.slice_changed, timeout=1000):
        view.direction.setCurrentText("coronal")


def test_kept_planes_are_lines_across_and_named_along(view, volume):
    view.set_kept_planes(kept_planes(volume, None, every=4, offset=1))  # slices 1, 5, ..., 21 along axis 2
    view.direction.setCurrentText("sagittal")  # looks along axis 0: image x = axis 1, y = axis 2
    ys = sorted(float(seg[0, 1]) for seg in view.lines)
    assert np.allclose(ys, (np.arange(1, 24, 4) + 0.5) * SPACING[2])
    assert all(abs(seg[0, 1] - seg[1, 1]) < 1e-9 and np.allclose(sorted(seg[:, 0]), [0, 24 * SPACING[1]])
               for seg in view.lines)
    view.direction.setCurrentText("axial")
    view.slider.setValue(5)
    assert view.where.text().endswith("(kept as a plane)") and not view.lines
    view.slider.setValue(6)
    assert view.where.text().endswith("(not kept)")

    view.set_kept(2, range(1, 24, 4))  # the window's current call gives the same lines
    view.direction.setCurrentText("sagittal")
    assert np.allclose(sorted(float(seg[0, 1]) for seg in view.lines), ys)
    view.set_kept(None, [])
    assert not view.lines and "kept" not in view.where.text()


def test_an_oblique_family_gives_slanted_lines_on_its_plane(view, volume):
    planes = kept_planes(volume, None, families="1/0/1:3")
    view.set_kept_planes(planes)
    view.direction.setCurrentText("coronal")  # looks along axis 1 (world y, rotated by 30 degrees)
    view.slider.setValue(12)
    assert len(view.lines) >= 2 and "kept" not in view.where.text()
    axis, index = view.shown_slice
    s = volume.spacing
    for seg in view.lines:
        dx, dy = seg[1] - seg[0]
        assert abs(dx) > 1 and abs(dy) > 1  # slanted, not along the image's axes
        ijk = np.zeros((2, 3))
        ijk[:, 0], ijk[:, 2], ijk[:, axis] = seg[:, 0] / s[0] - 0.5, seg[:, 1] / s[2] - 0.5, index
        world = volume.to_world(ijk)
        assert min(np.abs(world @ n + d).max() for n, d in planes) < 1e-6  # the end points lie on a kept plane


@pytest.mark.parametrize("world, flip_x", [("RAS", 1.0), ("LPS", 1.0), ("RAS", -1.0)])
def test_slices_are_shown_as_radiologists_read_them(view, world, flip_x):
    """Axial: the patient's right on the screen's left, anterior up; coronal: superior up; sagittal: anterior
    on the left. Only the view is mirrored, whatever the file's axes and frame."""
    from fieldstudio.data.medical_readers import LabelVolume

    affine = np.diag([flip_x * 2.0, 2.0, 3.0, 1.0])
    view.set_volume(LabelVolume(np.ones((8, 9, 10), np.uint8), affine, world), [1])
    ras = np.array([-1.0, -1.0, 1.0]) if world == "LPS" else np.ones(3)
    vb = view.plot.getViewBox()

    def screen_direction(image_axis):  # world (RAS) direction that points right (0) or up (1) on the screen
        o = [a for a in range(3) if a != view.axis][image_axis]
        d = ras * affine[:3, o]
        inverted = vb.xInverted() if image_axis == 0 else vb.yInverted()
        return -d if inverted else d

    view.direction.setCurrentText("axial")
    assert screen_direction(0)[0] < 0 and screen_direction(1)[1] > 0  # right of screen: patient's left; up: anterior
    view.direction.setCurrentText("coronal")
    assert screen_direction(0)[0] < 0 and screen_direction(1)[2] > 0
    view.direction.setCurrentText("sagittal")
    assert screen_direction(0)[1] < 0 and screen_direction(1)[2] > 0  # right of screen: posterior
