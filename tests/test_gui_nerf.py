"""The window's scene mode (pytest-qt, under Xvfb): a NeRF scene folder opens with its train and test cameras as
frusta in the 3D view and the scene view under it; a fit fills the ground truth | render | error panes (live, then
from the finished run), another camera can be picked, the free camera renders coarse then fine, Export writes the
test views and an orbit video, and a finished run folder opens with its views.

The scene is the tiny synthetic one of ``nerf_synth`` (20 + 4 cameras, 32 x 32 pixels); fits use the voxel field
with small batches and a coarse occupancy grid so that they take seconds.
"""

import json
import os

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
    pytest.skip("no display: run under xvfb-run (make test does)", allow_module_level=True)

from nerf_synth import make_scene  # noqa: E402
from PySide6.QtCore import QPoint, Qt  # noqa: E402

from fieldstudio.app.gui.scene_view import FREE_SIDES, FRUSTUM_POINTS  # noqa: E402

N_TRAIN, N_TEST, SIZE = 20, 4, 32
FAST = {"train.batch_size": 512, "nerf.occupancy_resolution": 32, "nerf.steps_per_diagonal": 128}
STEPS = 120


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("nerf") / "scene", n_train=N_TRAIN, n_test=N_TEST, size=SIZE)


@pytest.fixture(scope="module")
def finished_run(scene, tmp_path_factory):
    """A run of the scene fitted without the window (as the fast fits in the window)."""
    from fieldstudio.api import Request, fit_job

    run = tmp_path_factory.mktemp("nerf") / "run"
    fit_job(Request(scene, field="voxels", steps=STEPS, params=100_000, overrides=FAST), run).run()
    return run


def fast_fits(window, monkeypatch):
    """The panel's request with the voxel field, few steps and small batches (the panel has no field for them)."""
    original = window.panel.request

    def request():
        r = original()
        r.field, r.steps, r.params = "voxels", STEPS, 100_000
        r.overrides = {**r.overrides, **FAST}
        return r
    monkeypatch.setattr(window.panel, "request", request)


def lines(window, name):
    return sum(len(item.full_pos) for item in window.view.items_by_name.get(name, []))


def wait_render(qtbot, view, predicate=lambda r: True, timeout=30_000):
    """The next render shown by the scene view for which ``predicate(info)`` holds."""
    seen = []

    def check():
        assert seen and predicate(seen[-1])
    view.rendered.connect(seen.append)
    try:
        qtbot.waitUntil(check, timeout=timeout)
    finally:
        view.rendered.disconnect(seen.append)
    return seen


def test_a_scene_opens_with_its_cameras(window, scene):
    assert window.open_path(scene), window.errors
    assert window.panel.resolved.task == "nerf"
    assert window.scene_mode and not window.picture_mode
    assert window.scene_view.isVisible() and window.view.isVisible() and not window.slices.isVisible()
    assert lines(window, "cameras: train") == N_TRAIN * FRUSTUM_POINTS
    assert lines(window, "cameras: test") == N_TEST * FRUSTUM_POINTS  # 24 frusta in all
    assert lines(window, "camera: shown") == FRUSTUM_POINTS  # the picked one, highlighted
    rows = [window.objects.item(i).text() for i in range(window.objects.count())]
    assert "train cameras (20)" in rows and "test cameras (4)" in rows
    view = window.scene_view
    assert view.current_split() == "test" and view.picked() == 0
    assert view.picture_item.image.shape == (SIZE, SIZE, 3)  # the picked camera's picture, before any fit
    assert "press Fit" in view.captions[1].text
    view.export_views(scene / "out")  # nothing fitted: refused in one line
    assert window.errors and "no finished NeRF run" in window.errors[-1] and "\n" not in window.errors[-1]
    assert not view.views_button.isEnabled()


def test_fit_shows_views_live_then_from_the_run(window, qtbot, scene, tmp_path, monkeypatch):
    window.open_path(scene)
    fast_fits(window, monkeypatch)
    run = tmp_path / "run"
    window.panel.output.setText(str(run))
    view = window.scene_view
    live = []
    original = view.show_previews

    def previews(p):  # the worker's renders during training; the first one's camera, then another
        live.append(p)
        original(p)
        if len(live) == 1:
            view.pick("test", 1)
    monkeypatch.setattr(view, "show_previews", previews)
    with qtbot.waitSignal(window.fit_ended, timeout=120_000) as ended:
        window.start_fit()
    assert ended.args[0] == "finished", window.errors
    assert live[0][0][0] == {"split": "test", "index": 0, "max_side": 128}
    assert live[0][0][1]["rgb"].shape == (SIZE, SIZE, 3) and live[0][0][1]["reference"].shape == (SIZE, SIZE, 3)
    assert any(options["index"] == 1 for p in live[1:] for options, _ in p)  # asked for at once, not at the next tick
    assert "preview" not in window.view.items_by_name  # no mesh previews of a radiance field
    assert "PSNR" in window.stage.text() and window.metrics.cell("PSNR").endswith("dB")
    assert view.views_button.isEnabled()

    shown = wait_render(qtbot, view, lambda r: r["psnr"] is not None and not view._busy)  # from the run now
    assert shown[-1]["options"] == {"split": "test", "index": 1, "max_side": 128}
    assert view.last["psnr"] > 20, view.last
    assert view.render_item.image.shape == (SIZE, SIZE, 3) and view.error_item.image.max() > 0
    assert "PSNR" in view.psnr_label.text()
    first = view.render_item.image.copy()

    view.pick("test", 2)  # another camera: another render and picture
    wait_render(qtbot, view, lambda r: r["options"].get("index") == 2)
    assert view.last["psnr"] > 20
    assert np.abs(view.render_item.image.astype(int) - first).mean() > 2

    sizes = []
    view.rendered.connect(lambda r: sizes.append(max(r["size"])))
    pane = view.render_pane.viewport()  # a drag on the render: the free camera, coarse then finer
    qtbot.mousePress(pane, Qt.LeftButton, pos=QPoint(60, 60))
    qtbot.mouseMove(pane, QPoint(100, 50))
    qtbot.mouseRelease(pane, Qt.LeftButton, pos=QPoint(100, 50))
    assert view.free and view.free_button.isChecked() and view.yaw != 0
    wait_render(qtbot, view, lambda r: max(r["size"]) == FREE_SIDES[-1])
    assert sizes == list(FREE_SIDES), sizes
    assert view.last["psnr"] is None and view.picture_item.image is None  # no picture from there
    assert view.error_item.image.max() > 0 and "depth" in view.captions[2].text  # its depth instead
    assert view.render_item.image.shape == (FREE_SIDES[-1], FREE_SIDES[-1], 3)
    assert view.render_item.image.std() > 5  # the objects, not a blank background
    sizes.clear()
    view.zoom(2)  # the wheel: nearer, again from coarse
    wait_render(qtbot, view, lambda r: max(r["size"]) == FREE_SIDES[-1])
    assert sizes[0] == FREE_SIDES[0]
    view.free_button.setChecked(False)  # back to the camera picked
    wait_render(qtbot, view, lambda r: r["options"].get("index") == 2)


def test_export_views_and_orbit(window, qtbot, finished_run, tmp_path):
    import imageio.v2 as imageio

    assert window.open_path(finished_run), window.errors  # a finished run folder: its cameras and views
    view = window.scene_view
    assert window.scene_mode and lines(window, "cameras: test") == N_TEST * FRUSTUM_POINTS
    assert window.metrics.cell("PSNR").endswith("dB")
    wait_render(qtbot, view, lambda r: r["psnr"] is not None)
    assert view.last["psnr"] > 20

    with qtbot.waitSignal(view.exported, timeout=60_000) as exported:
        assert view.export_views(tmp_path / "views")
    result = exported.args[0]
    assert sorted(p.name for p in (tmp_path / "views").glob("*.png")) == [f"r_{i}.png" for i in range(N_TEST)]
    assert len(json.loads((tmp_path / "views" / "metrics.json").read_text())["views"]) == N_TEST
    assert result["psnr"] > 20 and "mean PSNR" in window.statusBar().currentMessage()

    with qtbot.waitSignal(view.exported, timeout=60_000) as exported:
        assert view.export_orbit(tmp_path / "orbit.mp4", frames=6)
    assert exported.args[0]["frames"] == 6
    reader = imageio.get_reader(tmp_path / "orbit.mp4")
    try:
        assert reader.count_frames() == 6 and reader.get_data(0).shape[:2] == (SIZE, SIZE)
    finally:
        reader.close()


def test_gui_command_opens_a_scene_and_saves_a_screenshot(tmp_path, scene):
    # In a process of its own: the command quits its QApplication, which would end this session's event loops too.
    import subprocess
    import sys

    from fieldstudio.data.images import read_image

    shot = tmp_path / "shot.png"
    code = "import sys; from fieldstudio.app.gui import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, str(scene), "--screenshot", str(shot)],
                          env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    image = read_image(shot)
    assert image.width >= 1000 and image.height >= 600
