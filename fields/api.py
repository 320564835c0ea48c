"""api.py
======
The one entry of every face (CLI, GUI, batch, benchmarks, tests): a request becomes a resolved, validated
``RunConfig``; a job runs it in stages (prepare, train, mesh, score) in a thread of its own, reports events, and can
be cancelled at any moment, paused between training steps, and previewed while it trains.

    from fieldstudio.api import Request, fit_job
    job = fit_job(Request("bunny.obj", time_budget=60), "runs/bunny")
    job.subscribe(lambda e: print(e.kind, e.stage, e.done, e.total, e.eta))
    job.start()
    mesh = job.preview("mesh")          # any time while it trains (None before training starts)
    job.cancel()                        # within about a second, whatever the stage; the folder stays resumable
    result = job.wait()                 # FitResult; a user error is re-raised here as FieldStudioError

Precedence when resolving (later wins): built-in defaults < the task's defaults (field kind and size, training
settings for that field) < the config file < the request's options < ``overrides`` (dotted keys).
"""

from __future__ import annotations

import importlib

import logging
import math
import threading
import time
import tomllib
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any, Callable

from fieldstudio.config import RunConfig, dotted_keys, from_dict, load_run_config, to_dict, validate
from fieldstudio.control import Cancelled, Control, active
from fieldstudio.errors import FieldStudioError
from fieldstudio.tasks import registry
from fieldstudio.train import Callback

DEFAULT_STEPS = 2000  # when neither a step count nor a time budget is given
log = logging.getLogger("fieldstudio")


# ------------------------------------------------------------------------------------------------ requests

@dataclass
class Request:
    """What a user asks for. ``None`` means "the default" (of the config file if one is given, else the task's)."""

    input: str | Path
    task: str = "auto"              # auto: from the input's suffix
    field: str | None = None        # hybrid | neurbf | grid | mlp | orex
    params: int | None = None       # total parameter budget
    steps: int | None = None        # training steps (alone: exactly this many)
    time_budget: float | None = None  # seconds for the whole fit (alone: train until it runs out)
    resolution: int | None = None   # marching cubes
    seed: int | None = None
    labels: str | None = None       # each | union | "1,4"
    multi_label: str | None = None  # joint | separate: how "each" fits several labels
    every: int | None = None        # label maps: every k-th slice
    offset: int | None = None
    planes: str | None = None       # label maps: plane families, e.g. "axial:6,1/0/1:4"
    roi: str | None = None          # RTSTRUCT / SEG structure names
    reference: str | Path | None = None  # SDF inputs: a mesh to score the result against
    downscale: int | None = None  # NeRF scenes: train on pictures area-averaged by this factor
    config: str | Path | None = None  # a TOML file (e.g. a run's config.toml)
    overrides: dict[str, Any] = dc_field(default_factory=dict)  # {"train.batch_size": 4096, ...}


def resolve(request: Request) -> RunConfig:
    """The request as a complete, validated ``RunConfig`` (every size concrete except data-driven ``auto``s).

    Raises FieldStudioError for anything the user can fix: a missing input, an unknown task or one that does not
    read this input, a bad config file or value.
    """
    from fieldstudio.field import preset, resolve_budget, tune_training

    path = Path(request.input).expanduser()
    if not path.exists():
        raise FieldStudioError(f"input not found: {path}")
    cfg, data = RunConfig(), {}
    if request.config is not None:
        cfg = load_run_config(request.config)
        data = tomllib.loads(Path(request.config).read_text())
    tables, file_field = set(data), data.get("field", {})
    spec = registry.for_input(path) if request.task in ("auto", None) else registry.get(request.task)
    if request.task not in ("auto", None) and not _reads(spec, path):
        raise FieldStudioError(f"task {spec.name} reads {spec.inputs}; {path.name} is not one of them (leave "
                               "--task out to choose from the input)")
    cfg.input, cfg.task = str(path.resolve()), spec.name

    # A [field] table that names no kind (e.g. only [field.fourier] sigma) refines the preset of the field chosen.
    refines = "field" in tables and "kind" not in file_field
    if "field" not in tables or refines or (request.field is not None and request.field != cfg.field.kind):
        # A config without a [field] table gets the task's default field, not the dataclass default.
        kind = request.field or spec.default_field
        default_params = spec.default_params(path) if callable(spec.default_params) else spec.default_params
        params = request.params or (cfg.field.params if "field" in tables else None) or default_params
        dim, out_dim = spec.field_shape(path) if spec.field_shape else (3, 1)
        cfg.field = preset(kind, spec.name, params, dim, out_dim)
        if spec.tune_field is not None:
            spec.tune_field(cfg.field, path)
        if refines:
            cfg = _apply_overrides(cfg, {k: v for k, v in dotted_keys(file_field, "field")
                                         if k not in ("field.params", "field.kind")})
    elif request.params is not None:  # the file's field, sized anew for the new budget
        cfg.field.params = request.params
        if cfg.field.kind in ("hybrid", "neurbf"):
            cfg.field.rbf.n_rbf = "auto"
    if "train" not in tables:
        tune_training(cfg.field.kind, cfg.train, spec.name)
    if "resolution" not in data.get("mesh", {}):
        cfg.mesh.resolution = spec.mesh_resolution
    if "smooth_iterations" not in data.get("mesh", {}):
        cfg.mesh.smooth_iterations = spec.mesh_smoothing

    t = cfg.train
    if request.steps is not None or request.time_budget is not None:  # the request's limits replace the file's
        t.steps, t.time_budget = request.steps, request.time_budget
    if t.steps is None and t.time_budget is None:
        t.steps = DEFAULT_STEPS
    for value, section, key in ((request.resolution, cfg.mesh, "resolution"), (request.seed, t, "seed"),
                                (request.labels, cfg.slices, "labels"), (request.every, cfg.slices, "every"),
                                (request.multi_label, cfg.slices, "multi_label"),
                                (request.offset, cfg.slices, "slice_offset"), (request.planes, cfg.slices, "families"),
                                (request.roi, cfg.slices, "rois"), (request.downscale, cfg.nerf, "downscale"),
                                (None if request.reference is None else str(request.reference), cfg.sdf,
                                 "reference")):
        if value is not None:
            setattr(section, key, value)
    if request.overrides:
        cfg = _apply_overrides(cfg, request.overrides)
    # the task's default, which a small time budget may lower, unless a file, the request or an override chose it
    cfg.mesh.auto_resolution = ("resolution" not in data.get("mesh", {}) and request.resolution is None
                                and "mesh.resolution" not in request.overrides)
    validate(cfg)
    if cfg.field.grid.backend == "tcnn" and cfg.field.kind in ("hybrid", "grid", "voxels"):
        from fieldstudio.encoders.tcnn_grid import available

        if available() is not None:  # said before anything runs, not when the field is built
            raise FieldStudioError(available())
    if cfg.sdf.reference:  # checked here, not in validate: a run stays meshable after its reference moved
        ref = Path(cfg.sdf.reference).expanduser()
        if not ref.is_file():
            raise FieldStudioError(f"reference mesh not found: {ref} (--reference, [sdf] reference)")
        cfg.sdf.reference = str(ref.resolve())
    if cfg.sdf.loss == "auto":  # see SDFTaskConfig.loss
        cfg.sdf.loss = "l1" if cfg.field.kind == "mlp" else "mape"
    cfg.field = resolve_budget(cfg.field)
    return cfg


def _reads(spec: registry.TaskSpec, path: Path) -> bool:
    return (path.is_dir() and spec.accepts_folders) or registry.suffix_of(path) in spec.suffixes


def _apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Dotted keys (``train.lr``) set on the config, type-checked like a config file's values."""
    data = to_dict(cfg)
    for key, value in overrides.items():
        *tables, name = key.split(".")
        node = data
        for t in tables:
            node = node.setdefault(t, {})
            if not isinstance(node, dict):
                raise FieldStudioError(f"override {key!r}: {t!r} is a value, not a table")
        if value is None:
            node.pop(name, None)
        else:
            node[name] = value
    return from_dict(RunConfig, data, "overrides")


def configure_threads(n: int | None) -> None:
    """Set the process's CPU thread count once (a face's choice, never a job's): ``None`` keeps torch's default."""
    if n:
        import torch

        torch.set_num_threads(int(n))


def warm_up() -> None:
    """Import what a first fit needs (open3d, torch's optimiser machinery, the task modules: about 2 s on 2 cores)
    ahead of time. Faces call it in a background thread while the user looks at the input, so that pressing Fit
    does not wait for imports."""
    import open3d  # noqa: F401  (the SDF oracle and the metrics)
    import torch._dynamo  # noqa: F401  (imported by the first optimiser)

    import fieldstudio.tasks.sdf  # noqa: F401
    import fieldstudio.tasks.slices  # noqa: F401


# ------------------------------------------------------------------------------------------------ events

@dataclass
class Event:
    """What a job reports. ``kind``:

    * ``stage``: a stage begins (``stage`` = prepare | train | mesh | score; ``object`` in runs of several);
    * ``progress``: ``done`` of ``total`` in the stage, ``eta`` seconds left (None when unknown);
    * ``step``: a training step (``step``, ``loss``; ``done``/``total`` = fraction of training, ``eta``);
    * ``note``: something the user should read (``message``), e.g. "compiling the fused CPU kernels";
    * ``object``: in runs of several objects (one per label), an object's status changed: ``object`` (its name),
      ``message`` ("waiting", "done" or "failed: <why>"), ``done`` (its index) of ``total`` objects;
    * in batches (:func:`batch_job`): ``object`` events per item (``message`` running | done | failed: why |
      cancelled, ``detail`` its report row) and ``progress`` over all items (``stage`` batch);
    * ``paused`` / ``resumed``;
    * ``finished`` / ``cancelled`` / ``failed`` (``message`` = the error): the job has ended.
    """

    kind: str
    stage: str = ""
    object: str = ""
    done: float = 0.0
    total: float = 0.0
    eta: float | None = None
    step: int = 0
    loss: float = math.nan
    message: str = ""
    elapsed: float = 0.0  # seconds since the job started
    detail: dict | None = None  # batch ``object`` events: the item's report row


class _StepEvents(Callback):
    """Training steps as ``step`` events, at most 10 per second (and the last one)."""

    def __init__(self, emit):
        self.emit, self.last = emit, 0.0

    def on_step(self, state) -> None:
        now = time.perf_counter()
        if now - self.last < 0.1 and state.progress < 1.0:
            return
        self.last = now
        p = state.progress
        eta = state.elapsed * (1 - p) / p if p > 0 else None
        self.emit("step", stage="train", step=state.step, loss=state.loss, done=p, total=1.0, eta=eta)


class _NoteHandler(logging.Handler):
    """Log records of the job's thread on the "fieldstudio" logger (INFO and up) as ``note`` events."""

    def __init__(self, emit, thread_id: int):
        super().__init__(logging.INFO)
        self.emit_note, self.thread_id = emit, thread_id

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread_id:
            self.emit_note("note", message=record.getMessage())


# ------------------------------------------------------------------------------------------------ jobs

class Job:
    """A unit of work run in stages, with events, cancel, pause and previews. Build with :func:`fit_job` or
    :func:`mesh_job`; run it in this thread (:meth:`run`) or in its own (:meth:`start`, then :meth:`wait`)."""

    def __init__(self, work: Callable[[], Any], callbacks: list[Callback] | None = None):
        self._work = work
        self.callbacks = list(callbacks or [])
        self._listeners: list[Callable[[Event], None]] = []
        self._control = Control(self._emit)
        self._thread: threading.Thread | None = None
        self._t0 = time.perf_counter()
        self.status = "pending"  # running | paused | finished | cancelled | failed
        self.result: Any = None
        self.error: BaseException | None = None

    # -- watching
    def subscribe(self, listener: Callable[[Event], None]) -> "Job":
        self._listeners.append(listener)
        return self

    @property
    def stage(self) -> str:
        return self._control.stage

    def _emit(self, kind: str, **data) -> None:
        if kind in ("paused", "resumed"):
            self.status = "paused" if kind == "paused" else "running"
        event = Event(kind, elapsed=time.perf_counter() - self._t0,
                      object=data.pop("object", "") or self._control.object, **data)
        for listener in self._listeners:
            listener(event)

    # -- running
    def run(self) -> Any:
        """Run to the end in this thread. Returns the result (a FitResult for fits; ``result.cancelled`` tells a
        cancelled fit), or None when cancelled outside training. User errors are raised as FieldStudioError."""
        self.status, self._t0 = "running", time.perf_counter()
        handler = _NoteHandler(self._emit, threading.get_ident())
        log.addHandler(handler)
        level = log.level  # INFO records must reach the handler; the logger is put back as it was afterwards
        if level == logging.NOTSET or level > logging.INFO:
            log.setLevel(logging.INFO)
        try:
            with active(self._control):
                self.result = self._work(self.callbacks + [_StepEvents(self._emit)])
        except Cancelled:
            self.status = "cancelled"
        except BaseException as err:
            self.status, self.error = "failed", err
            self._emit("failed", message=str(err))
            raise
        else:
            stopped = getattr(self.result, "cancelled", False) or getattr(self.result, "interrupted", False)
            self.status = "cancelled" if stopped else "finished"
        finally:
            log.removeHandler(handler)
            log.setLevel(level)
        self._emit(self.status)
        return self.result

    def start(self) -> "Job":
        """Run in a thread of its own; returns at once."""
        def target():
            try:
                self.run()
            except BaseException:  # kept in self.error; wait() re-raises it in the caller's thread
                pass
        self._thread = threading.Thread(target=target, name="fieldstudio-job", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> Any:
        """Wait for a started job. Returns its result, or raises its error; with a ``timeout`` that passes first,
        returns None and the job goes on (check :attr:`done`)."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return None
        if self.error is not None:
            raise self.error
        return self.result

    @property
    def done(self) -> bool:
        return self.status in ("finished", "cancelled", "failed")

    # -- steering (any thread)
    def cancel(self) -> None:
        """Stop within about a second, whatever the stage. Training saves a checkpoint first; a rerun of the same
        request resumes (or meshes again, if training had finished)."""
        self._control.cancel()

    def pause(self) -> None:
        """Pause training between two steps (other stages finish first); paused time does not count."""
        self._control.pause()

    def resume(self) -> None:
        self._control.resume()

    def preview(self, kind: str = "mesh", **options) -> Any:
        """The field as it is now, from another thread, between two training steps (training waits meanwhile):
        ``"mesh"`` (a coarse trimesh in the input's frame; ``resolution``), ``"slice"`` (a dict with an image of
        the field's values on a box plane; ``axis``, ``position``, ``size``), ``"values"`` (the field at
        ``points`` (N, 3) in the input's frame, negative inside); for image runs ``"image"`` (an (h, w, C) float array;
        ``max_side``, or ``crop`` (x, y, w, h input pixels) and ``size`` (w, h)); for NeRF runs ``"view"`` (a dict with
        the render of a camera, see ``fieldstudio.run.preview_view``). None before the field exists."""
        import torch

        from fieldstudio.run import preview_image, preview_mesh, preview_slice, preview_values, preview_view

        makers = {"mesh": preview_mesh, "slice": preview_slice, "values": preview_values, "image": preview_image,
                  "view": preview_view}
        if kind not in makers:
            raise ValueError(f"preview kind {kind!r}; use one of {sorted(makers)}")
        live = self._control.live
        if not live:
            return None
        # The whole preview between two steps, marching cubes included: work beside training's threads on the same
        # cores slows both far more than taking turns (measured: GUI/headless steps/s 0.62 against 0.79).
        with self._control.lock, torch.no_grad():
            if kind == "view":
                options.setdefault("task", live.get("task"))
            return makers[kind](live["model"], live["cfg"], live["frame"], **options)


def fit_job(request: Request | RunConfig, run_dir: str | Path, overwrite: bool = False,
            callbacks: list[Callback] | None = None) -> Job:
    """A job that fits ``request`` into ``run_dir`` (resolved first, so a bad request fails here, not in the job).
    ``callbacks`` are training-loop callbacks (``fieldstudio.train.Callback``) for faces that want them."""
    from fieldstudio.run import fit

    cfg = resolve(request) if isinstance(request, Request) else validate(request)
    job = Job(lambda cbs: fit(cfg, run_dir, cbs, overwrite=overwrite), callbacks)
    job.config = cfg
    return job


def render_job(run_dir: str | Path, out_path: str | Path, **options) -> Job:
    """A job that renders a trained run into ``out_path`` with its task's renderer: pictures
    (``fieldstudio.tasks.image.render_run``: scale, size, crop, error, bits) or NeRF scenes
    (``fieldstudio.tasks.nerf.render_run``: views, orbit, pose, depth). Options left at None are left out; one
    that the run's task does not take is a user error."""
    import inspect

    from fieldstudio.run import run_task

    options = {k: v for k, v in options.items() if v is not None and v is not False}
    spec = registry.get(run_task(run_dir))
    if spec.render is None:
        raise FieldStudioError(f"{run_dir} is a {spec.name} run, which render does not draw; use fieldstudio mesh")
    module = importlib.import_module(f"fieldstudio.tasks.{spec.name}")
    accepted = inspect.signature(module.render_run).parameters
    for key in options:
        if key not in accepted:
            raise FieldStudioError(f"--{key} does not apply to {spec.name} runs; they take "
                                   f"{', '.join('--' + k for k in list(accepted)[2:])}")
    return Job(lambda cbs: spec.render(run_dir, out_path, **options))


def mesh_job(run_dir: str | Path, out_path: str | Path, resolution: int | None = None,
             level: float | None = None, object_name: str | None = None, contour_bound: str | None = None) -> Job:
    """A job that meshes a trained run folder into ``out_path`` (in the input's frame; NeRF runs at the density
    ``level``; a joint multi-label run, its object ``object_name``; cross-sections with ``contour_bound``)."""
    from fieldstudio.run import mesh_from_run

    return Job(lambda cbs: mesh_from_run(run_dir, out_path, resolution, level, object_name, contour_bound))


def batch_job(manifest: str | Path, out_dir: str | Path, executor: str = "local", workers: int | None = None,
              threads: int | None = None, ray_address: str | None = None, gpus: float = 0.0,
              force: bool = False) -> Job:
    """A job that fits every item of ``manifest`` into ``out_dir/<item>/`` (see ``fieldstudio.batch``). The
    manifest is read and checked here: a ``fieldstudio.batch.ManifestError`` lists every problem. The job's result
    is the final report (as ``out_dir/report.json``); cancelling it stops the items in hand (resumable)."""
    from fieldstudio.batch import make_executor, plan_batch, run_batch

    plan = plan_batch(manifest, out_dir, force)
    make_executor(executor, 1, ray_address, gpus)  # a bad choice fails here, not in the job's thread

    def work(cbs):
        from fieldstudio.control import current

        control = current()
        return run_batch(plan, executor, workers, threads, ray_address, gpus, sink=control.sink,
                         should_stop=lambda: control.cancelled)

    job = Job(work)
    job.plan = plan
    return job


__all__ = ["Request", "resolve", "Job", "Event", "fit_job", "mesh_job", "render_job", "batch_job",
           "configure_threads",
           "warm_up",
           "DEFAULT_STEPS"]
