"""The one API under every face: requests resolve to configs once; jobs report stages, cancel in every stage,
pause, and preview while training."""

import json
import threading
import time

import numpy as np
import pytest
import torch

from fieldstudio.api import DEFAULT_STEPS, Request, fit_job, resolve
from fieldstudio.config import save_toml
from fieldstudio.errors import FieldStudioError
from fieldstudio.train import load_checkpoint

SMALL = {"sdf.pool_size": 60_000, "sdf.kmeans_points": 20_000, "train.batch_size": 2048}


def small_request(path, **kw) -> Request:
    kw.setdefault("params", 20_000)
    kw.setdefault("resolution", 40)
    return Request(path, overrides={**SMALL, **kw.pop("overrides", {})}, **kw)


# ------------------------------------------------------------------------------------------------ resolving

def test_task_defaults_come_from_the_registry(sphere_file, tmp_path):
    from fieldstudio.data.cross_sections import write_csl
    from fieldstudio.data.slicing import slice_mesh
    import trimesh

    cfg = resolve(Request(sphere_file))
    assert (cfg.task, cfg.field.kind, cfg.field.params, cfg.train.steps) == ("sdf", "hybrid", 450_000, DEFAULT_STEPS)
    assert cfg.sdf.loss == "mape" and isinstance(cfg.field.rbf.n_rbf, int)  # resolved, concrete
    csl = tmp_path / "s.csl"
    write_csl(slice_mesh(trimesh.creation.icosphere(radius=10.0), 6, "parallel"), csl)
    cfg = resolve(Request(csl))
    assert (cfg.task, cfg.field.kind, cfg.field.params) == ("slices", "mlp", 40_000)
    assert resolve(Request(sphere_file, field="mlp")).sdf.loss == "l1"
    # Marching cubes: finer for signed distances (their detail), unless a file or the request sets it.
    assert cfg.mesh.resolution == 256 and resolve(Request(sphere_file)).mesh.resolution == 512
    path = tmp_path / "m.toml"
    path.write_text("[mesh]\nresolution = 200\n")
    assert resolve(Request(sphere_file, config=path)).mesh.resolution == 200
    assert resolve(Request(sphere_file, config=path, resolution=96)).mesh.resolution == 96
    # Only the task's default may step down for a small time budget (run.py: _BudgetAfterSetup).
    assert resolve(Request(sphere_file)).mesh.auto_resolution
    assert not resolve(Request(sphere_file, config=path)).mesh.auto_resolution
    assert not resolve(Request(sphere_file, resolution=512)).mesh.auto_resolution
    assert not resolve(Request(sphere_file, overrides={"mesh.resolution": 512})).mesh.auto_resolution


def test_precedence_defaults_file_request_overrides(sphere_file, tmp_path):
    base = resolve(Request(sphere_file, field="grid", params=50_000, steps=300))
    path = tmp_path / "c.toml"
    save_toml(base, path)
    cfg = resolve(Request(sphere_file, config=path))
    assert cfg.field == base.field and cfg.train.steps == 300  # the file's field and steps
    cfg = resolve(Request(sphere_file, config=path, steps=40, overrides={"train.lr": 0.01}))
    assert cfg.field.kind == "grid" and cfg.train.steps == 40 and cfg.train.lr == 0.01
    cfg = resolve(Request(sphere_file, config=path, field="mlp"))  # another field: its preset at the file's size
    assert cfg.field.kind == "mlp" and cfg.field.params == 50_000


def test_time_budget_alone_means_no_step_limit(sphere_file):
    assert resolve(Request(sphere_file, time_budget=60)).train.steps is None
    cfg = resolve(Request(sphere_file, time_budget=60, steps=500))
    assert (cfg.train.steps, cfg.train.time_budget) == (500, 60)
    assert resolve(Request(sphere_file, steps=7)).train.time_budget is None


@pytest.mark.parametrize("request_kw, message", [
    ({"task": "movie"}, "task 'movie' is not available"),
    ({"task": "nerf"}, "task nerf reads NeRF scenes"),
    ({"task": "image"}, "task image reads pictures"),
    ({"task": "slices"}, "task slices reads"),
    ({"overrides": {"train.steps": "abc"}}, "steps"),
    ({"overrides": {"train.lr": -1.0}}, "lr"),
    ({"field": "nerf"}, "nerf"),
])
def test_bad_requests_are_user_errors(sphere_file, request_kw, message):
    with pytest.raises(FieldStudioError, match=message):
        resolve(Request(sphere_file, **request_kw))


# ------------------------------------------------------------------------------------------------ jobs

class Watcher:
    """Collects a job's events; ``when(kind, stage)`` returns an Event set when such an event arrives."""

    def __init__(self):
        self.events, self.flags = [], []

    def __call__(self, e):
        self.events.append(e)
        for kind, stage, flag in self.flags:
            if e.kind == kind and (stage is None or e.stage == stage):
                flag.set()

    def when(self, kind, stage=None) -> threading.Event:
        flag = threading.Event()
        self.flags.append((kind, stage, flag))
        return flag


def _cancel_when(job, flag, delay=0.0) -> float:
    """Start ``job``, cancel it when ``flag`` is set (after ``delay``), return seconds from cancel to its end."""
    job.start()
    assert flag.wait(60), "the stage never came"
    time.sleep(delay)
    t = time.perf_counter()
    job.cancel()
    job.wait(30)
    assert job.done
    return time.perf_counter() - t


def test_stages_progress_and_eta_are_reported(sphere_file, tmp_path):
    w = Watcher()
    job = fit_job(small_request(sphere_file, steps=60), tmp_path / "run").subscribe(w)
    result = job.run()
    assert result.finished and job.status == "finished"
    stages = [e.stage for e in w.events if e.kind == "stage"]
    assert stages == ["prepare", "train", "mesh", "score"]
    steps = [e for e in w.events if e.kind == "step"]
    assert steps and steps[-1].step == 60 and steps[-1].done == pytest.approx(1.0)
    assert any(e.eta is not None and e.eta > 0 for e in steps[:-1])
    mesh_progress = [e for e in w.events if e.kind == "progress" and e.stage == "mesh"]
    assert mesh_progress and mesh_progress[-1].done == mesh_progress[-1].total
    assert w.events[-1].kind == "finished"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["ended_by"] == "steps"


def test_cancel_during_setup_training_and_meshing_then_resume(sphere_file, tmp_path):
    run = tmp_path / "run"
    request = small_request(sphere_file, steps=150, overrides={"sdf.pool_size": 400_000})

    # set-up: the SDF sample pool of 400k points takes seconds to label
    w = Watcher()
    job = fit_job(request, run).subscribe(w)
    assert _cancel_when(job, w.when("stage", "prepare"), delay=0.3) < 2.0
    assert job.status == "cancelled" and not (run / "metrics.json").exists()
    assert [e.kind for e in w.events][-1] == "cancelled"

    # training: a checkpoint is saved at the step boundary
    w = Watcher()
    job = fit_job(request, run).subscribe(w)
    assert _cancel_when(job, w.when("step")) < 2.0
    assert job.result.cancelled and job.result.ended_by == "cancelled"
    stopped_at = load_checkpoint(run / "checkpoint.pt")["step"]
    assert 0 < stopped_at < 150

    # meshing: training is done and saved, no mesh or metrics yet
    w = Watcher()
    job = fit_job(request, run).subscribe(w)
    assert _cancel_when(job, w.when("stage", "mesh")) < 2.0
    assert job.status == "cancelled"
    assert load_checkpoint(run / "checkpoint.pt")["done"] and not (run / "metrics.json").exists()

    # the rerun meshes and scores without training again
    w = Watcher()
    result = fit_job(request, run).subscribe(w).run()
    assert result.finished and result.resumed and result.steps == 150
    assert not [e for e in w.events if e.kind == "step"]
    assert (run / "mesh.ply").exists() and json.loads((run / "metrics.json").read_text())["steps"] == 150


def test_pause_and_resume_end_bit_identical(sphere_file, tmp_path):
    request = small_request(sphere_file, steps=80, field="grid")
    fit_job(request, tmp_path / "a").run()

    w = Watcher()
    job = fit_job(request, tmp_path / "b").subscribe(w)
    job.start()
    assert w.when("step").wait(60)
    job.pause()
    time.sleep(0.5)
    assert job.status == "paused"
    paused_at = max(e.step for e in w.events if e.kind == "step")
    time.sleep(0.3)
    assert max(e.step for e in w.events if e.kind == "step") == paused_at  # nothing trains while paused
    job.resume()
    result = job.wait(120)
    assert result.finished
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt")["field"] for d in ("a", "b"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["train_seconds"] < metrics["total_seconds"]  # paused time is not training time


def test_preview_from_another_thread_during_training(sphere_file, tmp_path):
    request = small_request(sphere_file, steps=10**6, time_budget=8.0, field="grid")
    w = Watcher()
    job = fit_job(request, tmp_path / "run").subscribe(w)
    assert job.preview("mesh") is None  # nothing to look at before the field exists
    job.start()
    assert w.when("step").wait(60)
    time.sleep(1.0)
    image = job.preview("slice", axis=2, size=32)
    mesh = job.preview("mesh", resolution=24)
    assert image["values"].shape == (32, 32) and np.isfinite(image["values"]).all()
    assert image["values"].min() < 0 < image["values"].max()  # the sphere's inside and outside
    assert len(mesh.faces) > 0 and np.allclose(mesh.bounds.mean(axis=0), [5, -3, 40], atol=5)
    centre = mesh.bounds.mean(axis=0)
    far = centre + [1e4, 0, 0]  # outside the field's box: outside by definition
    values = job.preview("values", points=np.array([centre, far]))
    assert values.dtype == np.float32 and values[0] < 0 < values[1]
    job.cancel()
    job.wait(30)
    assert job.status == "cancelled"


def test_time_budget_trains_until_it_runs_out(sphere_file, tmp_path):
    result = fit_job(small_request(sphere_file, time_budget=10.0, field="grid"), tmp_path / "run").run()
    m = result.metrics
    assert m["ended_by"] == "time_budget" and m["limits"]["steps"] is None
    assert 7.5 < m["total_seconds"] < 11.5
    assert m["steps"] > 100


def test_no_process_wide_side_effects(sphere_file, tmp_path):
    torch.manual_seed(123)
    before = torch.rand(3)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    fit_job(small_request(sphere_file, steps=60, overrides={"train.threads": 1}), tmp_path / "run").run()
    assert torch.equal(torch.rand(3), before) and torch.get_num_threads() == threads


def test_stale_temporaries_in_the_run_folder_are_removed(sphere_file, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stale = run / ".mesh.ply.k3j2h1.tmp.ply"
    stale.write_bytes(b"half a mesh")
    fit_job(small_request(sphere_file, steps=60), run).run()
    assert not stale.exists()


def test_overwrite_forgets_the_finished_run(sphere_file, tmp_path):
    run = tmp_path / "run"
    fit_job(small_request(sphere_file, steps=20), run).run()
    w = Watcher()
    job = fit_job(small_request(sphere_file, steps=500), run, overwrite=True).subscribe(w)
    _cancel_when(job, w.when("step"))
    assert not (run / "metrics.json").exists() and not (run / "mesh.ply").exists()
    result = fit_job(small_request(sphere_file, steps=500), run).run()  # resumes the new run
    assert result.resumed and result.finished and result.steps == 500


def test_log_records_of_the_job_become_notes(tmp_path):
    """e.g. "compiling the fused CPU kernels": logged by the library, shown by every face."""
    import io
    import logging

    from rich.console import Console
    from rich.progress import Progress

    from fieldstudio.api import Job
    from fieldstudio.app.cli import JobProgress

    w = Watcher()
    Job(lambda callbacks: logging.getLogger("fieldstudio").info("compiling the fused %s kernels", "CPU")) \
        .subscribe(w).run()
    notes = [e.message for e in w.events if e.kind == "note"]
    assert notes == ["compiling the fused CPU kernels"]
    out = io.StringIO()
    with Progress(console=Console(file=out, width=200)) as progress:
        listener = JobProgress(progress)
        for e in w.events:
            listener(e)
    assert "note: compiling the fused CPU kernels" in out.getvalue()


def test_a_field_without_a_zero_level_yet_previews_its_lowest_part():
    """An occupancy field starts everywhere outside: its preview is the level set that puts the lowest 10 % of the
    box inside (the shape it is forming), and says which level that is."""
    import torch

    from fieldstudio.api import Request, resolve
    from fieldstudio.data.meshes import BoxFrame
    from fieldstudio.run import preview_mesh

    from fieldstudio.resources import assets

    class Blob(torch.nn.Module):  # positive everywhere: lowest around (0.3, 0, 0)
        def __init__(self):
            super().__init__()
            self.centre = torch.nn.Parameter(torch.tensor([0.3, 0.0, 0.0]))

        def forward(self, x):
            return 1.0 + ((x - self.centre) ** 2).sum(dim=1, keepdim=True)

    cfg = resolve(Request(assets() / "trefoil.ply", steps=1))
    frame = BoxFrame.fit(np.array([[-1.0, -1, -1], [1, 1, 1]]), extent=1.0)
    mesh = preview_mesh(Blob(), cfg, frame, resolution=32)
    assert len(mesh.faces) > 0 and mesh.metadata["level"] > 1.0
    assert np.allclose(mesh.bounds.mean(axis=0), [0.3, 0, 0], atol=0.1)
    share = mesh.volume / 8.0  # of the box's volume
    assert 0.05 < share < 0.15


def test_sdf_inputs_smooth_their_mesh_unless_a_config_says_otherwise(sphere_file, two_label_csl, tmp_path):
    """SDF fits get three Taubin passes by default, other shapes none; a config's [mesh] smooth_iterations (a run's
    config.toml included) and an override win."""
    assert resolve(Request(sphere_file)).mesh.smooth_iterations == 3
    assert resolve(Request(two_label_csl[0])).mesh.smooth_iterations == 0
    path = tmp_path / "c.toml"
    path.write_text("[mesh]\nsmooth_iterations = 0\n")
    assert resolve(Request(sphere_file, config=path)).mesh.smooth_iterations == 0
    assert resolve(Request(sphere_file, overrides={"mesh.smooth_iterations": 5})).mesh.smooth_iterations == 5


def test_library_previews_work_outside_no_grad():
    """preview_values and preview_slice called directly (not through Job.preview, which wraps them in no_grad) on a
    field with trainable parameters: values, not "Can't call numpy() on Tensor that requires grad"."""
    from fieldstudio.data.meshes import BoxFrame
    from fieldstudio.resources import assets
    from fieldstudio.run import preview_slice, preview_values

    class Ball(torch.nn.Module):  # radius 0.5 about the origin, negative inside
        def __init__(self):
            super().__init__()
            self.radius = torch.nn.Parameter(torch.tensor(0.5))

        def forward(self, x):
            return (x.norm(dim=1, keepdim=True) - self.radius)

    cfg = resolve(Request(assets() / "trefoil.ply", steps=1))
    frame = BoxFrame.fit(np.array([[-1.0, -1, -1], [1, 1, 1]]), extent=1.0)
    values = preview_values(Ball(), cfg, frame, np.array([[0.0, 0, 0], [0.9, 0, 0], [3.0, 0, 0]]))
    assert values[0] < 0 < values[1] and values[2] == 1.0
    image = preview_slice(Ball(), cfg, frame, axis=2, position=0.0, size=16)["values"]
    assert image.shape == (16, 16) and image.min() < 0 < image.max()


def test_field_table_without_kind_refines_the_task_preset(sphere_file, tmp_path):
    # A user tweaking one value of the field keeps the task's field and size, not the dataclass defaults.
    path = tmp_path / "c.toml"
    path.write_text("[field.grid]\nn_levels = 12\n[field.decoder]\nhidden = 32\n")
    preset_cfg = resolve(Request(sphere_file))
    cfg = resolve(Request(sphere_file, config=path))
    assert cfg.field.kind == preset_cfg.field.kind == "hybrid" and cfg.field.params == preset_cfg.field.params
    assert cfg.field.grid.n_levels == 12 and cfg.field.decoder.hidden == 32
    assert cfg.field.grid.n_features == preset_cfg.field.grid.n_features  # the SDF preset's, not the default
    cfg = resolve(Request(sphere_file, config=path, field="grid", params=30_000))
    assert cfg.field.kind == "grid" and cfg.field.params == 30_000 and cfg.field.decoder.hidden == 32
