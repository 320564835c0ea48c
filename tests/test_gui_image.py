"""The window's picture view (pytest-qt, under Xvfb): a picture opens in the input pane, a fit fills the
reconstruction and error panes and the PSNR curve, the three panes zoom and pan together, zooming in asks for a
sharper preview of the region in view, Export renders at a chosen scale, and ``fieldstudio gui --fit --screenshot``
works on a picture.

Pictures are tiny and made here (96 x 64, smooth, so that a couple of hundred small-batch steps fit them well).
"""

import json
import os

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
    pytest.skip("no display: run under xvfb-run (make test does)", allow_module_level=True)

from PySide6.QtCore import QRectF  # noqa: E402

from fieldstudio.data.images import read_image, write_image  # noqa: E402

W, H = 96, 64


def smooth_picture(channels: int = 3) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    rgb = np.stack([0.5 + 0.4 * np.sin(x / 9.0), y / H, np.exp(-((x - 60) ** 2 + (y - 30) ** 2) / 300.0)], -1)
    values = rgb[..., :1] if channels == 1 else rgb
    return (values * 255 + 0.5).astype(np.uint8)


@pytest.fixture
def picture(tmp_path):
    return write_image(tmp_path / "smooth.png", smooth_picture())


def small_batches(window, monkeypatch, batch: int = 512):
    """The panel's request with small training batches (the panel has no field for them)."""
    original = window.panel.request

    def request():
        r = original()
        r.overrides = {**r.overrides, "train.batch_size": batch}
        return r
    monkeypatch.setattr(window.panel, "request", request)


def test_a_picture_opens_in_the_image_view(window, tmp_path, picture):
    assert window.open_path(picture), window.errors
    view = window.image_view
    assert window.picture_mode and view.isVisible() and not window.view.isVisible()
    assert window.panel.resolved.task == "image"
    assert np.array_equal(view.input_item.image, smooth_picture())  # shown as stored, row 0 at the top
    assert view.boxes[0].yInverted() and "96 × 64" in view.captions[0].text
    for name in ("resolution", "labels", "every", "planes"):  # no meaning for pictures: hidden, left out
        assert not window.panel.edits[name].isVisible()
    window.panel.edits["every"].setText("3")
    assert "--every" not in window.panel.command() and window.panel.request().every is None
    assert window.panel.edits["params"].isVisible() and window.panel.edits["steps"].isVisible()

    grey = write_image(tmp_path / "grey.png", smooth_picture(1))
    assert window.open_path(grey)  # grey as grey: the three display channels equal the stored one
    shown = view.input_item.image
    assert shown.shape == (H, W, 3) and np.array_equal(shown[..., 0], smooth_picture(1)[..., 0])
    assert np.array_equal(shown[..., 0], shown[..., 2])
    window.image_view.export_dialog()  # nothing fitted yet: refused in one line
    assert window.errors and "no finished picture run" in window.errors[-1] and "\n" not in window.errors[-1]


def test_fit_fills_the_panes_and_the_psnr_curve_then_export(window, qtbot, tmp_path, picture, monkeypatch):
    window.open_path(picture)
    small_batches(window, monkeypatch)
    window.panel.edits["steps"].setText("200")
    window.panel.edits["params"].setText("20000")
    run = tmp_path / "run"
    window.panel.output.setText(str(run))
    previews = []
    original = window.image_view.show_previews
    monkeypatch.setattr(window.image_view, "show_previews", lambda p: (previews.append(p), original(p)))
    with qtbot.waitSignal(window.fit_ended, timeout=120_000) as ended:
        window.start_fit()
    assert ended.args[0] == "finished", window.errors
    view = window.image_view
    assert previews and previews[0][0][1].shape == (H, W, 3)  # the live whole-picture preview arrived
    xs, ys = view.curve.getData()
    assert len(xs) >= 5 and ys[-1] > 20 and xs[-1] > xs[0]  # dB against seconds
    recon = view.recon_item.image  # the final reconstruction.png, full size
    assert recon.shape == (H, W, 3)
    assert np.abs(recon.astype(float) - smooth_picture()).mean() < 8
    error = view.error_item.image
    assert error.shape == (H, W, 3) and error.max() > 0  # a heat map, not all black
    assert "PSNR" in window.stage.text() and "SSIM" in window.stage.text()
    assert window.metrics.cell("PSNR").endswith("dB") and window.metrics.cell("SSIM")

    view.boxes[2].setRange(QRectF(10, 5, 30, 20), padding=0)  # zoom on the error pane: the others follow
    ranges = [np.array(box.viewRange()) for box in view.boxes]
    assert np.allclose(ranges[0], ranges[2]) and np.allclose(ranges[1], ranges[2])
    assert ranges[0][0][1] - ranges[0][0][0] < W / 2

    view.export_dialog()  # File > Export picture: file name, scale and bits, rendered in a thread
    dialog = view.export_dialog_box
    assert dialog.bits.currentText() == "8"
    dialog.path.setText(str(tmp_path / "big.png"))
    dialog.scale.setValue(2.0)
    with qtbot.waitSignal(view.exported, timeout=60_000) as exported:
        dialog.accept()
    written = read_image(exported.args[0]["image"])
    assert (written.width, written.height, written.channels) == (2 * W, 2 * H, 3)
    assert "big.png" in window.statusBar().currentMessage()

    assert window.open_path(run)  # the run folder: its reconstruction, PSNR history and scores
    assert view.recon_item.image.shape == (H, W, 3) and len(view.curve.getData()[0]) >= 2
    assert window.metrics.cell("PSNR") and window.panel.edits["steps"].text() == "200"


def test_zooming_in_asks_for_a_sharper_preview_of_the_region_in_view(window, qtbot, picture):
    from fieldstudio.app.gui.image_view import sample_input

    window.resize(1280, 800)
    window.open_path(picture)
    view = window.image_view
    qtbot.wait(50)
    view.running = True  # as during a fit (no training needed to check what is asked for and how it is shown)
    view.boxes[1].setRange(QRectF(20, 10, 24, 16), padding=0)
    crop, size = view.wanted_detail()
    (x0, x1), (y0, y1) = view.boxes[1].viewRange()
    inside = (max(0, np.floor(x0)), max(0, np.floor(y0)), min(W, np.ceil(x1)), min(H, np.ceil(y1)))
    assert crop == (inside[0], inside[1], inside[2] - inside[0], inside[3] - inside[1])  # the picture in view
    assert size[0] > 2 * crop[2]  # rendered at the pane's pixels: sharper than the input itself
    assert view.preview_options() == [{"max_side": 256}, {"crop": crop, "size": size}]
    with qtbot.waitSignal(view.detail_wanted, timeout=3_000):  # once the view rests
        view.boxes[0].setRange(QRectF(22, 10, 24, 16), padding=0)
    crop, size = view.wanted_detail()
    whole = sample_input(read_image(picture), (0, 0, W, H), (W, H))
    np.testing.assert_allclose(whole, read_image(picture).as_float(), atol=1e-6)  # pixel centres: the pixels
    detail = sample_input(read_image(picture), crop, size)
    view.show_previews([({"max_side": 256}, whole), ({"crop": crop, "size": size}, detail)])
    assert view.recon_detail.isVisible() and view.recon_detail.image.shape[:2] == (size[1], size[0])
    rect = view.recon_detail.mapRectToParent(view.recon_detail.boundingRect())
    assert (rect.x(), rect.y(), rect.width(), rect.height()) == pytest.approx(crop)
    assert view.error_detail.image.max() == 0  # the input itself: no error
    view.running = False


def test_gui_command_fits_a_picture_and_saves_a_screenshot(tmp_path, picture):
    # In a process of its own: the command quits its QApplication, which would end this session's event loops too.
    import subprocess
    import sys

    shot = tmp_path / "shot.png"
    code = "import sys; from fieldstudio.app.gui import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, str(picture), "--fit", "--steps", "40", "--params", "20000",
                           "-o", str(tmp_path / "run"), "--screenshot", str(shot)],
                          env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 40 and metrics["psnr"] > 10
    image = read_image(shot)
    assert image.width >= 1000 and image.height >= 600
