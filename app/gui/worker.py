"""worker.py
=========
A fit job driven from the window: the job runs in its own thread (``fieldstudio.api``); its events arrive here in
that thread and are re-emitted as Qt signals, which Qt queues to the window's thread. Previews are computed in a
short-lived thread of their own (a preview waits for the end of a training step), never in the window's thread.
"""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from fieldstudio.api import Event, fit_job

# 32^3 points: about 0.15 s of the 450k hybrid field on 2 cores (40^3: 0.3 s), taken between two training steps
# (training waits meanwhile: evaluating beside it would make the two fight over the cores).
PREVIEW_RESOLUTION = 32
FIRST_PREVIEW_MS = 300  # after training starts, then again every RETRY_MS until the field has a surface to show
RETRY_MS = 400


def run_meshes(run_dir: Path) -> list[tuple[str, Path]]:
    """(object name, mesh file) of a run folder: "result" for a run of one object, else one per object folder."""
    if (run_dir / "mesh.ply").exists():
        return [("result", run_dir / "mesh.ply")]
    return [(p.parent.name, p) for p in sorted(run_dir.glob("*/mesh.ply"))]


def load_mesh_for_view(path: Path):
    """A result mesh with its vertex normals computed (``metadata["vertex_normals"]``, used by View3D): the
    part of showing a large result that can run outside the window's thread."""
    import trimesh

    from fieldstudio.app.gui.view3d import vertex_normals

    mesh = trimesh.load(path, process=False)
    mesh.metadata["vertex_normals"] = vertex_normals(mesh.vertices, mesh.faces)
    return mesh


class FitWorker(QObject):
    """Start, pause, resume and cancel one fit; ``event`` carries every job Event, ``preview`` a coarse mesh of the
    field every ``preview_every_s`` seconds while it trains (image runs, with ``image_options``: a list of
    (options, picture); NeRF runs, with ``view_options``: a list of (options, view dict)), ``ended`` the job's
    status ("finished", "cancelled", "failed") with the result or the error message."""

    event = Signal(object)
    preview = Signal(object)
    live_values = Signal(object, object)  # the field's values at the slice view's points, and that slice's key
    ended = Signal(str, object)
    _training_started = Signal()  # job thread -> window thread: start previewing soon
    _retry = Signal()  # preview thread -> window thread: no surface yet, look again soon

    def __init__(self, request, run_dir, overwrite: bool = False, preview_every_s: float = 2.5, parent=None):
        super().__init__(parent)
        self.job = fit_job(request, run_dir, overwrite=overwrite)  # resolves: a bad request raises here
        self.run_dir = Path(run_dir)
        self.loaded: dict = {}  # mesh file -> mesh with normals, read in the job's thread (see _preload)
        self.job.subscribe(self._on_event)
        self._preview_busy = threading.Lock()
        # () -> (points (N, 3) in the input's frame, key of the slice they lie on) or None: where the window wants
        # the field's values with each preview (the slice view's voxel centres). Called in the window's thread.
        self.slice_points = None
        # () -> [options of job.preview("image", ...), ...]: for image runs, what to render instead of a mesh (the
        # image view's coarse whole picture and the region in view). Called in the window's thread.
        self.image_options = None
        # () -> [options of job.preview("view", ...), ...]: for NeRF runs, the views to render instead of a mesh
        # (the scene view's camera, or its free camera). Called in the window's thread.
        self.view_options = None
        self.timer = QTimer(self)
        self.timer.setInterval(int(preview_every_s * 1000))
        self.timer.timeout.connect(self.request_preview)
        self._training_started.connect(self._preview_soon)
        self._retry.connect(lambda: QTimer.singleShot(RETRY_MS, self.request_preview))
        self.shown_one = False  # until the first preview mesh: retried quickly, not at the regular rhythm

    @property
    def config(self):
        return self.job.config

    def start(self) -> None:
        self.job.start()
        self.timer.start()

    def pause(self) -> None:
        self.job.pause()

    def resume(self) -> None:
        self.job.resume()

    def cancel(self) -> None:
        self.job.cancel()

    def request_preview(self) -> None:
        """A coarse mesh of the field as it is now, computed off the window's thread (skipped while one is
        still being made)."""
        self._request(mesh=True)

    def request_values(self) -> None:
        """Only the field's values on the slice view (the user scrolled to another slice)."""
        self._request(mesh=False)

    def _request(self, mesh: bool) -> None:
        if self.job.stage != "train" or not self._preview_busy.acquire(blocking=False):
            return
        where = self.slice_points() if self.slice_points is not None else None
        images = self.image_options() if mesh and self.image_options is not None else None
        if mesh and self.view_options is not None:
            images = [("view", o) for o in self.view_options()]
        elif images is not None:
            images = [("image", o) for o in images]

        def make():
            try:
                if where is not None:
                    values = self.job.preview("values", points=where[0])
                    if values is not None:
                        self.live_values.emit(values, where[1])
                if images is not None:  # each picture between two training steps of its own
                    shown = [(o, self.job.preview(kind, **o)) for kind, o in images]
                    shown = [(o, picture) for o, picture in shown if picture is not None]
                    if shown:
                        self.shown_one = True
                        self.preview.emit(shown)
                elif mesh:
                    shape = self.job.preview("mesh", resolution=PREVIEW_RESOLUTION)
                    if shape is not None and len(shape.faces):
                        self.shown_one = True
                        self.preview.emit(shape)
            except Exception:  # a preview is a courtesy: it must never take the fit down
                pass
            finally:
                self._preview_busy.release()
                if mesh and not self.shown_one:
                    self._retry.emit()

        threading.Thread(target=make, name="fieldstudio-preview", daemon=True).start()

    def _preview_soon(self) -> None:
        """Training has begun (again, for each object of a run of several): a first preview after a few steps,
        then the regular rhythm."""
        self.shown_one = False
        QTimer.singleShot(FIRST_PREVIEW_MS, self.request_preview)
        self.timer.start()

    def _preload(self, paths) -> None:
        """Read meshes (and their normals) here, in the job's thread, so that showing a large result does not hold
        up the window; each once (an object's mesh, read when it was done, serves the end of the fit too)."""
        try:
            for path in paths:
                if path.exists() and path not in self.loaded:
                    self.loaded[path] = load_mesh_for_view(path)
        except Exception:  # the window reads them itself then
            pass

    def _on_event(self, e: Event) -> None:  # the job's thread
        if e.kind == "stage" and e.stage == "train":
            self._training_started.emit()
        if e.kind == "finished":
            self._preload([path for _, path in run_meshes(self.run_dir)])
        if e.kind == "object" and e.message == "done":
            self._preload([self.run_dir / e.object / "mesh.ply"])
        self.event.emit(e)
        if e.kind in ("finished", "cancelled", "failed"):
            self.ended.emit(e.kind, self.job.result if e.kind != "failed" else e.message)
