"""image_view.py
=============
The view of pictures (the image task): the input, the live reconstruction and the error map side by side, zoomed
and panned together, the PSNR over time under them, and Export of the reconstruction at any scale.

Coordinates: every pane shows input pixel units, pixel (row r, column c) covering [c, c + 1) x [r, r + 1), row 0 at
the top (as ``fieldstudio.tasks.image`` samples them). While a fit trains, the reconstruction and error panes show a
coarse preview of the whole picture (longer side ``PREVIEW_SIDE``) and, over it, a sharper preview of the region in
view at the pane's own pixel size once the view rests (``detail_wanted``; the window passes it to the fit's worker,
which renders between two training steps). The error is |reconstruction - input|, RMS over channels, as a heat map
(black 0, through red and yellow to white at the scale in the caption). When the fit ends, the run's
reconstruction and error.png are shown at full size.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, QTimer, Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QSizePolicy, QVBoxLayout, QWidget)

from fieldstudio.app.gui.exports import run_metrics, start_export
from fieldstudio.tasks.image import rms_error, sample_coordinates

BACKGROUND = (38, 41, 46)
CAPTION = "#d8d8d8"
PREVIEW_SIDE = 256  # the coarse whole-picture preview's longer side
DETAIL_REST_MS = 300  # a sharper preview of the region in view once the view has not changed for this long
DETAIL_EVERY_S = 0.5  # and at most this often
DETAIL_GAIN = 1.25  # asked for when the pane shows the region this much sharper than the coarse preview can
MAX_DETAIL_SIDE = 2048
PLOT_MAX_HEIGHT = 360  # the PSNR plot's; the panes take the rest
PLOT_EVERY_S = 1.0  # the PSNR curve is redrawn at most this often while a fit runs (as the window's loss plot)
CHECKER_TILES = 32  # transparent parts are drawn over a checkerboard of this many tiles along the longer side
CHANNEL_NAMES = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGBA"}


# ------------------------------------------------------------------------------------------------ pixels

def sample_input(picture, crop, size) -> np.ndarray:
    """The input at a render's sample points (bilinear between pixel centres), (h, w, C) float32 in [0, 1] units."""
    u, v = sample_coordinates(crop, size)
    u = np.clip(u - 0.5, 0, picture.width - 1)
    v = np.clip(v - 0.5, 0, picture.height - 1)
    i0, j0 = np.floor(u).astype(np.intp), np.floor(v).astype(np.intp)
    i1, j1 = np.minimum(i0 + 1, picture.width - 1), np.minimum(j0 + 1, picture.height - 1)
    fu, fv = (u - i0).astype(np.float32)[None, :, None], (v - j0).astype(np.float32)[:, None, None]
    p = picture.pixels

    def at(j, i):
        return p[np.ix_(j, i)].astype(np.float32)

    top = at(j0, i0) * (1 - fu) + at(j0, i1) * fu
    bottom = at(j1, i0) * (1 - fu) + at(j1, i1) * fu
    return (top * (1 - fv) + bottom * fv) / np.float32(picture.peak)


def to_display(values: np.ndarray, u: np.ndarray | None = None, v: np.ndarray | None = None,
               tile: float = 1.0) -> np.ndarray:
    """(h, w, C) values in [0, 1] units -> (h, w, 3) uint8 for the screen: grey as grey, alpha (C = 2 or 4) over a
    checkerboard of ``tile`` input pixels (``u``, ``v``: the samples' input coordinates, so that every pane and
    every preview shows the same board)."""
    c = values.shape[2]
    colour = np.clip(values[..., :3] if c >= 3 else np.repeat(values[..., :1], 3, axis=2), 0.0, 1.0)
    if c in (2, 4):
        alpha = np.clip(values[..., -1:], 0.0, 1.0)
        if u is None:
            v, u = np.arange(values.shape[0]) + 0.5, np.arange(values.shape[1]) + 0.5
        board = ((np.floor(v / tile)[:, None] + np.floor(u / tile)[None, :]) % 2).astype(np.float32)
        board = (0.62 + 0.16 * board)[..., None]
        colour = colour * alpha + board * (1 - alpha)
    return (colour * 255 + 0.5).astype(np.uint8)


def picture_display(picture, rows: int = 256) -> np.ndarray:
    """A whole Picture for the screen, (H, W, 3) uint8, a block of rows at a time (no float copy of a 4k picture)."""
    tile = max(picture.width, picture.height) / CHECKER_TILES
    out = np.empty((picture.height, picture.width, 3), np.uint8)
    u = np.arange(picture.width) + 0.5
    for r in range(0, picture.height, rows):
        block = slice(r, min(r + rows, picture.height))
        out[block] = to_display(picture.as_float(block), u, np.arange(block.start, block.stop) + 0.5, tile)
    return out


def psnr_of(loss: float) -> float | None:
    return -10.0 * math.log10(loss) if loss and loss > 0 and math.isfinite(loss) else None


# ------------------------------------------------------------------------------------------------ export

class ExportDialog(QDialog):
    """File name, scale (0.25..8) and bits (8 / 16, 32 for float inputs; the input's by default)."""

    def __init__(self, path: Path, bits: int, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Export the reconstruction")
        self.path = QLineEdit(str(path))
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        self.scale = QDoubleSpinBox()
        self.scale.setRange(0.25, 8.0)
        self.scale.setSingleStep(0.25)
        self.scale.setValue(2.0)
        self.scale.setSuffix(" x")
        self.bits = QComboBox()
        self.bits.addItems(["8", "16"] + (["32"] if bits == 32 else []))
        self.bits.setCurrentText(str(bits))
        form = QFormLayout(self)
        form.addRow("File", row)
        form.addRow("Scale", self.scale)
        form.addRow("Bits", self.bits)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the reconstruction", self.path.text(),
                                              "Pictures (*.png *.tif *.tiff *.exr *.jpg *.webp *.bmp)")
        if path:
            self.path.setText(path)


# ------------------------------------------------------------------------------------------------ the view

class ImageView(QWidget):
    """Input | reconstruction | error, linked zoom and pan, PSNR over time, Export."""

    detail_wanted = Signal()  # the view rests on a region the coarse preview shows blurred: preview it now
    problem = Signal(str)  # a one-line error for the window's dialog
    note = Signal(str, int)  # a status-bar message and its time in ms
    exported = Signal(object)  # render_job's result dict
    _export_done = Signal(object, str)  # job thread -> window thread: (result, error)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.picture = None  # the input (fieldstudio.data.images.Picture)
        self.run_dir: Path | None = None  # the run shown (finished) or being fitted
        self.running = False
        self.psnr: list[tuple[float, float]] = []  # (seconds of training, dB)
        self.last_step = 0
        self._train_t0: float | None = None
        self._last_plot = 0.0
        self._last_detail = 0.0
        self.detail_crop = None  # (crop, size) of the detail preview on show
        self.error_scale: float | None = None  # of the coarse preview: the detail uses it too, no seams
        self._reference_cache: dict = {}
        self.export_job = None
        self.framed = True  # the view shows the whole picture, and keeps doing so when the panes are resized

        panes = QHBoxLayout()  # three widgets of equal width (a caption's length must not widen its pane)
        panes.setSpacing(4)
        self.captions, self.boxes, self.pane_widgets = [], [], []
        for col in range(3):
            pane = pg.GraphicsLayoutWidget()
            pane.setBackground(BACKGROUND)
            pane.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Expanding)
            pane.setMinimumWidth(120)
            self.captions.append(pane.addLabel("", row=0, col=0, color=CAPTION, size="9pt"))
            box = pane.addViewBox(row=1, col=0, lockAspect=True, invertY=True, enableMenu=False)
            box.setBackgroundColor((28, 30, 34))
            box.sigRangeChangedManually.connect(self._zoomed_by_hand)
            self.boxes.append(box)
            self.pane_widgets.append(pane)
            panes.addWidget(pane, 1)
        for box in self.boxes[1:]:
            box.setXLink(self.boxes[0])
            box.setYLink(self.boxes[0])
        self.input_item = pg.ImageItem(axisOrder="row-major")
        self.recon_item, self.recon_detail = pg.ImageItem(axisOrder="row-major"), pg.ImageItem(axisOrder="row-major")
        self.error_item, self.error_detail = pg.ImageItem(axisOrder="row-major"), pg.ImageItem(axisOrder="row-major")
        self.boxes[0].addItem(self.input_item)
        for box, base, detail in ((self.boxes[1], self.recon_item, self.recon_detail),
                                  (self.boxes[2], self.error_item, self.error_detail)):
            box.addItem(base)
            box.addItem(detail)
            detail.setZValue(1)

        self.plot = pg.PlotWidget(background=BACKGROUND)
        self.plot.setLabel("bottom", "seconds of training")
        self.plot.setLabel("left", "PSNR (dB)")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setMinimumHeight(150)
        self.curve = self.plot.plot(pen=pg.mkPen((255, 200, 60), width=2))

        self.whole = QPushButton("Whole picture")
        self.whole.clicked.connect(self.show_whole)
        self.one_to_one = QPushButton("1:1")
        self.one_to_one.setToolTip("one input pixel per screen pixel")
        self.one_to_one.clicked.connect(self.show_one_to_one)
        self.export_button = QPushButton("Export...")
        self.export_button.setToolTip("render the reconstruction at any scale into a picture file")
        self.export_button.clicked.connect(self.export_dialog)
        self.hint = QLabel("wheel: zoom, drag: pan (the three panes together)")
        self.hint.setStyleSheet("color: #909090")
        tools = QHBoxLayout()
        for w in (self.whole, self.one_to_one, self.export_button):
            tools.addWidget(w)
        tools.addWidget(self.hint, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.pane_row = QWidget()  # as tall as the picture's shape needs at the panes' width (see resizeEvent)
        self.pane_row.setLayout(panes)
        panes.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.pane_row, 3)
        layout.addLayout(tools)
        layout.addWidget(self.plot, 1)

        self.detail_timer = QTimer(self)
        self.detail_timer.setSingleShot(True)
        self.detail_timer.timeout.connect(self._detail_due)
        self.boxes[0].sigRangeChanged.connect(lambda *_: self._view_changed())
        self.boxes[1].sigResized.connect(lambda *_: self._resized())
        self._export_done.connect(self._on_exported)
        self._set_captions()

    # -------------------------------------------------------------------------------------------- input and runs
    def set_picture(self, picture) -> None:
        """Show an input Picture (``fieldstudio.data.images.read_image``); clears the panes and the curve."""
        self.picture, self.run_dir, self._reference_cache = picture, None, {}
        self.input_item.setImage(picture_display(picture), autoLevels=False, levels=(0, 255))
        self.input_item.setRect(QRectF(0, 0, picture.width, picture.height))
        self._fit_pane_height()
        self._clear_result()
        self.show_whole()

    def _clear_result(self) -> None:
        for item in (self.recon_item, self.recon_detail, self.error_item, self.error_detail):
            item.clear()
            item.setVisible(item in (self.recon_item, self.error_item))
        self.detail_crop, self.error_scale = None, None
        self.psnr, self.last_step, self._train_t0 = [], 0, None
        self.curve.setData([], [])
        self.plot.setTitle(None)
        self._set_captions()

    def _set_captions(self, recon: str = "reconstruction", error: str = "error") -> None:
        p = self.picture
        text = "input" if p is None else (f"input {p.width} × {p.height}, {CHANNEL_NAMES.get(p.channels, '')}, "
                                          f"{p.bits if p.bits != 32 else 'float'}{' bit' if p.bits != 32 else ''}")
        for label, t in zip(self.captions, (text, recon, error)):
            label.setText(t)

    def start_run(self, run_dir: Path) -> None:
        """A fit into ``run_dir`` begins: previews and step events follow."""
        self.run_dir, self.running = Path(run_dir), True
        self._clear_result()
        self._set_captions("reconstruction: waiting for the field", "error")

    def stop_run(self) -> None:
        self.running = False
        self.detail_timer.stop()
        self._draw_curve()

    def show_run(self, run_dir: Path) -> dict:
        """A finished run: its reconstruction and error map at full size, its PSNR history when no live curve was
        drawn (a run folder opened), its scores over the plot. Returns its metrics."""
        from fieldstudio.data.images import read_image

        self.run_dir = Path(run_dir)
        metrics = self.metrics(run_dir)
        recon = next(iter(sorted(Path(run_dir).glob("reconstruction.*"))), None)
        for item in (self.recon_detail, self.error_detail):
            item.clear()
            item.hide()
        self.detail_crop = None
        if recon is None:
            return metrics
        picture = read_image(recon)
        self.recon_item.setImage(picture_display(picture), autoLevels=False, levels=(0, 255))
        self.recon_item.setRect(QRectF(0, 0, picture.width, picture.height))
        error = Path(run_dir) / "error.png"
        if error.exists():
            heat = read_image(error).pixels
            self.error_item.setImage(heat[..., :3] if heat.shape[2] >= 3 else heat[..., 0], autoLevels=False,
                                     levels=(0, 255))
            self.error_item.setRect(QRectF(0, 0, picture.width, picture.height))
        if not self.psnr and metrics.get("history"):
            self.psnr = [(h["elapsed"], h["psnr"]) for h in metrics["history"] if h.get("psnr") is not None]
            self._draw_curve()
        scale = metrics.get("error_map_scale")
        self._set_captions(f"reconstruction {picture.width} × {picture.height} (final)",
                           "error |recon − input|, white ≥ " + (f"{scale:.3g}" if scale else "99th percentile"))
        if "psnr" in metrics:
            self.plot.setTitle(f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics.get('ssim', float('nan')):.4f}",
                               color=CAPTION, size="10pt")
        if self.picture is None:  # the input is gone: frame the result
            self._fit_pane_height()
            self.show_whole(picture.width, picture.height)
        return metrics

    metrics = staticmethod(run_metrics)

    def scores(self, run_dir: Path | None) -> str:
        """", PSNR 31.20 dB, SSIM 0.9012" of a finished run ("" when it has none)."""
        m = self.metrics(run_dir)
        return f", PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}" if "psnr" in m and "ssim" in m else ""

    # -------------------------------------------------------------------------------------------- live fit
    def on_event(self, e) -> None:
        """A job Event: steps feed the PSNR curve (redrawn at most once per PLOT_EVERY_S)."""
        if e.kind == "stage" and e.stage == "train":
            self._train_t0 = e.elapsed
        elif e.kind == "step":
            self.last_step = e.step
            db = psnr_of(e.loss)
            if db is not None:
                self.psnr.append((e.elapsed - (self._train_t0 or 0.0), db))
            now = time.perf_counter()
            if now - self._last_plot >= PLOT_EVERY_S or e.done >= e.total:
                self._last_plot = now
                self._draw_curve()

    def _draw_curve(self) -> None:
        if self.psnr:
            xs, ys = zip(*self.psnr)
            self.curve.setData(list(xs), list(ys))

    def preview_options(self) -> list[dict]:
        """What the worker should render now (called in the window's thread): the coarse whole picture, and the
        region in view at the pane's pixel size when the coarse one would look blurred there."""
        options = [{"max_side": PREVIEW_SIDE}]
        detail = self.wanted_detail()
        if detail is not None:
            options.append({"crop": detail[0], "size": detail[1]})
        return options

    def wanted_detail(self):
        """(crop (x, y, w, h) input pixels, size (w, h)) of the region in view, rendered at the reconstruction
        pane's device pixels; None when the coarse preview is sharp enough there (or no picture / pane)."""
        p, box = self.picture, self.boxes[1]
        if p is None or box.width() < 2 or box.height() < 2:
            return None
        (x0, x1), (y0, y1) = box.viewRange()
        cx0, cy0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        cx1, cy1 = min(p.width, math.ceil(x1)), min(p.height, math.ceil(y1))
        if cx1 - cx0 < 1 or cy1 - cy0 < 1:
            return None
        ratio = self.devicePixelRatioF() or 1.0
        per_pixel = min(box.width() / max(x1 - x0, 1e-9), box.height() / max(y1 - y0, 1e-9)) * ratio
        coarse = min(1.0, PREVIEW_SIDE / max(p.width, p.height))  # coarse preview pixels per input pixel
        if per_pixel <= coarse * DETAIL_GAIN:
            return None
        w, h = (cx1 - cx0) * per_pixel, (cy1 - cy0) * per_pixel
        shrink = min(1.0, MAX_DETAIL_SIDE / max(w, h))
        return (cx0, cy0, cx1 - cx0, cy1 - cy0), (max(1, round(w * shrink)), max(1, round(h * shrink)))

    def _view_changed(self) -> None:
        if self.running:
            self.detail_timer.start(DETAIL_REST_MS)

    def _detail_due(self) -> None:
        if not self.running:
            return
        wait = DETAIL_EVERY_S - (time.perf_counter() - self._last_detail)
        if wait > 0:
            self.detail_timer.start(int(wait * 1000) + 1)
            return
        wanted = self.wanted_detail()
        if wanted is None:
            for item in (self.recon_detail, self.error_detail):
                item.hide()
            self.detail_crop = None
            return
        if wanted == self.detail_crop:
            return
        self._last_detail = time.perf_counter()
        self.detail_wanted.emit()

    def _reference(self, crop, size) -> np.ndarray:
        key = (tuple(crop), tuple(size))
        if key not in self._reference_cache:
            if len(self._reference_cache) > 4:
                self._reference_cache.clear()
            self._reference_cache[key] = sample_input(self.picture, crop, size)
        return self._reference_cache[key]

    def show_previews(self, previews) -> None:
        """[(options, (h, w, C) array), ...] from the worker: the coarse whole picture and maybe a detail."""
        if not self.running or self.picture is None:
            return
        p = self.picture
        tile = max(p.width, p.height) / CHECKER_TILES
        for options, values in previews:
            crop = tuple(options.get("crop") or (0, 0, p.width, p.height))
            h, w = values.shape[:2]
            u, v = sample_coordinates(crop, (w, h))
            error = rms_error(values, self._reference(crop, (w, h)))
            detail = "crop" in options
            if not detail:
                from fieldstudio.data.images import error_heatmap

                heat, self.error_scale = error_heatmap(error)
            else:
                heat, _ = self._heat(error)
            recon_item, error_item = (self.recon_detail, self.error_detail) if detail else (self.recon_item,
                                                                                            self.error_item)
            rect = QRectF(*crop)
            recon_item.setImage(to_display(values, u, v, tile), autoLevels=False, levels=(0, 255))
            recon_item.setRect(rect)
            error_item.setImage(heat, autoLevels=False, levels=(0, 255))
            error_item.setRect(rect)
            if detail:
                self.detail_crop = (crop, (w, h))
                recon_item.show()
                error_item.show()
        if len(previews) == 1 and self.detail_crop is not None and self.wanted_detail() is None:
            self.recon_detail.hide()  # zoomed back out: the coarse preview is sharp enough
            self.error_detail.hide()
            self.detail_crop = None
        elif self.wanted_detail() not in (None, self.detail_crop):  # the view moved meanwhile, or a request was
            self.detail_timer.start(DETAIL_REST_MS)                 # dropped while another preview was busy
        scale = f"{self.error_scale:.3g}" if self.error_scale else "?"
        self._set_captions(f"reconstruction, step {self.last_step}", f"error |recon − input|, white ≥ {scale}")

    def _heat(self, error):
        from fieldstudio.data.images import error_heatmap

        return error_heatmap(error, self.error_scale)

    # -------------------------------------------------------------------------------------------- view
    def show_whole(self, width: int | None = None, height: int | None = None) -> None:
        p = self.picture
        if width is None and p is None:
            rect = self.recon_item.boundingRect()
            width, height = rect.width(), rect.height()
        w, h = (p.width, p.height) if p is not None and width is None else (width or 1, height or 1)
        self.framed = True
        self.boxes[0].setRange(QRectF(0, 0, w, h), padding=0.02)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_pane_height()

    def _fit_pane_height(self) -> None:
        """Panes no taller than the picture needs at their width (a landscape picture in three narrow panes would
        leave most of them empty); the PSNR plot takes the rest, up to PLOT_MAX_HEIGHT."""
        rect = self.input_item.boundingRect() if self.picture is not None else self.recon_item.boundingRect()
        if rect.width() < 1 or rect.height() < 1:
            self.pane_row.setMaximumHeight(16_777_215)
            return
        pane_width = (self.width() - 2 * 4) / 3
        caption = self.captions[0].boundingRect().height() + 24  # caption and the layouts' margins
        fitted = int(pane_width * 1.04 * rect.height() / rect.width() + caption)
        rest = self.height() - PLOT_MAX_HEIGHT - self.whole.sizeHint().height() - 12
        self.pane_row.setMaximumHeight(max(200, fitted, rest))

    def _zoomed_by_hand(self, *_) -> None:
        self.framed = False

    def _resized(self) -> None:
        if self.framed:
            self.show_whole()
        self._view_changed()

    def show_one_to_one(self) -> None:
        """One input pixel per screen pixel, about the centre of the view."""
        box = self.boxes[0]
        (x0, x1), (y0, y1) = box.viewRange()
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        w, h = box.width(), box.height()
        self.framed = False
        box.setRange(QRectF(cx - w / 2, cy - h / 2, w, h), padding=0)

    # -------------------------------------------------------------------------------------------- export
    def finished_run(self) -> Path | None:
        """The run the view shows when it is a finished image run (reconstruction and metrics written)."""
        if self.running or self.run_dir is None:
            return None
        run = self.run_dir
        return run if (run / "metrics.json").exists() and any(run.glob("reconstruction.*")) else None

    def export_dialog(self) -> None:
        run = self.finished_run()
        if run is None:
            self.problem.emit("no finished picture run to export yet; fit a picture (or open a finished run "
                              "folder) first")
            return
        bits = self.metrics(run).get("frame", {}).get("bits", 8)
        dialog = ExportDialog(run / f"reconstruction_x2{'.exr' if bits == 32 else '.png'}", bits, self)
        self.export_dialog_box = dialog

        def chosen():
            self.export(Path(dialog.path.text()), dialog.scale.value(), int(dialog.bits.currentText()))
        dialog.accepted.connect(chosen)
        dialog.open()  # window-modal, without blocking the event loop

    def export(self, path: Path, scale: float, bits: int | None = None) -> bool:
        """Render the finished run at ``scale`` into ``path`` in a thread; ``exported`` (and a status message)
        when written, ``problem`` when it fails."""
        
        return start_export(self, self.finished_run(), Path(path), f"exporting {Path(path).name} at {scale:g} x ...",
                            "no finished picture run to export yet; fit a picture (or open a finished run folder) "
                            "first", scale=scale, bits=bits)

    def _on_exported(self, result, error: str) -> None:
        if result is None:
            self.problem.emit(error.splitlines()[0] if error else "the export failed")
            return
        self.note.emit(f"wrote {result['image']} ({result['width']} × {result['height']})", 10_000)
        self.exported.emit(result)


