"""The 3D view's clipping plane: the plane cuts meshes (fragment shader), contours and wireframe edges (CPU), turning
it off restores the image, and ClipControls moves it. GL tests render under Xvfb (Mesa llvmpipe) and check pixels.
"""

import os

import numpy as np
import pytest
import trimesh

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
    pytest.skip("no display: run under xvfb-run (make test does)", allow_module_level=True)

from fieldstudio.app.gui.view3d import ClipControls, View3D, clip_segments  # noqa: E402

BACKGROUND = (38, 41, 46)


@pytest.fixture
def gl_ok():
    from PySide6.QtGui import QGuiApplication

    if QGuiApplication.platformName() in ("offscreen", "minimal"):
        pytest.skip("OpenGL needs a display (Xvfb)")


@pytest.fixture
def view(qtbot):
    v = View3D()
    qtbot.addWidget(v)
    v.resize(320, 240)
    v.show()
    qtbot.waitExposed(v)
    return v


def sphere_view(view):
    """A unit icosphere at the origin seen from -y, z up: +x is on the right half of the image."""
    view.show_mesh("sphere", trimesh.creation.icosphere(subdivisions=3, radius=1.0), index=0)
    view.setCameraPosition(distance=4.0, elevation=0, azimuth=-90)


def render(view) -> np.ndarray:
    image = view.grabFramebuffer().convertToFormat(view.grabFramebuffer().Format.Format_RGB888)
    w, h = image.width(), image.height()
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(h, image.bytesPerLine())
    return rows[:, : 3 * w].reshape(h, w, 3).copy()


def drawn(image: np.ndarray) -> np.ndarray:
    """Pixels that are not the background."""
    return np.abs(image.astype(int) - BACKGROUND).sum(axis=2) > 30


def halves(image: np.ndarray) -> tuple[int, int]:
    """How many drawn pixels in the left and right halves (a margin around the centre column is left out)."""
    mask = drawn(image)
    w = mask.shape[1]
    return int(mask[:, : w // 2 - 4].sum()), int(mask[:, w // 2 + 4:].sum())


def test_clip_segments_cuts_at_the_plane():
    pairs = np.array([[[-1, 0, 0], [-0.5, 0, 0]],   # kept
                      [[0.5, 0, 0], [1, 1, 0]],     # hidden
                      [[-1, 0, 0], [1, 2, 0]]],     # crosses x = 0 at y = 1
                     np.float32)
    kept = clip_segments(pairs, 0, 0.0)
    assert kept.shape == (2, 2, 3)
    assert np.allclose(kept[1], [[-1, 0, 0], [0, 1, 0]])
    flipped = clip_segments(pairs.reshape(-1, 3), 0, 0.0, flip=True)  # (2N, 3) in, (2M, 3) out
    assert flipped.shape == (4, 3) and np.allclose(flipped[2:], [[0, 1, 0], [1, 2, 0]])


def test_clip_hides_one_half_of_a_sphere_and_off_restores_it(view, qtbot, gl_ok):
    sphere_view(view)
    before = render(view)
    left, right = halves(before)
    assert left > 3000 and right > 3000  # the whole sphere is drawn

    view.set_clip(0, 0.0)  # hide x > 0: the right half
    cut = render(view)
    cut_left, cut_right = halves(cut)
    assert cut_right < 0.02 * right and cut_left > 0.9 * left

    view.set_clip(0, 0.0, flip=True)  # hide x < 0: the left half
    flip_left, flip_right = halves(render(view))
    assert flip_left < 0.02 * left and flip_right > 0.9 * right

    view.set_clip(None)
    assert np.array_equal(render(view), before)


def test_clipped_sphere_shows_its_lit_inside(view, qtbot, gl_ok):
    """From the default three-quarter view a sphere cut at its centre shows its inside (back faces, lit by the
    headlight), not the background, where the cut-off cap was."""
    view.show_mesh("sphere", trimesh.creation.icosphere(subdivisions=3, radius=1.0), index=7)
    view.setCameraPosition(azimuth=0, elevation=25)  # camera on +x: the cut faces the viewer
    before = render(view)
    view.set_clip(0, 0.0)
    cut = render(view)
    h, w, _ = cut.shape
    centre = cut[h // 2 - 5: h // 2 + 5, w // 2 - 5: w // 2 + 5].reshape(-1, 3).astype(int)
    assert drawn(centre[None]).all() and centre.sum(axis=1).mean() > 3 * 60  # lit, not dark
    assert np.abs(cut.astype(int) - before).sum(axis=2).astype(bool).mean() > 0.05  # and it looks different


def test_wireframe_edges_and_contours_are_cut_too(view, qtbot, gl_ok):
    from fieldstudio.data.slicing import slice_mesh

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
    sphere_view(view)
    faces = render(view)
    view.set_wireframe(True)  # on a mesh already drawn: pyqtgraph needs the mesh parsed again to have edges
    wire = render(view)
    assert (np.abs(wire.astype(int) - faces).sum(axis=2) > 30).sum() > 500
    view.set_clip(0, 0.0)
    left, right = halves(render(view))
    assert left > 3000 and right < 100  # pyqtgraph's own edges would still be drawn on the right
    view.set_clip(None)
    assert np.array_equal(render(view), wire)

    view.clear_all()
    view.set_wireframe(False)
    view.set_clip(0, 0.0)  # set before the contours are shown: they are cut as they come
    view.show_contours("cs", slice_mesh(sphere, 8, "parallel", axis="z"))
    (item,) = view.items_by_name["cs"]
    assert item.pos[:, 0].max() <= 1e-6 and item.full_pos[:, 0].max() > 0.9
    view.set_clip(0, -5.0)  # everything hidden: nothing drawn, no error
    view.setCameraPosition(distance=4.0, elevation=0, azimuth=-90)
    assert item.pos is None and sum(halves(render(view))) == 0
    view.set_clip(None)
    assert np.array_equal(item.pos, item.full_pos)


def test_clip_range_spans_what_is_visible(view):
    assert view.clip_range(0) == (0.0, 0.0)
    a = trimesh.creation.box([2, 2, 2])
    b = trimesh.creation.box([2, 2, 2])
    b.apply_translation([10, 0, 0])
    view.show_mesh("a", a)
    view.show_mesh("b", b, index=1)
    assert np.allclose(view.clip_range(0), (-1, 11)) and np.allclose(view.clip_range(2), (-1, 1))
    view.set_visible("a", False)
    assert np.allclose(view.clip_range(0), (9, 11))


def test_clip_controls_move_the_plane(view, qtbot, gl_ok):
    sphere_view(view)
    controls = ClipControls(view)
    qtbot.addWidget(controls)
    assert view.clip is None and not controls.slider.isEnabled()
    lo, hi = view.clip_range(0)

    controls.axis.setCurrentText("x")
    axis, position, flip = view.clip
    assert axis == 0 and position == pytest.approx((lo + hi) / 2) and not flip
    assert halves(render(view))[1] < 100

    controls.slider.setValue(1000)  # at the top of the range: nothing is hidden
    assert view.clip[1] == pytest.approx(hi)
    assert halves(render(view))[1] > 3000
    controls.flip.setChecked(True)  # hide x < hi: (nearly) everything
    assert view.clip[2] and sum(halves(render(view))) < 100

    controls.axis.setCurrentText("z")
    assert view.clip[0] == 2 and view.clip[1] == pytest.approx(view.clip_range(2)[1])

    controls.slider.setValue(500)
    view.show_mesh("sphere", trimesh.creation.icosphere(subdivisions=3, radius=1.0).apply_translation([0, 0, 5]))
    assert view.clip[1] == pytest.approx(5.0)  # the plane follows the new contents at the slider's place
    controls.axis.setCurrentText("off")
    assert view.clip is None and not controls.slider.isEnabled()


def test_vertex_normals_point_outwards_and_match_a_sphere():
    from fieldstudio.app.gui.view3d import vertex_normals

    sphere = trimesh.creation.icosphere(3, radius=2.0)
    n = vertex_normals(sphere.vertices, sphere.faces)
    radial = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)
    assert n.dtype == np.float32 and np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5)
    assert (np.sum(n * radial, axis=1) > 0.995).all()
    box = trimesh.creation.box()  # a corner's normal points out between its three faces
    corner = np.argmax(box.vertices.sum(axis=1))
    assert (vertex_normals(box.vertices, box.faces)[corner] > 0.3).all()


def test_an_object_takes_a_colour_of_its_own(view):
    sphere = trimesh.creation.icosphere(2)
    view.show_mesh("a", sphere, vertex_colors=np.tile([1.0, 0.0, 0.0, 1.0], (len(sphere.vertices), 1)))
    view.set_colour("a", (0.1, 0.9, 0.2, 1.0))
    (item,) = view.items_by_name["a"]
    assert item.opts["meshdata"].vertexColors() is None and np.allclose(item.opts["color"], (0.1, 0.9, 0.2, 1.0))
    assert len(item.opts["meshdata"].vertexes()) == len(sphere.vertices)


def test_many_labels_get_colours_of_their_own():
    from fieldstudio.app.gui.view3d import colour

    colours = [tuple(round(c, 3) for c in colour(i)[:3]) for i in range(41)]
    assert len(set(colours)) == 41
    assert all(0.0 <= c <= 1.0 for rgb in colours for c in rgb)
