"""scene_view.py
=============
NeRF scenes in the window: the train and test cameras as frusta in the 3D view, and a panel that shows one view
as ground truth | render | error (|render - picture|, RMS over channels, as a heat map) with its PSNR.

Sources of renders, always computed off the window's thread: while a fit trains, the fit's worker renders between
two training steps (``preview_options`` says what, ``show_previews`` takes the results, ``view_wanted`` asks for
one now); otherwise the run folder's checkpoint, loaded once in a thread of this view's own (``load_run``; its
occupancy grid is built once too) and rendered with ``fieldstudio.run.preview_view``.

Free view: dragging the render pane orbits a camera around the scene's centre (yaw about the scene's up axis,
pitch, the wheel sets the distance), rendered coarse first and finer as long as it rests (``FREE_SIDES``), with
the intrinsics of the first training camera scaled to ``FREE_SIDES[-1]`` pixels along its longer side.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, QTimer, Signal
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QSpinBox,
                               QVBoxLayout, QWidget)

from fieldstudio.app.gui.exports import run_metrics, start_export
from fieldstudio.app.gui.view3d import LineItem, colour
from fieldstudio.control import Cancelled, Control, active

BACKGROUND = (38, 41, 46)
CAPTION = "#d8d8d8"
VIEW_SIDE = 128  # a scene camera's render: longer side at most this many pixels
FREE_SIDES = (32, 64, 128)  # the free camera's renders, coarse to fine
FRUSTUM_SHARE = 0.1  # frustum depth: this share of the cameras' mean distance to the scene's centre
FRUSTUM_POINTS = 16  # line end points per frustum: 4 edges from the eye and the 4 of the picture's rim
TRAIN_COLOUR, TEST_COLOUR, PICKED_COLOUR, BOX_COLOUR = 1, 0, 5, 7  # view3d palette indices
ORBIT_FRAMES = 120
NO_RUN = "no finished NeRF run to export yet; fit the scene (or open a finished run folder) first"
RADIANS_PER_PIXEL = 0.01  # free camera: drag speed
WHEEL_STEP = 0.9  # free camera: distance factor per wheel notch (towards the centre)
MAX_PITCH = math.radians(85.0)
REQUEST_DELAY_MS = 30  # a follow-up render is asked for this long after a result (the worker is free by then)


# ------------------------------------------------------------------------------------------------ geometry

def frustum_segments(cams, depth: float) -> np.ndarray:
    """(FRUSTUM_POINTS * N, 3) float32 point pairs: each camera's pyramid from its centre to its picture's corners
    at ``depth`` along its viewing direction (OpenGL axes: x right, y up, looking along -z)."""
    parts = []
    for cam in cams:
        corners_cam = np.array([[(u - cam.cx) / cam.fx, -(v - cam.cy) / cam.fy, -1.0]
                                for u, v in ((0, 0), (cam.width, 0), (cam.width, cam.height), (0, cam.height))])
        eye = cam.c2w[:3, 3]
        corners = corners_cam * depth @ cam.c2w[:3, :3].T + eye
        for k in range(4):
            parts += [eye, corners[k], corners[k], corners[(k + 1) % 4]]
    return np.asarray(parts, np.float32).reshape(-1, 3)


def box_segments(centre: np.ndarray, half: float) -> np.ndarray:
    """(24, 3) float32 point pairs: the 12 edges of the cube ``centre`` +- ``half``."""
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64)
    pairs = [(i, j) for i in range(8) for j in range(i + 1, 8) if np.abs(corners[i] - corners[j]).sum() == 2]
    return (centre + half * corners[np.array(pairs).reshape(-1)]).astype(np.float32)


def show_lines(view, name: str, pos: np.ndarray, index: int, width: float = 1.5) -> None:
    """Line segments (point pairs) as one named item of the 3D view (replaces ``name``), cut by its clipping plane
    as its contours are."""
    view.remove(name)
    item = LineItem(pos=pos, color=colour(index), width=width, antialias=True, mode="lines")
    item.full_pos = pos
    item.world_bounds = np.array([pos.min(axis=0), pos.max(axis=0)], np.float64)
    if view.clip is not None:
        view._clip_lines(item)
    view.addItem(item)
    view.items_by_name[name] = [item]
    view.contents_changed.emit()


def psnr_of(rgb: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(rgb, np.float64) - reference) ** 2))
    return -10.0 * math.log10(mse) if mse > 0 else float("inf")


def to_display(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def is_nerf_run(run_dir: Path) -> bool:
    """A run folder of the nerf task (its config.toml says so)."""
    from fieldstudio.config import load_run_config
    from fieldstudio.errors import FieldStudioError

    path = Path(run_dir) / "config.toml"
    if not path.exists():
        return False
    try:
        return load_run_config(path).task == "nerf"
    except (FieldStudioError, OSError, ValueError):
        return False


class RenderPane(pg.GraphicsLayoutWidget):
    """A pane that turns left-button drags into ``dragged(dx, dy)`` (pixels) and the wheel into ``wheeled(notches)``
    instead of panning and zooming its picture."""

    dragged = Signal(float, float)
    wheeled = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._last = None

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.LeftButton:
            self._last = event.position()
            event.accept()
        else:
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        if self._last is not None:
            p = event.position()
            self.dragged.emit(p.x() - self._last.x(), p.y() - self._last.y())
            self._last = p
            event.accept()
        else:
            super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:
        if self._last is not None and event.button() == Qt.LeftButton:
            self._last = None
            event.accept()
        else:
            super().mouseReleaseEvent(event)

    def wheelEvent(self, event) -> None:
        self.wheeled.emit(event.angleDelta().y() / 120.0)
        event.accept()


# ------------------------------------------------------------------------------------------------ the view

class SceneView(QWidget):
    """Camera picker, ground truth | render | error of the chosen view, free orbit camera, Export."""

    view_wanted = Signal()  # (while a fit runs) render now: the worker calls preview_options
    problem = Signal(str)  # a one-line error for the window's dialog
    note = Signal(str, int)  # a status-bar message and its time in ms
    rendered = Signal(object)  # after a render is shown: {"options", "size" (w, h), "psnr" or None}
    exported = Signal(object)  # render_job's result dict
    export_ready = Signal(bool)  # whether a finished run can be exported (the window's menu entries follow)
    # render thread -> window: options, result (None when it failed), error, the run folder it was made from and
    # that run loaded (or None)
    _ready = Signal(object, object, str, object, object)
    _export_done = Signal(object, str)

    def __init__(self, view3d, parent=None):
        super().__init__(parent)
        self.view3d = view3d
        self.cfg = None  # the scene's resolved config (cfg.input: the scene folder)
        self.cams: dict[str, list] = {}
        self.centre, self.half = np.zeros(3), 1.0
        self.up, self.axes = np.array([0.0, 0.0, 1.0]), (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))
        self.radius = 1.0  # the cameras' mean distance to the centre
        self.free = False
        self.yaw = self.pitch = 0.0
        self.distance = 1.0
        self.free_cam = None
        self.shown_key, self.shown_side = None, 0  # what the render pane shows, and how sharp
        self.live = False  # a fit is running: its worker renders
        self.run_dir: Path | None = None
        self.step = 0
        self.last: dict = {}  # the last render shown: options, size, psnr
        self._loaded = None  # (run_dir, cfg, model, frame, renderer) of the run rendered from
        self._busy = False  # a render from the run is being made
        self._thread: threading.Thread | None = None  # the one making it
        self._control = Control()  # cancels it when the window closes
        self._pictures: dict = {}  # (split, index) -> ground truth at the view's size
        self.export_job = None

        self.split = QComboBox()
        self.split.setToolTip("the cameras to browse")
        self.index = QSpinBox()
        self.index.setToolTip("which camera of the split")
        self.free_button = QPushButton("Free view")
        self.free_button.setCheckable(True)
        self.free_button.setToolTip("orbit a camera of your own: drag the render, wheel for the distance")
        self.psnr_label = QLabel("")
        self.psnr_label.setStyleSheet("font-weight: bold")
        self.views_button = QPushButton("Export views...")
        self.views_button.setToolTip("render the finished run's test views into a folder (PNG and their PSNR)")
        self.orbit_button = QPushButton("Export orbit video...")
        self.orbit_button.setToolTip(f"render {ORBIT_FRAMES} frames around the scene into an .mp4")
        tools = QHBoxLayout()
        tools.addWidget(QLabel("Camera"))
        for w in (self.split, self.index, self.free_button):
            tools.addWidget(w)
        tools.addWidget(self.psnr_label, 1, Qt.AlignCenter)
        tools.addWidget(self.views_button)
        tools.addWidget(self.orbit_button)

        panes = QHBoxLayout()
        panes.setSpacing(4)
        panes.setContentsMargins(0, 0, 0, 0)
        self.captions, self.boxes, self.items = [], [], []
        for col in range(3):
            pane = RenderPane() if col == 1 else pg.GraphicsLayoutWidget()
            pane.setBackground(BACKGROUND)
            pane.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Expanding)
            pane.setMinimumWidth(100)
            self.captions.append(pane.addLabel("", row=0, col=0, color=CAPTION, size="9pt"))
            box = pane.addViewBox(row=1, col=0, lockAspect=True, invertY=True, enableMenu=False)
            box.setMouseEnabled(False, False)
            box.setBackgroundColor((28, 30, 34))
            item = pg.ImageItem(axisOrder="row-major")
            box.addItem(item)
            self.boxes.append(box)
            self.items.append(item)
            panes.addWidget(pane, 1)
            if col == 1:
                self.render_pane = pane
        self.picture_item, self.render_item, self.error_item = self.items
        self.hint = QLabel("drag the render to orbit a free camera, wheel: nearer / farther")
        self.hint.setStyleSheet("color: #909090")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(tools)
        layout.addLayout(panes, 1)
        layout.addWidget(self.hint)

        self.request_timer = QTimer(self)
        self.request_timer.setSingleShot(True)
        self.request_timer.setInterval(REQUEST_DELAY_MS)
        self.request_timer.timeout.connect(self._request)
        self.split.currentIndexChanged.connect(self._split_changed)
        self.index.valueChanged.connect(lambda _: self._camera_changed())
        self.free_button.toggled.connect(self._free_toggled)
        self.render_pane.dragged.connect(self.orbit)
        self.render_pane.wheeled.connect(self.zoom)
        self.views_button.clicked.connect(self.export_views_dialog)
        self.orbit_button.clicked.connect(self.export_orbit_dialog)
        self._ready.connect(self._on_ready)
        self._export_done.connect(self._on_exported)
        self._set_exportable()

    # -------------------------------------------------------------------------------------------- scene
    def set_scene(self, cfg) -> list[tuple[str, str, int]]:
        """Show the scene of ``cfg`` (its cameras as frusta in the 3D view, the first test picture in the panes);
        forgets any run. Returns the 3D view's items as (key, text, palette index) rows for the objects list."""
        from fieldstudio.data.nerf_scenes import read_scene

        scene = read_scene(cfg.input)
        self.cfg, self.cams = cfg, {s: c for s, c in scene.splits.items() if c}
        centre, half = scene.box()
        self.centre, self.half = np.asarray(centre, np.float64), float(half)
        train = self.cams["train"]
        up = np.mean([c.c2w[:3, 1] for c in train], axis=0)
        self.up = up / max(np.linalg.norm(up), 1e-12)
        a = np.cross(self.up, [1.0, 0.0, 0.0] if abs(self.up[0]) < 0.9 else [0.0, 1.0, 0.0])
        a /= np.linalg.norm(a)
        self.axes = (a, np.cross(self.up, a))
        everyone = [c for cams in self.cams.values() for c in cams]
        eyes = np.array([c.c2w[:3, 3] for c in everyone])
        self.radius = float(np.linalg.norm(eyes - self.centre, axis=1).mean())
        self.run_dir, self.live, self._loaded, self._pictures = None, False, None, {}
        self.free, self.free_cam = False, None
        self.free_button.blockSignals(True)
        self.free_button.setChecked(False)
        self.free_button.blockSignals(False)
        self.split.blockSignals(True)
        self.split.clear()
        for name in sorted(self.cams, key=lambda s: ("test", "val", "train").index(s)
                           if s in ("test", "val", "train") else 3):
            self.split.addItem(f"{name} ({len(self.cams[name])})", name)
        self.split.setCurrentIndex(0)
        self.split.blockSignals(False)
        self._split_changed()
        rows = self.draw_cameras()
        lo = np.minimum(eyes.min(axis=0), self.centre - self.half)
        hi = np.maximum(eyes.max(axis=0), self.centre + self.half)
        self.view3d.frame(np.array([lo, hi]))
        self._set_exportable()
        return rows

    def draw_cameras(self) -> list[tuple[str, str, int]]:
        depth = FRUSTUM_SHARE * self.radius
        rows = []
        for split, index in (("train", TRAIN_COLOUR), ("test", TEST_COLOUR), ("val", TEST_COLOUR)):
            if split in self.cams and (split != "val" or "test" not in self.cams):
                key = f"cameras: {split}"
                show_lines(self.view3d, key, frustum_segments(self.cams[split], depth), index)
                rows.append((key, f"{split} cameras ({len(self.cams[split])})", index))
        show_lines(self.view3d, "scene box", box_segments(self.centre, self.half), BOX_COLOUR, width=1.0)
        rows.append(("scene box", "scene box (what the field covers)", BOX_COLOUR))
        self._draw_picked()
        return rows

    def _draw_picked(self) -> None:
        cam = self.free_cam if self.free else self.camera()
        if cam is None:
            self.view3d.remove("camera: shown")
            return
        show_lines(self.view3d, "camera: shown", frustum_segments([cam], 1.6 * FRUSTUM_SHARE * self.radius),
                   PICKED_COLOUR, width=3.0)

    def current_split(self) -> str:
        return self.split.currentData() or "test"

    def picked(self) -> int:
        """The picked camera's place in its split (the spin box counts from 1)."""
        return self.index.value() - 1

    def camera(self):
        """The picked scene camera (as stored), or None."""
        cams = self.cams.get(self.current_split()) or []
        return cams[min(self.picked(), len(cams) - 1)] if cams else None

    def _split_changed(self, *_) -> None:
        n = len(self.cams.get(self.current_split(), []))
        self.index.blockSignals(True)
        self.index.setRange(1, max(1, n))
        self.index.setSuffix(f" / {n}")
        self.index.blockSignals(False)
        self._camera_changed()

    def pick(self, split: str, index: int) -> None:
        """Show camera ``index`` of ``split`` (leaves the free view)."""
        self.split.setCurrentIndex(max(0, self.split.findData(split)))
        self.index.setValue(index + 1)
        self._camera_changed()

    def _camera_changed(self) -> None:
        if self.cfg is None:
            return
        if self.free:
            self.free_button.setChecked(False)  # calls back here
            return
        self.shown_side = 0
        self._draw_picked()
        self._show_picture()
        self.want()

    def _show_picture(self) -> None:
        """The picked camera's picture in the first pane at once (read here: one small file)."""
        from fieldstudio.config import background_colour
        from fieldstudio.data.nerf_scenes import load_picture
        from fieldstudio.tasks.nerf import preview_camera

        key = (self.current_split(), self.picked())
        cam = self.camera()
        if cam is None:
            return
        if key not in self._pictures:
            try:
                shown, factor = preview_camera(self.cfg, None, *key, VIEW_SIDE)
                background = background_colour(self.cfg.nerf.background) or (1.0, 1.0, 1.0)
                self._pictures[key] = load_picture(cam, factor, background)[:shown.height, :shown.width]
            except Exception as err:  # a picture that cannot be read: said once, the render still shows
                self.note.emit(f"{cam.path}: {err}", 8_000)
                return
        self._set_image(0, self._pictures[key], (cam.width, cam.height))
        self.captions[0].setText(f"picture {cam.name} ({self.current_split()} {key[1] + 1}/"
                                 f"{len(self.cams[key[0]])})")
        if self.run_dir is None and not self.live:
            for i in (1, 2):
                self.items[i].clear()
            self.captions[1].setText("render: press Fit")
            self.captions[2].setText("error")
            self.psnr_label.setText("")

    def _set_image(self, col: int, pixels: np.ndarray, full: tuple[int, int]) -> None:
        """An image in pane ``col``, stretched over the camera's full picture area (so that coarse and fine renders
        cover the same place)."""
        item = self.items[col]
        item.setImage(pixels if pixels.dtype == np.uint8 else to_display(pixels), autoLevels=False, levels=(0, 255))
        rect = QRectF(0, 0, *full)
        item.setRect(rect)
        if getattr(item, "full", None) != full:
            item.full = full
            self.boxes[col].setRange(rect, padding=0.02)

    # -------------------------------------------------------------------------------------------- free camera
    def _free_toggled(self, on: bool) -> None:
        if on:
            cam = self.camera()
            self.start_free(cam.c2w[:3, 3] if cam is not None else None)
        else:
            self.free, self.free_cam = False, None
            self._camera_changed()

    def start_free(self, position=None) -> None:
        """Orbit a camera of one's own, starting at ``position`` (default: at the cameras' mean distance, 30 degrees
        up)."""
        a, b = self.axes
        if position is None:
            offset = self.radius * (math.cos(0.5) * a + math.sin(0.5) * self.up)
        else:
            offset = np.asarray(position, np.float64) - self.centre
        self.distance = max(float(np.linalg.norm(offset)), 1e-6)
        self.pitch = math.asin(max(-1.0, min(1.0, float(offset @ self.up) / self.distance)))
        self.yaw = math.atan2(float(offset @ b), float(offset @ a))
        self.free = True
        if not self.free_button.isChecked():
            self.free_button.blockSignals(True)
            self.free_button.setChecked(True)
            self.free_button.blockSignals(False)
        self._free_moved()

    def orbit(self, dx: float, dy: float) -> None:
        """Drag on the render pane: turn the free camera around the scene's centre (entering the free view from the
        camera shown)."""
        if self.cfg is None:
            return
        if not self.free:
            cam = self.camera()
            self.start_free(cam.c2w[:3, 3] if cam is not None else None)
        self.yaw -= dx * RADIANS_PER_PIXEL
        self.pitch = max(-MAX_PITCH, min(MAX_PITCH, self.pitch + dy * RADIANS_PER_PIXEL))
        self._free_moved()

    def zoom(self, notches: float) -> None:
        if self.cfg is None or not self.free:
            return
        self.distance = float(np.clip(self.distance * WHEEL_STEP ** notches, 0.2 * self.half, 20 * self.radius))
        self._free_moved()

    def free_camera(self):
        """The free camera: a look-at pose from yaw, pitch and distance; the first training camera's intrinsics
        scaled to ``FREE_SIDES[-1]`` pixels along its longer side."""
        from fieldstudio.data.nerf_scenes import Camera
        from fieldstudio.tasks.nerf import look_at

        a, b = self.axes
        direction = math.cos(self.pitch) * (math.cos(self.yaw) * a + math.sin(self.yaw) * b) + \
            math.sin(self.pitch) * self.up
        base = self.cams["train"][0]
        s = FREE_SIDES[-1] / max(base.width, base.height)
        return Camera("free view", None, look_at(self.centre + self.distance * direction, self.centre, self.up),
                      max(1, round(base.width * s)), max(1, round(base.height * s)), base.fx * s, base.fy * s,
                      base.cx * s, base.cy * s)

    def _free_moved(self) -> None:
        self.free_cam = self.free_camera()
        self.shown_side = 0
        self._draw_picked()
        self.items[0].clear()
        self.captions[0].setText("free view: no picture from here")
        self.want()

    # -------------------------------------------------------------------------------------------- renders
    def target(self) -> tuple:
        return ("free", id(self.free_cam)) if self.free else ("camera", self.current_split(), self.picked())

    @staticmethod
    def key_of(options: dict) -> tuple:
        """What a render shows: a free camera (by identity: each move makes a new one) or a scene camera."""
        return ("free", id(options["camera"])) if options.get("camera") is not None else \
            ("camera", options["split"], options["index"])

    def sides(self) -> tuple[int, ...]:
        return FREE_SIDES if self.free else (VIEW_SIDE,)

    def preview_options(self) -> list[dict]:
        """What to render next (called in the window's thread, by the worker too): the next sharper size of the
        target, or (everything shown) its final size again, the field having changed meanwhile."""
        if self.cfg is None:
            return []
        sides = self.sides()
        sharper = [s for s in sides if s > self.shown_side] if self.shown_key == self.target() else list(sides)
        side = sharper[0] if sharper else sides[-1]
        if self.free:
            return [{"camera": self.free_cam, "max_side": side}]
        return [{"split": self.current_split(), "index": self.picked(), "max_side": side}]

    def needs_render(self) -> bool:
        return self.shown_key != self.target() or self.shown_side < self.sides()[-1]

    def want(self) -> None:
        """Ask for the next render soon (once, however often it is asked meanwhile)."""
        if self.live or self.renderable():
            self.request_timer.start()

    def renderable(self) -> bool:
        return self.run_dir is not None and (self.run_dir / "checkpoint.pt").exists()

    def _request(self) -> None:
        if self.cfg is None:
            return
        if self.live:
            self.view_wanted.emit()
        elif self.renderable():
            self._render_from_run()

    def _render_from_run(self) -> None:
        """Render the next view from the run's checkpoint in a thread (loaded once, with its occupancy grid)."""
        if self._busy:
            return  # asked again when this one is shown
        options = self.preview_options()[0]
        run_dir, loaded = self.run_dir, self._loaded
        self._busy = True

        def work():
            result, error = None, ""
            try:
                import torch

                from fieldstudio.run import load_run, preview_view
                from fieldstudio.tasks.nerf import Renderer

                nonlocal loaded
                with active(self._control), torch.no_grad():
                    if loaded is None or loaded[0] != run_dir:
                        cfg, model, frame = load_run(run_dir)
                        loaded = (run_dir, cfg, model, frame, Renderer(model, cfg, frame))
                    _, cfg, model, frame, renderer = loaded
                    # the renderer lends its occupancy grid and RBF neighbours: nothing is rebuilt per view
                    result = preview_view(model, cfg, frame, renderer=renderer, **options)
            except Cancelled:
                return  # the window is closing
            except Exception as err:  # shown in one line
                error = str(err).splitlines()[0] if str(err) else type(err).__name__
            try:
                self._ready.emit(options, result, error, run_dir, loaded)
            except RuntimeError:  # the view is gone
                pass
        self._thread = threading.Thread(target=work, name="fieldstudio-view", daemon=True)
        self._thread.start()

    def _on_ready(self, options, out, error: str, run_dir, loaded) -> None:
        self._busy = False
        if run_dir != self.run_dir:  # made for a run no longer shown
            self.want()
            return
        if loaded is not None and loaded[0] == run_dir:
            self._loaded = loaded
        if out is None:
            self.problem.emit(f"rendering the view failed: {error}")
            return
        if not self.live:
            self.show_result(options, out)

    def close_down(self, timeout: float = 10.0) -> None:
        """Stop rendering and exporting and wait for their threads (the window closes: a thread still inside torch
        at the interpreter's exit aborts the process)."""
        self.request_timer.stop()
        self._control.cancel()
        if self.export_job is not None and not self.export_job.done:
            self.export_job.cancel()
            self.export_job.wait(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def show_previews(self, previews) -> None:
        """[(options, result of job.preview("view", ...)), ...] from the fit's worker."""
        for options, out in previews:
            if out is not None and self.live:
                self.show_result(options, out)

    def show_result(self, options: dict, out: dict) -> None:
        """A render in the panes: the render, its picture and error map when it has one, and its PSNR."""
        from fieldstudio.data.images import error_heatmap
        from fieldstudio.tasks.image import rms_error

        cam = out["camera"]
        key = self.key_of(options)
        current = key == self.target()
        if key[0] == "free" and not self.free or key[0] == "camera" and self.free:
            self.want()
            return  # made for the other mode: nothing of it belongs in the panes now
        full_cam = options["camera"] if key[0] == "free" else self.cams[key[1]][key[2]]
        full = (full_cam.width, full_cam.height)
        rgb, reference = out["rgb"], out.get("reference")
        h, w = rgb.shape[:2]
        self._set_image(1, rgb, full)
        when = f", step {self.step}" if self.live else ""
        self.captions[1].setText(f"render {w} × {h}{when}")
        psnr = None
        if reference is not None:
            self._set_image(0, reference, full)
            psnr = psnr_of(rgb, reference)
            heat, scale = error_heatmap(rms_error(rgb, reference))
            self._set_image(2, heat, full)
            self.captions[0].setText(f"picture {cam.name} ({key[1]} {key[2] + 1}/{len(self.cams[key[1]])})")
            self.captions[2].setText(f"error |render − picture|, white ≥ {scale:.3g}")
            self.psnr_label.setText(f"PSNR {psnr:.2f} dB")
        else:  # a free camera: its depth instead of an error map
            from fieldstudio.tasks.nerf import depth_picture

            depth = (depth_picture(out)[..., 0] >> 8).astype(np.uint8)
            self._set_image(2, np.repeat(depth[..., None], 3, axis=2), full)
            self.captions[2].setText("depth (near: light; nothing: black)")
            self.psnr_label.setText("free view")
        if current:
            self.shown_side = max(self.shown_side if self.shown_key == key else 0, options["max_side"])
            self.shown_key = key
        self.last = {"options": options, "size": (w, h), "psnr": psnr}
        self.rendered.emit(self.last)
        if self.needs_render():
            self.want()

    # -------------------------------------------------------------------------------------------- runs
    def on_event(self, e) -> None:
        if e.kind == "step":
            self.step = e.step

    def start_run(self, run_dir: Path) -> None:
        """A fit into ``run_dir`` begins: its worker renders from now on."""
        self.run_dir, self.live, self.step, self._loaded = Path(run_dir), True, 0, None
        self.shown_side = 0
        self.captions[1].setText("render: waiting for the field")
        self._set_exportable()

    def stop_run(self) -> None:
        """The fit ended: renders come from its checkpoint (when it left one)."""
        self.live = False
        self._set_exportable()
        if self.needs_render():
            self.want()

    def show_run(self, run_dir: Path) -> dict:
        """A finished (or resumable) run: browse its views; returns its metrics."""
        self.run_dir, self.live = Path(run_dir), False
        self._loaded = None  # a fit into the same folder made a new checkpoint
        self.shown_side = 0
        if self.cfg is None:
            self.problem.emit(f"the scene of {run_dir} is not open (moved or deleted?): its cameras and pictures "
                              "are needed to browse the views")
        else:
            self.want()
        self._set_exportable()
        return self.metrics(run_dir)

    metrics = staticmethod(run_metrics)

    # -------------------------------------------------------------------------------------------- export
    def finished_run(self) -> Path | None:
        run = self.run_dir
        if self.live or run is None:
            return None
        return run if (run / "metrics.json").exists() and (run / "checkpoint.pt").exists() else None

    def _set_exportable(self) -> None:
        ok = self.finished_run() is not None
        self.views_button.setEnabled(ok)
        self.orbit_button.setEnabled(ok)
        self.export_ready.emit(ok)

    def export_views_dialog(self) -> None:
        run = self.finished_run()
        if run is None:
            self.problem.emit(NO_RUN)
            return
        folder = QFileDialog.getExistingDirectory(self, "Render the test views into a folder", str(run))
        if folder:
            self.export_views(Path(folder))

    def export_orbit_dialog(self) -> None:
        run = self.finished_run()
        if run is None:
            self.problem.emit(NO_RUN)
            return
        path, _ = QFileDialog.getSaveFileName(self, "Render an orbit video", str(run / "orbit.mp4"), "Video (*.mp4)")
        if path:
            self.export_orbit(Path(path if path.lower().endswith((".mp4", ".gif")) else path + ".mp4"))

    def export_views(self, folder: Path) -> bool:
        """Render the run's test views (train when it has none) into ``folder`` in a thread: PNGs and
        metrics.json; the mean PSNR in the status bar."""
        split = next((s for s in ("test", "val", "train") if s in self.cams), "test")
        return self._export(Path(folder), f"rendering the {split} views into {Path(folder).name} ...", views=split)

    def export_orbit(self, path: Path, frames: int = ORBIT_FRAMES) -> bool:
        """Render ``frames`` views around the scene into the video ``path`` (.mp4) in a thread."""
        return self._export(Path(path), f"rendering a {frames}-frame orbit into {Path(path).name} ...", orbit=frames)

    def _export(self, path: Path, message: str, **options) -> bool:
        
        return start_export(self, self.finished_run(), path, message, NO_RUN, **options)

    def _on_exported(self, result, error: str) -> None:
        if result is None:
            self.problem.emit(error.splitlines()[0] if error else "the export failed")
            return
        if "video" in result:
            self.note.emit(f"wrote {result['video']} ({result['frames']} frames, {result['width']} × "
                           f"{result['height']})", 10_000)
        else:
            psnr = f", mean PSNR {result['psnr']:.2f} dB" if result.get("psnr") is not None else ""
            self.note.emit(f"wrote {result['views']} views into {result['folder']}{psnr}", 10_000)
        self.exported.emit(result)
