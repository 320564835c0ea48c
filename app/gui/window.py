"""window.py
=========
The main window: open an input (or a run folder), see it at once, set up a fit, run it live (pause, resume,
cancel, loss plot, previews), inspect and export the result. A thin face over ``fieldstudio.api``: the run folder
it writes is the CLI's, and "Copy command" gives the CLI line that makes the same run.
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
import time

import numpy as np
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QMainWindow, QMessageBox, QProgressBar, QPushButton, QSplitter, QVBoxLayout, QWidget)

from fieldstudio.errors import FieldStudioError

from fieldstudio.app.gui.collector import MainThreadCollector
from fieldstudio.app.gui.dialogs import PickDialog
from fieldstudio.app.gui.image_view import ImageView
from fieldstudio.app.gui.metrics_table import MetricsTable
from fieldstudio.app.gui.scene_view import SceneView, is_nerf_run
from fieldstudio.app.gui.settings import SettingsPanel
from fieldstudio.app.gui.slice_view import SliceView
from fieldstudio.app.gui.view3d import THREE_QUARTER, ClipControls, View3D, colour
from fieldstudio.app.gui.worker import FitWorker, load_mesh_for_view, run_meshes

STAGE_TITLES = {"prepare": "Preparing", "train": "Training", "mesh": "Meshing", "render": "Rendering",
                "score": "Scoring"}
MAX_LABEL_ROWS = 8  # inputs with more labels get one row for their contours (the results list their objects)
COMPARE_COLOUR = 4  # palette index of a second run's meshes (violet), drawn translucent over the first
MAX_RECENT = 8
NO_LABEL_MAP = "open a label map first; its CT or MR image then goes under the slices"
# Loss plot, progress bar and text redraws while a job runs. Each repaint of the window costs the job's threads on
# a 2-core machine far more than its own time (a window holding an OpenGL view is composed through software
# OpenGL): a label redrawn 10 times a second took 27 % of a training's steps per second, once a second 4 %.
PLOT_EVERY_S = 1.0


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "config.toml").exists() or any(path.glob("*/checkpoint.pt")))


def object_key(text: str) -> str:
    """An event's object ("liver (2/9)") as the object's name ("liver")."""
    return re.sub(r" \(\d+/\d+\)$", "", text)


def stage_title(e) -> str:
    """ "Training liver (2/9)" for an event of that stage and object."""
    return STAGE_TITLES.get(e.stage, e.stage) + (f" {e.object}" if e.object else "")


def planes_key(volume, cfg) -> tuple:
    """What decides the planes a label map is cut on: the volume and the settings' choice of slices."""
    return id(volume), cfg.slices.every, cfg.slices.slice_offset, cfg.slices.families


class MainWindow(QMainWindow):
    fit_ended = Signal(str)  # "finished" | "cancelled" | "failed", after the window has shown the outcome
    _contours_ready = Signal(object, object)  # (choice of planes, CrossSections) traced in a thread

    def __init__(self):
        super().__init__()
        self.setWindowTitle("fieldstudio")
        self.resize(1280, 800)
        self.setAcceptDrops(True)
        self.collector = MainThreadCollector(self)  # no garbage collection in a fit's thread (collector.py)
        self.worker: FitWorker | None = None
        self.run_dir: Path | None = None
        self.compare_dir: Path | None = None  # a second run shown over the first
        self.input_labels: list[int] = []  # the input's labels, in colour order
        self.input_names: dict[int, str] = {}  # their structure names (RTSTRUCT / SEG)
        self.object_rows: dict[str, QListWidgetItem] = {}  # per-object status rows of a running fit
        self.preview_colour = 0  # the colour of the object being fitted
        self.preloaded: dict = {}  # mesh file -> mesh, read by the worker's thread at the end of a fit
        self.losses: list[tuple[int, float]] = []  # (step, loss) of the object being fitted
        self.loss_curves: dict[str, object] = {}  # one curve per object, in its colour
        self._last_plot = 0.0
        self.settings_store = QSettings("fieldstudio", "fieldstudio")
        self.quiet = False  # screenshot runs and tests: errors in the status bar instead of a modal dialog
        from fieldstudio.api import warm_up

        threading.Thread(target=warm_up, name="fieldstudio-warm-up", daemon=True).start()

        self.view = View3D()
        self.slices = SliceView()  # label maps only
        self.slices.hide()
        self.image_view = ImageView()  # pictures: instead of the 3D view and the slices
        self.image_view.hide()
        self.image_view.problem.connect(lambda message: self.error(message))
        self.image_view.note.connect(lambda text, ms: self.statusBar().showMessage(text, ms))
        self.picture_mode = False
        self.scene_view = SceneView(self.view)  # NeRF scenes: under the 3D view, which shows their cameras
        self.scene_view.hide()
        self.scene_view.problem.connect(lambda message: self.error(message))
        self.scene_view.note.connect(lambda text, ms: self.statusBar().showMessage(text, ms))
        self.scene_mode = False
        self.panel = SettingsPanel()
        self.panel.changed.connect(self._update_buttons)
        self.panel.changed.connect(self._update_kept_slices)
        self.contour_timer = QTimer(self)
        self.contour_timer.setSingleShot(True)
        self.contour_timer.setInterval(400)
        self.contour_timer.timeout.connect(self._refresh_input_contours)
        self.contours_key = None  # the choice of planes the 3D view's contours show
        self._contours_ready.connect(self._show_traced_contours)

        self.fit_button = QPushButton("Fit")
        self.pause_button = QPushButton("Pause")
        self.cancel_button = QPushButton("Cancel")
        self.fit_button.clicked.connect(self.start_fit)
        self.pause_button.clicked.connect(self.toggle_pause)
        self.cancel_button.clicked.connect(self.cancel_fit)
        copy = QPushButton("Copy command")
        copy.setToolTip("the fieldstudio fit command line that makes the same run")
        copy.clicked.connect(self.copy_command)
        buttons = QHBoxLayout()
        for b in (self.fit_button, self.pause_button, self.cancel_button, copy):
            buttons.addWidget(b)

        self.stage = QLabel("Open a mesh, cross-sections, a label map, a picture, a NeRF scene folder or a run folder "
                            "(File > Open, or drop it here).")
        self.stage.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.stage_title, self.stage_started = "", 0.0
        self.stage_clock = QTimer(self)  # "Preparing: 3 s" in stages that report no progress
        self.stage_clock.setInterval(1000)
        self.stage_clock.timeout.connect(lambda: self.stage.setText(
            f"{self.stage_title}: {time.perf_counter() - self.stage_started:.0f} s"))
        self.loss_plot = pg.PlotWidget(background=(38, 41, 46))
        self.loss_plot.setLabel("bottom", "step")
        self.loss_plot.setLabel("left", "loss (log10)")
        self.loss_plot.setMinimumHeight(150)
        self.loss_plot.getAxis("left").enableAutoSIPrefix(False)  # log10 values: no "(x0.001)"
        self.objects = QListWidget()  # the objects shown, with visibility check boxes
        self.objects.itemChanged.connect(self._object_toggled)
        self.objects.itemDoubleClicked.connect(self._choose_colour)
        self.objects.setToolTip("tick to show, double-click to change the colour")
        self.objects.setMaximumHeight(140)
        self.metrics = MetricsTable()
        self.legend = QLabel()  # what the colours of a distance map mean
        self.legend.setWordWrap(True)

        side = QVBoxLayout()
        side.addWidget(self.panel)
        side.addLayout(buttons)
        side.addWidget(self.stage)
        side.addWidget(self.progress)
        side.addWidget(self.loss_plot)
        self.objects_title = QLabel("Objects")
        side.addWidget(self.objects_title)
        side.addWidget(self.objects)
        self.clip_controls = ClipControls(self.view)
        side.addWidget(self.clip_controls)
        side.addWidget(self.metrics)
        side.addWidget(self.legend)
        side.addStretch(1)
        left = QWidget()
        left.setLayout(side)
        left.setMinimumWidth(340)
        self.view_column = QSplitter(Qt.Vertical)  # the 3D view, and a scene's views under it
        self.view_column.addWidget(self.view)
        self.view_column.addWidget(self.scene_view)
        self.view_column.setSizes([520, 380])
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(self.view_column)
        split.addWidget(self.slices)
        split.addWidget(self.image_view)
        split.setStretchFactor(1, 1)
        split.setStretchFactor(3, 1)
        split.setSizes([380, 900, 450, 900])
        self.setCentralWidget(split)
        self._menus()
        self._update_buttons(False)

    # ------------------------------------------------------------------------------------------------ menus
    def _menus(self) -> None:
        file = self.menuBar().addMenu("&File")
        for text, keys, slot in (("&Open file...", QKeySequence.Open, self.open_file_dialog),
                                 ("Open &folder (DICOM series, NeRF scene or run)...", None, self.open_folder_dialog),
                                 ("Open a &background image (CT / MR) for the slices...", None,
                                  self.background_dialog),
                                 ("&Compare with another run...", None, self.compare_dialog),
                                 ("Choose &ROIs / segments...", None, self.pick_rois),
                                 ("&Export mesh...", QKeySequence.SaveAs, self.export_mesh_dialog),
                                 ("Export &picture (at any scale)...", None, self.image_view.export_dialog),
                                 ("Export &views (NeRF test views)...", None, self.scene_view.export_views_dialog),
                                 ("Export &orbit video (NeRF)...", None, self.scene_view.export_orbit_dialog),
                                 ("Save &screenshot...", None, self.screenshot_dialog)):
            action = QAction(text, self)
            if keys:
                action.setShortcut(keys)
            action.triggered.connect(slot)
            file.addAction(action)
            if slot in (self.scene_view.export_views_dialog, self.scene_view.export_orbit_dialog):
                action.setEnabled(False)  # until a finished NeRF run is shown
                self.scene_view.export_ready.connect(action.setEnabled)
        self.recent_menu = file.addMenu("&Recent")
        self._fill_recent()
        file.addSeparator()
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.Quit)
        quit_action.triggered.connect(self.close)
        file.addAction(quit_action)
        view = self.menuBar().addMenu("&View")
        self.wire_action = QAction("&Wireframe", self, checkable=True)
        self.wire_action.toggled.connect(self.view.set_wireframe)
        view.addAction(self.wire_action)
        self.distance_action = QAction("Colour by &distance to the input (mesh or full label mask)", self,
                                       checkable=True)
        self.distance_action.setToolTip("the result's error: blue on the input's surface, red at the 95th "
                                        "percentile of the distance and beyond")
        self.distance_action.toggled.connect(lambda _: self.run_dir is not None and self._show_results(self.run_dir))
        view.addAction(self.distance_action)
        clear = QAction("Clear the &comparison", self)
        clear.triggered.connect(lambda: self.compare_with(None))
        view.addAction(clear)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings_store.value("recent", [], type=list) or []:
            action = QAction(path, self)
            action.triggered.connect(lambda _=False, p=path: self.open_path(Path(p)))
            self.recent_menu.addAction(action)

    def _remember(self, path: Path) -> None:
        recent = [str(path)] + [p for p in (self.settings_store.value("recent", [], type=list) or [])
                                if p != str(path)]
        self.settings_store.setValue("recent", recent[:MAX_RECENT])
        self._fill_recent()

    # ------------------------------------------------------------------------------------------------ opening
    def open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open an input", "", "Inputs (*.obj *.ply *.stl *.off *.glb "
                                              "*.gltf *.csl *.nii *.nii.gz *.nrrd *.nhdr *.dcm *.png *.jpg *.jpeg "
                                              "*.tif *.tiff *.bmp *.webp *.gif *.exr);;All files (*)")
        if path:
            self.open_path(Path(path))

    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a DICOM series folder, a NeRF scene folder or a run folder")
        if path:
            self.open_path(Path(path))

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        urls = event.mimeData().urls()
        if urls:
            self.open_path(Path(urls[0].toLocalFile()))

    def open_path(self, path: Path) -> bool:
        """Show an input (or a run folder) at once; errors go to a dialog, the window stays as it was."""
        try:
            if is_run_folder(path):
                self._open_run(path)
            else:
                self._show_input(path)
                self.panel.set_input(path)
                self.run_dir = None
        except FieldStudioError as err:
            self.error(str(err))
            return False
        if len(self.input_names) > 1 and not self.quiet and not is_run_folder(path):
            self.pick_rois()
        self._remember(path)
        self.setWindowTitle(f"fieldstudio - {path.name}")
        self.stage.setText(f"{path.name}: ready. Press Fit to reconstruct it "
                           "(the settings' empty fields take the defaults shown).")
        self._update_buttons(self.panel.resolved is not None)
        return True

    def _show_input(self, path: Path) -> None:
        from fieldstudio.api import Request, resolve

        cfg = resolve(Request(path))  # the task and its reading, as a fit would do it
        label_map = False
        self.view.angles = THREE_QUARTER
        self.view.clear_all()
        self.objects.clear()
        self.object_rows.clear()
        self.input_labels, self.input_names, self.compare_dir = [], {}, None
        self._set_picture_mode(cfg.task == "image")
        self._set_scene_mode(cfg.task == "nerf")
        if cfg.task == "image":
            from fieldstudio.data.images import read_image

            self.image_view.set_picture(read_image(path))
        elif cfg.task == "nerf":
            for key, text, index in self.scene_view.set_scene(cfg):
                self._add_object(key, text, index)
        elif cfg.task == "sdf":
            from fieldstudio.tasks.sdf_inputs import input_mesh

            mesh = input_mesh(path, cfg.sdf.flip_sign)
            if mesh is None:
                self.statusBar().showMessage("scattered SDF samples: no input surface to show", 8_000)
            else:
                self.view.show_mesh("input", mesh, index=7)
                self._add_object("input", "input mesh", 7)
        else:
            from fieldstudio.control import Control, active
            from fieldstudio.data.medical_readers import RTSTRUCT_SUFFIXES, is_label_map, suffix_of
            from fieldstudio.tasks.sections_input import load_sections, read_volume

            label_map = is_label_map(path)
            with active(Control()):  # the label map is read once for the contours and the slice view
                cs, names = load_sections(cfg)
                volume = read_volume(path) if label_map else None
            labels = cs.labels()
            self.input_labels, self.input_names = labels, dict(names)
            world = volume.world if volume is not None else "LPS" if suffix_of(path) in RTSTRUCT_SUFFIXES else None
            if world is not None:  # patients are shown from the front
                self.view.face_patient(world)
            self.view.show_contours("input", cs, labels)
            if len(labels) <= MAX_LABEL_ROWS:  # a legend of the labels' colours; the first row's box shows/hides
                for i, lab in enumerate(labels):
                    self._add_object("input", f"label {lab} {names.get(lab, '')}".strip(), i, checkable=i == 0)
            else:
                self._add_object("input", f"input: {len(labels)} labels", 0)
            if volume is not None:
                self.contours_key = planes_key(volume, cfg)
                self.slices.set_volume(volume, labels)
                self.slices.set_background(None)
                self.slices.set_meshes({})
        self.slices.setVisible(cfg.task == "slices" and label_map)
        self.metrics.show_runs([])
        self.legend.setText("")

    def _set_picture_mode(self, on: bool) -> None:
        """Pictures: the image view instead of the 3D view, the slices and their controls."""
        self.picture_mode = on
        for widget in (self.view_column, self.view, self.objects, self.objects_title, self.clip_controls):
            widget.setVisible(not on)
        self.image_view.setVisible(on)

    def _set_scene_mode(self, on: bool) -> None:
        """NeRF scenes: their cameras in the 3D view and the scene view under it; no slices."""
        self.scene_mode = on
        self.scene_view.setVisible(on)
        if on:
            self.slices.hide()

    def _update_kept_slices(self, valid: bool) -> None:
        """Draw the planes the current settings keep (every k-th slice, or plane families at any orientation) where
        they cross the shown slice; the library chooses them, as a fit would."""
        from fieldstudio.data.medical_planes import kept_planes

        vol, cfg = self.slices.volume, self.panel.resolved
        if vol is None or not self.slices.isVisible():
            return
        planes = []
        if valid and cfg is not None:
            labels = [cfg.slices.label] if cfg.slices.label is not None else None
            try:
                planes = kept_planes(vol, labels, cfg.slices.every, cfg.slices.slice_offset, cfg.slices.families)
            except FieldStudioError:
                planes = []
        self.slices.set_kept_planes(planes)
        self.contour_timer.start()  # the 3D view's contours follow, once the typing stops

    def _refresh_input_contours(self) -> None:
        """The label map's contours on the planes the current settings keep, in the 3D view (as a fit sees them):
        traced in a thread (a large label map at every slice takes seconds), only when the choice of planes
        changed."""
        vol, cfg = self.slices.volume, self.panel.resolved
        if vol is None or cfg is None or not self.slices.isVisible():
            return
        key = planes_key(vol, cfg)
        if key == self.contours_key:
            return
        self.contours_key = key

        def trace():
            from fieldstudio.data.medical_planes import volume_sections

            try:
                cs = volume_sections(vol, None, cfg.slices.every, cfg.slices.slice_offset, cfg.slices.families)
            except FieldStudioError:
                return
            self._contours_ready.emit(key, cs)
        threading.Thread(target=trace, name="fieldstudio-contours", daemon=True).start()

    def _show_traced_contours(self, key, cs) -> None:
        if key != self.contours_key:  # the settings changed again meanwhile
            return
        visible = all(item.visible() for item in self.view.items_by_name.get("input", []))
        self.view.show_contours("input", cs, self.input_labels, frame=False)
        self.view.set_visible("input", visible)

    def _object_toggled(self, item) -> None:
        name, visible = item.data(Qt.UserRole), item.checkState() == Qt.Checked
        self.view.set_visible(name, visible)
        self.slices.set_mesh_visible(name, visible)

    def _choose_colour(self, item) -> None:
        from PySide6.QtWidgets import QColorDialog

        colour_now = item.foreground().color()
        chosen = QColorDialog.getColor(colour_now, self, f"Colour of {item.text()}")
        if chosen.isValid():
            self.set_object_colour(item.data(Qt.UserRole), chosen)

    def set_object_colour(self, key: str, colour) -> None:
        """Draw object ``key`` (its meshes or contours) in the QColor ``colour``; its row takes the colour too."""
        self.view.set_colour(key, (colour.redF(), colour.greenF(), colour.blueF(), colour.alphaF()))
        for row in range(self.objects.count()):
            item = self.objects.item(row)
            if item.data(Qt.UserRole) == key:
                item.setForeground(colour)

    def background_dialog(self) -> None:
        if self.slices.volume is None:
            self.error(NO_LABEL_MAP)
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open the CT / MR image of this label map", "",
                                              "Images (*.nii *.nii.gz *.nrrd *.nhdr);;All files (*)")
        if path:
            self.open_background(Path(path))

    def open_background(self, path: Path) -> bool:
        """A CT / MR volume (NIfTI, NRRD or a DICOM series folder) shown grey under the label map's slices."""
        from fieldstudio.data.medical_readers import read_intensity_volume

        if self.slices.volume is None:
            self.error(NO_LABEL_MAP)
            return False
        try:
            self.slices.set_background(read_intensity_volume(path))
        except FieldStudioError as err:
            self.error(str(err))
            return False
        self.statusBar().showMessage(f"{path.name} under the slices: right-drag or the presets set window/level",
                                     8_000)
        return True

    def _open_run(self, run_dir: Path) -> None:
        """A run folder: its meshes and metrics; the settings take its input, so Fit resumes an unfinished run."""
        from fieldstudio.config import load_run_config

        cfg = load_run_config(run_dir / "config.toml")
        if Path(cfg.input).exists():
            self._show_input(Path(cfg.input))
            self.panel.set_input(Path(cfg.input), run_dir)
            self.panel.show_config(cfg)
        self.run_dir = run_dir
        self._show_results(run_dir)

    def _show_results(self, run_dir: Path) -> None:
        """A run's meshes (coloured as their labels' contours, or by distance to the input when asked), the second
        run's over them when one is compared, and the metrics table."""
        if is_nerf_run(run_dir):  # views of a radiance field: no mesh
            self._set_picture_mode(False)
            self._set_scene_mode(True)
            metrics = self.scene_view.show_run(run_dir)
            self.metrics.show_runs([("this run", metrics)] if metrics else [])
            self.legend.setText("")
            return
        if any(run_dir.glob("reconstruction.*")) or (self.picture_mode and not run_meshes(run_dir)):  # a picture
            self._set_scene_mode(False)
            self._set_picture_mode(True)
            metrics = self.image_view.show_run(run_dir)
            self.metrics.show_runs([("this run", metrics)] if metrics else [])
            return
        meshes = {name: self._load(path) for name, path in run_meshes(run_dir)}
        compared = {f"compare: {name}": self._load(path)
                    for name, path in (run_meshes(self.compare_dir) if self.compare_dir is not None else [])}
        metrics = {folder: json.loads((folder / "metrics.json").read_text())
                   for folder in filter(None, (run_dir, self.compare_dir)) if (folder / "metrics.json").exists()}
        for row in reversed(range(self.objects.count())):  # the results' rows are redrawn; the input's stay
            if self.objects.item(row).data(Qt.UserRole) != "input":
                self.objects.takeItem(row)
        self.object_rows.clear()
        legend = ""
        colours = {name: self._object_colour(name, list(meshes)) for name in meshes}
        for name, mesh in meshes.items():
            vertex_colours = None
            if self.distance_action.isChecked():
                reference = self._reference(run_dir, name)
                if reference is not None:
                    from fieldstudio.app.gui.view3d import distance_colours
                    from fieldstudio.metrics import distances_to

                    d = distances_to(np.asarray(mesh.vertices), reference)
                    scale = float(np.percentile(d, 95))
                    vertex_colours = distance_colours(d, scale)
                    legend = (f"colour: distance to the input, blue 0 to red {scale:.3g} (95th percentile; largest "
                              f"{d.max():.3g}, input units)")
            self.view.show_mesh(name, mesh, index=colours[name], frame=False, vertex_colors=vertex_colours)
            self._add_object(name, name, colours[name])
        if meshes:  # the camera frames all of the results
            bounds = np.array([mesh.bounds for mesh in meshes.values()])
            self.view.frame(np.array([bounds[:, 0].min(axis=0), bounds[:, 1].max(axis=0)]))
        for row in metrics.get(run_dir, {}).get("objects", []):  # objects of a run of several that have no mesh
            if "error" in row:
                self._set_object_status(row["name"], "failed: " + row["error"].split(";")[0])
        if meshes:  # the result in front: the input stays listed, hidden (tick it to compare)
            for row in range(self.objects.count()):
                item = self.objects.item(row)
                if item.data(Qt.UserRole) == "input" and item.flags() & Qt.ItemIsUserCheckable:
                    item.setCheckState(Qt.Unchecked)
        for key, mesh in compared.items():
            self.view.show_mesh(key, mesh, index=COMPARE_COLOUR, alpha=0.45, frame=False)
            self._add_object(key, f"{self.compare_dir.name}: {key.removeprefix('compare: ')}", COMPARE_COLOUR)
        self.metrics.show_runs([(folder.name if self.compare_dir is not None else "this run", m)
                                for folder, m in metrics.items()])
        self.legend.setText(legend)
        if self.slices.volume is not None and self.slices.isVisible():  # each mesh cut by the shown slice
            self.slices.set_meshes({**{name: (mesh, colours[name]) for name, mesh in meshes.items()},
                                    **{key: (mesh, COMPARE_COLOUR) for key, mesh in compared.items()}})

    def _load(self, path: Path):
        """A mesh file for the views: the one the worker loaded in its thread when the fit ended, else read now."""
        ready = self.preloaded.pop(Path(path), None)
        if ready is None and self.worker is not None:  # an object of a running fit, done
            ready = self.worker.loaded.get(Path(path))
        return ready if ready is not None else load_mesh_for_view(Path(path))

    def _reference(self, run_dir: Path, name: str):
        """What a run reconstructs, as a mesh in the input's frame: the input mesh (SDF runs) or the surface of the
        full label mask of the object's labels (label maps). None (with a message) for other inputs."""
        from fieldstudio.config import load_run_config

        cfg = load_run_config(run_dir / "config.toml")
        if not Path(cfg.input).exists():
            self.statusBar().showMessage(f"distance colouring: the input {cfg.input} is gone", 8_000)
            return None
        if cfg.task == "sdf":
            from fieldstudio.tasks.sdf_inputs import input_mesh

            mesh = input_mesh(cfg.input, cfg.sdf.flip_sign)
            if mesh is None:
                self.statusBar().showMessage("distance colouring needs a mesh or an SDF grid input", 8_000)
            return mesh
        from fieldstudio.data.medical_readers import is_label_map

        if not is_label_map(cfg.input):
            self.statusBar().showMessage("distance colouring needs a mesh or a label map input", 8_000)
            return None
        from fieldstudio.control import Control, active
        from fieldstudio.metrics import mask_surface
        from fieldstudio.tasks.sections_input import read_volume

        metrics_path = (run_dir if name == "result" else run_dir / name) / "metrics.json"
        vol = self.slices.volume  # the label map on show is the run's input when the run folder was opened
        if vol is None or Path(vol.source) != Path(cfg.input):
            with active(Control()):
                vol = read_volume(Path(cfg.input))
        try:
            labels = json.loads(metrics_path.read_text())["scored_labels"]
        except (OSError, ValueError, KeyError):
            labels = vol.labels()
        return mask_surface(np.isin(vol.data, labels), vol.affine)

    def _set_object_status(self, name: str, status: str, index: int | None = None) -> None:
        """One object's row in a run of several: "liver: training, step 120", "spleen: failed: ..."."""
        item = self.object_rows.get(name)
        if item is None:
            if index is None:
                index = len(self.object_rows)
            self._add_object(name, name, index, checkable=False)
            item = self.objects.item(self.objects.count() - 1)
            self.object_rows[name] = item
        item.setText(f"{name}: {status}")

    def _add_object(self, key: str, text: str, index: int, checkable: bool = True) -> None:
        item = QListWidgetItem(text)
        r, g, b, _ = colour(index)
        item.setForeground(pg.mkColor(int(r * 255), int(g * 255), int(b * 255)))
        item.setData(Qt.UserRole, key)
        if checkable:
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked)
        self.objects.addItem(item)

    # ------------------------------------------------------------------------------------------------ fitting
    def start_fit(self) -> None:
        if self.worker is not None or self.panel.input is None:
            return
        try:
            request = self.panel.request()
            self.run_dir = Path(self.panel.output.text())
            self.worker = FitWorker(request, self.run_dir)
        except FieldStudioError as err:
            self.error(str(err))
            return
        self.losses = []
        for curve in self.loss_curves.values():
            self.loss_plot.removeItem(curve)
        self.loss_curves.clear()
        self.preview_colour = 0
        for name in list(self.object_rows):  # a new fit lists its own objects
            self.objects.takeItem(self.objects.row(self.object_rows.pop(name)))
        self.worker.event.connect(self._on_event)
        self.worker.preview.connect(self.image_view.show_previews if self.picture_mode else
                                    self.scene_view.show_previews if self.scene_mode else self._show_preview)
        self.worker.ended.connect(self._on_ended)
        if self.slices.volume is not None and self.slices.isVisible():  # the field's inside on the shown slice
            self.worker.slice_points = lambda: (self.slices.slice_points_world(), self.slices.shown_slice)
            self.worker.live_values.connect(lambda values, at: self.slices.set_live(values, at=at))
            self.slices.slice_changed.connect(self.worker.request_values)
        if self.picture_mode:  # pictures instead of meshes, and a sharper one of the region in view on demand
            self.worker.image_options = self.image_view.preview_options
            self.image_view.detail_wanted.connect(self.worker.request_preview)
            self.image_view.start_run(self.run_dir)
        if self.scene_mode:  # views of the chosen (or free) camera instead of meshes, and at once on demand
            self.worker.view_options = self.scene_view.preview_options
            self.scene_view.view_wanted.connect(self.worker.request_preview)
            self.scene_view.start_run(self.run_dir)
        self.worker.start()
        self.pause_button.setText("Pause")
        self._update_buttons(True)

    def _show_preview(self, mesh) -> None:
        self.view.show_mesh("preview", mesh, index=self.preview_colour, alpha=0.85, frame=False)
        if mesh.metadata.get("level", 0.0) != 0.0:
            from fieldstudio.run import EARLY_PREVIEW_SHARE

            self.statusBar().showMessage(f"early preview: the field has no surface yet, shown is its lowest "
                                         f"{EARLY_PREVIEW_SHARE:.0f} % (the shape it is forming)", 3_000)

    def toggle_pause(self) -> None:
        if self.worker is None:
            return
        if self.worker.job.status == "paused" or self.pause_button.text() == "Resume":
            self.worker.resume()
            self.pause_button.setText("Pause")
        else:
            self.worker.pause()
            self.pause_button.setText("Resume")

    def cancel_fit(self) -> None:
        if self.worker is not None:
            self.stage.setText("Cancelling: saving what can be resumed ...")
            self.worker.cancel()

    def _loss_curve(self, name: str):
        """The loss curve of object ``name`` ("" for a run of one), in the object's colour."""
        if name not in self.loss_curves:
            r, g, b, _ = colour(self._object_colour(name) if name else 0)
            self.loss_curves[name] = self.loss_plot.plot(pen=pg.mkPen((int(255 * r), int(255 * g), int(255 * b)),
                                                                      width=2))
        return self.loss_curves[name]

    def _object_colour(self, name: str, run_objects: list[str] | None = None) -> int:
        """An object's colour: its label's, as the input's contours are drawn; else (the input is not open) its
        place among ``run_objects``."""
        from fieldstudio.tasks.sections_input import object_names

        names = object_names(self.input_labels, self.input_names)
        if name in names:
            return names.index(name)
        return run_objects.index(name) if run_objects and name in run_objects else 0

    def _on_object(self, e) -> None:
        """An object of a run of several changed status: its row, and its mesh as soon as it is done."""
        self._set_object_status(e.object, e.message, self._object_colour(e.object))
        mesh_path = self.run_dir / e.object / "mesh.ply" if self.run_dir is not None else None
        if e.message == "done" and mesh_path is not None and mesh_path.exists():
            self.view.show_mesh(e.object, self._load(mesh_path),
                                index=self._object_colour(e.object), frame=False)

    def _on_event(self, e) -> None:
        if self.picture_mode:
            self.image_view.on_event(e)
        if self.scene_mode:
            self.scene_view.on_event(e)
        if e.kind == "object":
            self._on_object(e)
            return
        if e.object and e.kind == "stage":
            name = object_key(e.object)
            if e.stage == "train":
                self.losses = []  # each object's curve starts at its own step 0
            self._set_object_status(name, STAGE_TITLES.get(e.stage, e.stage).lower(), self._object_colour(name))
            self.preview_colour = self._object_colour(name)
        if e.kind == "stage":
            # Stages without a measure of progress show their elapsed seconds, ticking once a second: Qt's busy
            # animation repaints continuously, and on software OpenGL that took 2 s of CPU from a 6 s set-up.
            self.stage_title = stage_title(e)
            self.stage_started = time.perf_counter()
            self.stage.setText(self.stage_title)
            self.progress.setValue(0)
            if e.stage in ("prepare", "score"):
                self.stage_clock.start()
        elif e.kind in ("progress", "step") and e.total:
            self.stage_clock.stop()
            if e.kind == "step":
                self.losses.append((e.step, e.loss))
            now = time.perf_counter()
            if now - self._last_plot < PLOT_EVERY_S and e.done < e.total:
                return  # every repaint costs the training's CPU (see PLOT_EVERY_S): once a second is enough to watch
            self._last_plot = now
            self.progress.setValue(int(1000 * e.done / e.total))
            eta = f", about {e.eta:.0f} s left" if e.eta is not None else ""
            title = stage_title(e)
            if e.kind == "step":
                xs, ys = zip(*[(s, math.log10(v)) for s, v in self.losses if v > 0]) if self.losses else ((), ())
                self._loss_curve(object_key(e.object)).setData(list(xs), list(ys))
                self.stage.setText(f"{title}: step {e.step}, loss {e.loss:.4g}{eta}")
                if e.object:
                    self._set_object_status(object_key(e.object), f"training, step {e.step}")
            else:
                self.stage.setText(f"{title}{eta}")
        elif e.kind == "note":
            self.statusBar().showMessage(e.message, 10_000)
        elif e.kind in ("paused", "resumed"):
            self.statusBar().showMessage(f"training {e.kind}", 5_000)

    def _on_ended(self, status: str, payload) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.timer.stop()
            self.preloaded = worker.loaded
            if worker.slice_points is not None:
                self.slices.slice_changed.disconnect(worker.request_values)
                worker.slice_points = None
            if worker.image_options is not None:
                self.image_view.detail_wanted.disconnect(worker.request_preview)
                self.image_view.stop_run()
            if worker.view_options is not None:
                self.scene_view.view_wanted.disconnect(worker.request_preview)
                self.scene_view.stop_run()
        self.view.remove("preview")
        self.slices.set_live(None)
        self.stage_clock.stop()
        if status == "finished":
            self.progress.setValue(1000)
            self.stage.setText(f"Done{self.image_view.scores(self.run_dir)}: {self.run_dir}")
            self._show_results(self.run_dir)
        elif status == "cancelled":
            self.stage.setText(f"Cancelled; {self.run_dir} is kept: press Fit to resume.")
        else:
            self.stage.setText("Failed; the run folder is kept.")
            self.error(str(payload))
        self._update_buttons(self.panel.resolved is not None)
        self.fit_ended.emit(status)

    def _update_buttons(self, valid: bool) -> None:
        running = self.worker is not None
        self.fit_button.setEnabled(valid and not running)
        self.pause_button.setEnabled(running)
        self.cancel_button.setEnabled(running)

    # ------------------------------------------------------------------------------------------------ compare
    def compare_dialog(self) -> None:
        if self.run_dir is None:
            self.error("open or fit a run first, then compare another run with it")
            return
        path = QFileDialog.getExistingDirectory(self, "Open a second run folder to compare")
        if path:
            self.compare_with(Path(path))

    def compare_with(self, run_dir: Path | None) -> bool:
        """Show a second finished run's meshes over this one's (translucent) and its metrics in a second column;
        None clears the comparison."""
        if run_dir is not None and not run_meshes(run_dir):
            self.error(f"{run_dir} holds no finished mesh to compare with; pick a run folder with mesh.ply")
            return False
        for row in reversed(range(self.objects.count())):
            key = self.objects.item(row).data(Qt.UserRole)
            if key.startswith("compare: "):
                self.view.remove(key)
                self.objects.takeItem(row)
        self.compare_dir = run_dir
        if self.run_dir is not None:
            self._show_results(self.run_dir)
        return True

    def pick_rois(self) -> None:
        """Choose the ROIs / segments of an RTSTRUCT or SEG to reconstruct (sets the panel's ROI field)."""
        names = [self.input_names[lab] for lab in self.input_labels if lab in self.input_names]
        if not names:
            self.error("this input has no named structures (ROIs / segments) to choose from")
            return
        current = [t.strip() for t in self.panel.edits["roi"].text().split(",") if t.strip()]
        dialog = PickDialog("Structures", f"{len(names)} structures in {self.panel.input.name}: tick the ones to "
                            "reconstruct (each becomes its own mesh).", names, current or None, self)
        self.roi_dialog = dialog

        def chosen():
            picked = dialog.chosen()
            self.panel.edits["roi"].setText("" if len(picked) == len(names) else ",".join(picked))
        dialog.accepted.connect(chosen)
        dialog.open()  # window-modal, without blocking the event loop

    # ------------------------------------------------------------------------------------------------ output
    def copy_command(self) -> None:
        if self.panel.input is not None:
            QGuiApplication.clipboard().setText(self.panel.command())
            self.statusBar().showMessage("command copied", 5_000)

    def export_mesh_dialog(self) -> None:
        if self.run_dir is None or not (self.run_dir / "mesh.ply").exists():
            self.error("no reconstructed mesh to export yet; run a fit (or open a finished run folder) first")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export the mesh", "", "Meshes (*.ply *.obj *.stl *.glb)")
        if path:
            self.export_mesh(Path(path))

    def export_mesh(self, path: Path) -> Path:
        import trimesh

        from fieldstudio.mesh import export_mesh

        return export_mesh(trimesh.load(self.run_dir / "mesh.ply", process=False), path)

    def screenshot_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save a screenshot", "", "PNG (*.png)")
        if path:
            self.save_screenshot(Path(path))

    def save_screenshot(self, path: Path) -> bool:
        return self.grab().save(str(path))

    def error(self, message: str) -> None:
        """The library's one-line message in a dialog (and on stderr, for logs and screenshot runs)."""
        print(f"error: {message}", file=sys.stderr)
        if self.quiet:
            self.statusBar().showMessage(f"error: {message}")
        else:
            QMessageBox.critical(self, "fieldstudio", message)

    def closeEvent(self, event) -> None:
        if self.worker is not None:  # a fit in flight keeps a resumable checkpoint
            self.worker.cancel()
            self.worker.job.wait(10)
        self.scene_view.close_down()
        super().closeEvent(event)
        self.collector.stop()
