"""slice_view.py
=============
The 2D slice viewer of label maps: axial / sagittal / coronal slices (as the array's axes closest to those
directions), a slider to scroll, labels in their objects' colours, true pixel aspect from the voxel spacing.

On top of the labels, all optional: a CT or MR image underneath (grey, window/level presets, right-drag changes
them; labels turn semi-transparent), meshes cut by the slice's plane, a live field's inside and 0-level outline
on the shown slice, and the planes a fit keeps (any orientation) drawn where they cross the slice.

Image coordinates: voxel index i along the first in-plane array axis is at x = (i + 0.5) * spacing (mm), the
second likewise along y; everything drawn is mapped to them through the label volume's inverse affine.
"""

from __future__ import annotations


import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from fieldstudio.app.gui.view3d import colour
from fieldstudio.data.medical_planes import index_along

DIRECTIONS = ("axial", "coronal", "sagittal")
PRESETS = {"auto (1-99 %)": None, "CT soft tissue W400 L40": (400.0, 40.0), "CT bone W1800 L400": (1800.0, 400.0),
           "CT lung W1500 L-600": (1500.0, -600.0), "brain W80 L40": (80.0, 40.0)}
EMPTY = (45, 48, 54)  # unlabelled voxels when there is no background image
LIVE = (255, 215, 70)  # the live field's inside tint and outline
LIVE_ALPHA = 0.35
DRAG_STEPS = 500.0  # a right-drag across this many pixels changes window/level by the image's 1-99 % range


class _Image(pg.ImageItem):
    """The slice image; right-button drags go to ``on_drag(dx, dy, start)`` (screen pixels since the press)."""

    def __init__(self, on_drag):
        super().__init__()
        self.on_drag = on_drag

    def mouseDragEvent(self, ev):
        if ev.button() != Qt.MouseButton.RightButton:
            return super().mouseDragEvent(ev)
        ev.accept()  # taken here, so the view box does not zoom
        delta = ev.screenPos() - ev.buttonDownScreenPos()
        self.on_drag(delta.x(), delta.y(), ev.isStart())


def _clip_line(a: float, b: float, e: float, width: float, height: float) -> np.ndarray | None:
    """The part of the line a x + b y + e = 0 inside [0, width] x [0, height], as (2, 2) end points, or None."""
    norm = a * a + b * b
    p0 = -e * np.array([a, b]) / norm
    direction = np.array([-b, a]) / np.sqrt(norm)
    lo, hi = -np.inf, np.inf
    for k, size in enumerate((width, height)):
        if abs(direction[k]) < 1e-12:
            if not 0 <= p0[k] <= size:
                return None
            continue
        t0, t1 = sorted(((0 - p0[k]) / direction[k], (size - p0[k]) / direction[k]))
        lo, hi = max(lo, t0), min(hi, t1)
    return None if lo >= hi else np.array([p0 + lo * direction, p0 + hi * direction])


class SliceView(QWidget):
    slice_changed = Signal()  # the shown slice (direction or index) changed: live values are dropped

    def __init__(self, parent=None):
        super().__init__(parent)
        self.volume = None
        self.labels: list[int] = []
        self.background = None
        self.kept_planes: list[tuple[np.ndarray, float]] = []
        self.lines: list[np.ndarray] = []  # kept planes' lines on the shown slice, (2, 2) image coordinates each
        self.meshes: dict = {}  # name -> (trimesh, colour index)
        self.mesh_visible: dict[str, bool] = {}
        self.mesh_segments: dict[str, np.ndarray] = {}  # name -> (m, 2, 2) image coordinates on the shown slice
        self.live: tuple[tuple[int, int], np.ndarray] | None = None  # (slice, values (H, W))
        self.live_outline: list[np.ndarray] = []  # 0-level lines, (m, 2) image coordinates each
        self._shown: tuple[int, int] | None = None
        self._heights: dict = {}  # (mesh name, axis) -> vertex heights along the slice normal, face min, face max
        self._background_cache: tuple | None = None  # (slice, resampled values)
        self._auto = (1.0, 0.5)  # window, level from the background's 1-99 % range
        self._drag_from = (1.0, 0.5)

        self.direction = QComboBox()
        self.direction.addItems(DIRECTIONS)
        self.slider = QSlider(Qt.Horizontal)
        self.where = QLabel()
        self.preset = QComboBox()
        self.preset.addItems(PRESETS)
        self.window_box, self.level_box = QDoubleSpinBox(), QDoubleSpinBox()
        for box, low in ((self.window_box, 0.01), (self.level_box, -1e6)):
            box.setDecimals(2)
            box.setRange(low, 1e6)
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.setToolTip("label opacity over the image")
        self.plot = pg.PlotWidget(background=(20, 22, 25))
        self.plot.setAspectLocked(True)
        self.plot.invertY(True)
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.image = _Image(self._drag_window_level)
        self.image.setToolTip("right-drag: window (left/right) and level (up/down)")
        self.kept_item = pg.PlotDataItem(pen=pg.mkPen((240, 240, 240, 110), width=1), connect="pairs")
        self.live_item = pg.PlotDataItem(pen=pg.mkPen(LIVE, width=2), connect="finite")
        self.mesh_items: dict[str, pg.PlotDataItem] = {}
        for z, item in enumerate((self.image, self.kept_item, self.live_item)):  # meshes on top (3)
            item.setZValue(z)
            self.plot.addItem(item)

        top = QHBoxLayout()
        top.addWidget(self.direction)
        top.addWidget(self.slider, 1)
        top.addWidget(self.where)
        self.controls = QWidget()  # window/level and label opacity: only with a background image
        row = QHBoxLayout(self.controls)
        row.setContentsMargins(0, 0, 0, 0)
        for widget in (self.preset, QLabel("W"), self.window_box, QLabel("L"), self.level_box, QLabel("labels"),
                       self.opacity):
            row.addWidget(widget)
        self.opacity.setMinimumWidth(80)
        self.opacity.setToolTip("opacity of the labels over the image")
        self.controls.hide()
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.controls)
        layout.addWidget(self.plot, 1)
        # The signals' values are not needed: each slot reads the widgets.
        self.direction.currentIndexChanged.connect(lambda _: self._direction_changed())
        self.slider.valueChanged.connect(lambda _: self._draw())
        self.preset.currentIndexChanged.connect(lambda _: self._apply_preset())
        for box in (self.window_box, self.level_box, self.opacity):
            box.valueChanged.connect(lambda _: self._show_image())

    # ------------------------------------------------------------------------------------------------ geometry
    @property
    def axis(self) -> int:
        """The array axis the current direction looks along."""
        from fieldstudio.data.medical_planes import axis_for

        return axis_for(self.volume, self.direction.currentText())

    @property
    def shown_slice(self) -> tuple[int, int]:
        """(array axis, index) of the slice shown."""
        return self.axis, self.slider.value()

    def _others(self) -> list[int]:
        return [a for a in range(3) if a != self.axis]

    def _slice_ijk(self) -> np.ndarray:
        """Voxel indices (H*W, 3) of the shown slice, row-major in the image's (axis 0, axis 1) order."""
        axis, index = self.shown_slice
        o0, o1 = self._others()
        n0, n1 = self.volume.data.shape[o0], self.volume.data.shape[o1]
        ijk = np.empty((n0, n1, 3))
        ijk[..., o0], ijk[..., o1], ijk[..., axis] = np.arange(n0)[:, None], np.arange(n1)[None, :], index
        return ijk.reshape(-1, 3)

    def slice_points_world(self) -> np.ndarray:
        """World coordinates (H*W, 3) of the shown slice's voxel centres, row-major in the image's axes."""
        return self.volume.to_world(self._slice_ijk())

    def _to_image(self, world: np.ndarray) -> np.ndarray:
        """World points (m, 3) -> image coordinates (m, 2) of the shown slice (projected along its axis)."""
        inv = np.linalg.inv(self.volume.affine)
        ijk = np.asarray(world, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]
        o0, o1 = self._others()
        s = self.volume.spacing
        return np.c_[(ijk[:, o0] + 0.5) * s[o0], (ijk[:, o1] + 0.5) * s[o1]]

    # ------------------------------------------------------------------------------------------------ inputs
    def set_volume(self, volume, labels: list[int]) -> None:
        self.volume, self.labels = volume, labels
        self.live, self._shown, self._heights, self._background_cache = None, None, {}, None
        self._direction_changed()

    def set_background(self, image) -> None:
        """A CT / MR :class:`IntensityVolume` shown grey under the labels (any grid, RAS or LPS), or None."""
        self.background, self._background_cache = image, None
        self.controls.setVisible(image is not None)
        if image is not None:
            sample = image.data.ravel()[::max(1, image.data.size // 1_000_000)]  # percentiles of a sample: fast
            p1, p99 = (float(v) for v in np.percentile(sample, [1, 99]))
            self._auto = (max(p99 - p1, 0.01), (p1 + p99) / 2)
            # Air at about -1000 HU says CT: start at the soft-tissue window, as CT viewers do (the 1-99 % range of
            # a CT, air to bone, leaves organs one flat grey).
            self.preset.blockSignals(True)
            self.preset.setCurrentText("CT soft tissue W400 L40" if p1 < -500 else "auto (1-99 %)")
            self.preset.blockSignals(False)
            self._apply_preset()  # also redraws
        else:
            self._show_image()

    def set_kept_planes(self, planes) -> None:
        """World planes (normal (3,), offset: n . x + offset = 0) a fit keeps, e.g. from
        :func:`~fieldstudio.data.medical_planes.kept_planes`; drawn where they cross the shown slice."""
        self.kept_planes = [(np.asarray(n, dtype=np.float64), float(d)) for n, d in planes]
        self._draw_kept()

    def set_kept(self, axis: int | None, indices) -> None:
        """Compatibility: slices ``indices`` along array ``axis`` (None: none), as planes."""
        from fieldstudio.data.medical_planes import slice_plane

        if self.volume is not None:
            self.set_kept_planes([] if axis is None else [slice_plane(self.volume, axis, i) for i in indices])

    def set_meshes(self, meshes: dict) -> None:
        """name -> (trimesh in the label volume's world frame, colour index); {} clears them."""
        for item in self.mesh_items.values():
            self.plot.removeItem(item)
        self.meshes, self.mesh_items, self.mesh_segments, self._heights = dict(meshes), {}, {}, {}
        self.mesh_visible = {name: self.mesh_visible.get(name, True) for name in meshes}
        for name, (_, index) in meshes.items():
            r, g, b, _ = colour(index)
            item = pg.PlotDataItem(pen=pg.mkPen((int(255 * r), int(255 * g), int(255 * b)), width=2),
                                   connect="pairs")
            item.setZValue(3)
            self.plot.addItem(item)
            self.mesh_items[name] = item
        self._draw_meshes()

    def set_mesh_visible(self, name: str, visible: bool) -> None:
        if name in self.meshes:
            self.mesh_visible[name] = bool(visible)
            self._draw_meshes()

    def set_live(self, values: np.ndarray | None, at: tuple[int, int] | None = None) -> None:
        """A field's values (negative inside) at :meth:`slice_points_world`, or None to clear. ``at``: the
        :attr:`shown_slice` the points were taken on; values for a slice no longer shown are ignored."""
        if values is None:
            self.live = None
        elif self.volume is not None:
            key = self.shown_slice
            if at is not None and tuple(at) != key:
                return
            o0, o1 = self._others()
            shape = (self.volume.data.shape[o0], self.volume.data.shape[o1])
            values = np.asarray(values, dtype=np.float32)
            if values.size != shape[0] * shape[1]:
                raise ValueError(f"set_live: {values.size} values for a slice of {shape[0]} x {shape[1]} points")
            self.live = (key, values.reshape(shape))
        self._show_image()
        self._draw_live()

    # ------------------------------------------------------------------------------------------------ window/level
    def _apply_preset(self) -> None:
        w, l = PRESETS[self.preset.currentText()] or self._auto
        self._set_window_level(w, l)

    def _set_window_level(self, w: float, l: float) -> None:
        for box, value in ((self.window_box, w), (self.level_box, l)):
            box.blockSignals(True)  # one redraw for both
            box.setValue(value)
            box.blockSignals(False)
        self._show_image()

    def _drag_window_level(self, dx: float, dy: float, start: bool) -> None:
        """Right-drag as in 3D Slicer: right widens the window, down raises the level (darker)."""
        if self.background is None:
            return
        if start:
            self._drag_from = (self.window_box.value(), self.level_box.value())
        step = self._auto[0] / DRAG_STEPS
        self._set_window_level(max(0.01, self._drag_from[0] + dx * step), self._drag_from[1] + dy * step)

    # ------------------------------------------------------------------------------------------------ drawing
    def _direction_changed(self) -> None:
        if self.volume is None:
            return
        n = self.volume.data.shape[self.axis]
        self.slider.blockSignals(True)  # one redraw, not one per range and value change
        self.slider.setRange(0, n - 1)
        self.slider.setValue(n // 2)
        self.slider.blockSignals(False)
        self._orient()
        self._draw()
        self.plot.getViewBox().autoRange(items=[self.image])  # the slice, not meshes sticking out of it

    def _orient(self) -> None:
        """Radiological display, as CT viewers and 3D Slicer show slices: the patient's right on the screen's left
        (axial, coronal), anterior on the left (sagittal), anterior (axial) or superior (coronal, sagittal) up.
        The image's axes are the array's; only the view is mirrored, so everything drawn on it follows."""
        o0, o1 = self._others()
        to_ras = np.array([-1.0, -1.0, 1.0]) if self.volume.world == "LPS" else np.ones(3)
        across = to_ras * self.volume.affine[:3, o0]  # world direction of the image's horizontal axis (RAS)
        upward = to_ras * self.volume.affine[:3, o1]  # ... and of its vertical axis
        direction = self.direction.currentText()
        screen_right = np.array([0.0, -1.0, 0.0]) if direction == "sagittal" else np.array([-1.0, 0.0, 0.0])
        screen_up = np.array([0.0, 1.0, 0.0]) if direction == "axial" else np.array([0.0, 0.0, 1.0])
        self.plot.invertX(bool(across @ screen_right < 0))
        self.plot.invertY(bool(upward @ screen_up < 0))  # pyqtgraph's y grows upwards unless inverted

    def _draw(self) -> None:
        if self.volume is None:
            return
        key = self.shown_slice
        if self.live is not None and self.live[0] != key:
            self.live = None  # values of another slice
        self._show_image()
        self._draw_kept()
        self._draw_meshes()
        self._draw_live()
        if key != self._shown:
            self._shown = key
            self.slice_changed.emit()

    def _background_slice(self) -> np.ndarray:
        """The background's values at the shown slice's voxel centres (nearest voxel; NaN outside it)."""
        key = self.shown_slice
        if self._background_cache is None or self._background_cache[0] != key:
            bg = self.background
            flip = np.diag([-1.0, -1.0, 1.0, 1.0]) if bg.world != self.volume.world else np.eye(4)  # RAS <-> LPS
            m = np.linalg.inv(bg.affine) @ flip @ self.volume.affine  # label voxel -> background voxel
            ijk = np.floor(self._slice_ijk() @ m[:3, :3].T + m[:3, 3] + 0.5).astype(np.int64)
            ok = ((ijk >= 0) & (ijk < bg.data.shape)).all(axis=1)
            values = np.full(len(ijk), np.nan, np.float32)
            values[ok] = bg.data[ijk[ok, 0], ijk[ok, 1], ijk[ok, 2]]
            o0, o1 = self._others()
            self._background_cache = (key, values.reshape(self.volume.data.shape[o0], self.volume.data.shape[o1]))
        return self._background_cache[1]

    def _show_image(self) -> None:
        """The slice's pixels: labels (over the grey background, translucent), then the live field's tint."""
        if self.volume is None:
            return
        axis, index = self.shown_slice
        o0, o1 = self._others()
        plane = index_along(self.volume.data, index, axis)
        labelled = np.isin(plane, self.labels)
        paint = np.zeros(plane.shape + (3,), np.float32)
        for i, lab in enumerate(self.labels):
            paint[plane == lab] = np.array(colour(i)[:3]) * 255
        if self.background is None:
            rgb = np.where(labelled[..., None], paint, np.array(EMPTY, np.float32))
        else:
            w, l = self.window_box.value(), self.level_box.value()
            values = self._background_slice()
            grey = np.nan_to_num(np.clip((values - (l - w / 2)) / w, 0, 1) * 255, nan=0.0)
            alpha = (self.opacity.value() / 100) * labelled[..., None]
            rgb = grey[..., None] * (1 - alpha) + paint * alpha
        if self.live is not None:
            inside = (self.live[1] < 0)[..., None]
            rgb = np.where(inside, rgb * (1 - LIVE_ALPHA) + np.array(LIVE) * LIVE_ALPHA, rgb)
        rgba = np.full(plane.shape + (4,), 255, np.uint8)
        rgba[..., :3] = np.clip(np.round(rgb), 0, 255)
        s = self.volume.spacing
        self.image.setImage(rgba, autoLevels=False)
        self.image.setRect(QRectF(0, 0, plane.shape[0] * s[o0], plane.shape[1] * s[o1]))

    def _draw_kept(self) -> None:
        """Kept planes' lines across the shown slice; the position text says whether it is kept itself."""
        if self.volume is None:
            return
        axis, index = self.shown_slice
        o0, o1 = self._others()
        shape, s = self.volume.data.shape, self.volume.spacing
        a3, t = self.volume.affine[:3, :3], self.volume.affine[:3, 3]
        self.lines, parallel, here = [], False, False
        for n, d in self.kept_planes:
            c, c0 = a3.T @ n, float(n @ t + d)  # the plane in voxel indices: c . ijk + c0 = 0
            if max(abs(c[o0]), abs(c[o1])) <= 1e-6 * np.abs(c).max():
                parallel = True
                here |= abs(c[axis] * index + c0) / abs(c[axis]) < 0.5  # within half a voxel
                continue
            # i = x / s0 - 0.5 and j = y / s1 - 0.5 on this slice: a line in image coordinates
            e = c[axis] * index + c0 - 0.5 * (c[o0] + c[o1])
            seg = _clip_line(c[o0] / s[o0], c[o1] / s[o1], e, shape[o0] * s[o0], shape[o1] * s[o1])
            if seg is not None:
                self.lines.append(seg)
        pts = np.array(self.lines).reshape(-1, 2)
        self.kept_item.setData(pts[:, 0], pts[:, 1])
        kept_here = "  (kept as a plane)" if here else "  (not kept)" if parallel else ""
        self.where.setText(f"{index + 1} / {shape[axis]}{kept_here}")

    def _draw_meshes(self) -> None:
        """Each visible mesh cut by the shown slice's world plane, as segments."""
        import trimesh

        from fieldstudio.data.medical_planes import slice_plane

        if self.volume is None:
            return
        axis, index = self.shown_slice
        normal, d = slice_plane(self.volume, axis, index)
        for name, (mesh, _) in self.meshes.items():
            segs = np.zeros((0, 2, 2))
            if self.mesh_visible[name]:
                if (name, axis) not in self._heights:  # once per direction: vertex heights, faces' extents
                    h = np.asarray(mesh.vertices) @ normal
                    hf = h[np.asarray(mesh.faces)]
                    self._heights[name, axis] = (h, hf.min(axis=1), hf.max(axis=1))
                h, low, high = self._heights[name, axis]
                faces = np.flatnonzero((low <= -d) & (high >= -d))  # only faces that reach the plane
                if len(faces):
                    lines = trimesh.intersections.mesh_plane(mesh, normal, -d * normal, local_faces=faces,
                                                             cached_dots=h + d)
                    segs = self._to_image(lines.reshape(-1, 3)).reshape(-1, 2, 2)
            self.mesh_segments[name] = segs
            self.mesh_items[name].setData(segs[..., 0].ravel(), segs[..., 1].ravel())

    def _draw_live(self) -> None:
        """The live field's 0 level on the shown slice (marching squares)."""
        import contourpy

        self.live_outline = []
        if self.live is not None:
            s = self.volume.spacing
            o0, o1 = self._others()
            for line in contourpy.contour_generator(z=self.live[1], line_type="Separate").lines(0.0):
                line = np.asarray(line, dtype=np.float64)  # (x = column = axis 1, y = row = axis 0) indices
                self.live_outline.append(np.c_[(line[:, 1] + 0.5) * s[o0], (line[:, 0] + 0.5) * s[o1]])
        pts = np.concatenate([np.vstack([q, [[np.nan, np.nan]]]) for q in self.live_outline]) \
            if self.live_outline else np.zeros((0, 2))
        self.live_item.setData(pts[:, 0], pts[:, 1])
