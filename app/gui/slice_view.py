"""slice_view.py
=============
The 2D slice viewer of label maps: axial / sagittal / coronal slices (as the array's axes closest to those
directions), a slider to scroll, labels in their objects' colours, true pixel aspect from the voxel spacing, and the
slices a fit would keep (``--every`` / ``--offset``) drawn as lines across the other views, or named on the view that
shows them.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from fieldstudio.app.gui.view3d import colour

DIRECTIONS = ("axial", "coronal", "sagittal")


class SliceView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.volume = None
        self.labels: list[int] = []
        self.kept_axis: int | None = None
        self.kept: list[int] = []
        self.direction = QComboBox()
        self.direction.addItems(DIRECTIONS)
        self.slider = QSlider(Qt.Horizontal)
        self.where = QLabel()
        self.plot = pg.PlotWidget(background=(20, 22, 25))
        self.plot.setAspectLocked(True)
        self.plot.invertY(True)
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.image = pg.ImageItem()
        self.plot.addItem(self.image)
        self.lines: list[pg.InfiniteLine] = []
        top = QHBoxLayout()
        top.addWidget(self.direction)
        top.addWidget(self.slider, 1)
        top.addWidget(self.where)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.plot, 1)
        self.direction.currentIndexChanged.connect(self._direction_changed)
        self.slider.valueChanged.connect(self._draw)

    @property
    def axis(self) -> int:
        """The array axis the current direction looks along."""
        from fieldstudio.data.medical_planes import axis_for

        return axis_for(self.volume, self.direction.currentText())

    def set_volume(self, volume, labels: list[int]) -> None:
        self.volume, self.labels = volume, labels
        self._direction_changed()

    def set_kept(self, axis: int | None, indices) -> None:
        """The slices along ``axis`` that a fit keeps as planes (None: none to show, e.g. plane families)."""
        self.kept_axis, self.kept = axis, sorted(indices)
        self._draw()

    def _direction_changed(self) -> None:
        if self.volume is None:
            return
        n = self.volume.data.shape[self.axis]
        self.slider.blockSignals(True)
        self.slider.setRange(0, n - 1)
        self.slider.setValue(n // 2)
        self.slider.blockSignals(False)
        self._draw()
        self.plot.autoRange()

    def _draw(self) -> None:
        if self.volume is None:
            return
        axis, index = self.axis, self.slider.value()
        others = [a for a in range(3) if a != axis]
        plane = np.take(self.volume.data, index, axis=axis)
        rgba = np.zeros(plane.shape + (4,), np.uint8)
        for i, lab in enumerate(self.labels):
            r, g, b, _ = colour(i)
            rgba[plane == lab] = (int(255 * r), int(255 * g), int(255 * b), 255)
        rgba[plane == 0] = (45, 48, 54, 255)
        spacing = self.volume.spacing
        self.image.setImage(rgba, autoLevels=False)
        self.image.setRect(QRectF(0, 0, plane.shape[0] * spacing[others[0]], plane.shape[1] * spacing[others[1]]))
        for line in self.lines:
            self.plot.removeItem(line)
        self.lines = []
        kept_here = ""
        if self.kept_axis is not None:
            if self.kept_axis == axis:
                kept_here = "  (kept as a plane)" if index in self.kept else "  (not kept)"
            else:
                vertical = self.kept_axis == others[0]  # image axis 0 runs horizontally
                step = spacing[self.kept_axis]
                for k in self.kept:
                    line = pg.InfiniteLine(pos=(k + 0.5) * step, angle=90 if vertical else 0,
                                           pen=pg.mkPen((240, 240, 240, 110), width=1))
                    self.plot.addItem(line)
                    self.lines.append(line)
        self.where.setText(f"{index + 1} / {self.volume.data.shape[axis]}{kept_here}")
