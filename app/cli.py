"""cli.py
======
The command-line face: ``fieldstudio fit | mesh | render | eval | slice | batch | demo | gui``. A thin layer over ``fieldstudio.api``: options become a
``Request``, the job's events become progress bars, Ctrl-C cancels the job (resumable).

User errors (``FieldStudioError``) print one line and exit 2, without a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fieldstudio.errors import FieldStudioError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Turn sparse observations into neural fields and meshes.")
console = Console(stderr=True, soft_wrap=True)  # messages stay one line, whatever the width
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
STAGE_TITLES = {"prepare": "preparing", "train": "training", "mesh": "meshing", "render": "rendering",
                "score": "scoring"}


class JobProgress:
    """A job's events as rich progress bars: one per stage (and object), with ETA; training shows step and loss;
    notes (e.g. the first kernel build) print as lines."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.bars: dict[tuple[str, str], int] = {}
        self.open = None  # the bar of the stage running now

    def __call__(self, e) -> None:
        key = (e.stage, e.object)
        if e.kind == "note":
            self.progress.console.print(f"[cyan]note:[/cyan] {escape(e.message)}", highlight=False)
        elif e.kind == "stage":
            self._close()
            title = STAGE_TITLES.get(e.stage, e.stage) + (f" {e.object}" if e.object else "")
            self.bars[key] = self.progress.add_task(title, total=None, loss="")
            self.open = self.bars[key]
        elif e.kind in ("progress", "step") and key in self.bars:
            loss = f"step {e.step}  loss {e.loss:.4g}" if e.kind == "step" else None
            self.progress.update(self.bars[key], total=e.total or None, completed=e.done,
                                 **({"loss": loss} if loss else {}))
        elif e.kind == "paused":
            self.progress.console.print("paused")
        elif e.kind == "finished":
            self._close()

    def _close(self) -> None:
        """The stage running so far has ended: its bar stops its clock (at 100 % when it had no count)."""
        if self.open is None:
            return
        bar = self.progress.tasks[[t.id for t in self.progress.tasks].index(self.open)]
        if bar.total is None:
            self.progress.update(self.open, total=1, completed=1)
        self.progress.stop_task(self.open)
        self.open = None


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    TextColumn("{task.fields[loss]}"), console=console, transient=False)


def _run_job(job):
    """Run a job in its own thread with progress bars; Ctrl-C cancels it (a fit keeps a resumable checkpoint)."""
    with _progress() as progress:
        job.subscribe(JobProgress(progress)).start()
        try:
            while job.wait(0.2) is None and not job.done:
                pass
        except KeyboardInterrupt:
            console.print("[yellow]stopping (Ctrl-C): saving what can be resumed ...[/yellow]")
            job.cancel()
            job.wait()
    return job.result


def _run_fit(request, run_dir: Path, overwrite: bool) -> dict:
    from fieldstudio.api import configure_threads, fit_job

    job = fit_job(request, run_dir, overwrite=overwrite)
    configure_threads(job.config.train.threads)
    result = _run_job(job)
    if result is not None and result.resumed:
        console.print(f"resumed the unfinished run in {run_dir}")
    if result is None or not result.finished:
        where = f"at step {result.steps}; checkpoint saved in {run_dir}" if result is not None and result.steps \
            else f"before training finished; {run_dir} is kept"
        console.print(f"[yellow]stopped {where}. Run the same command again to resume.[/yellow]")
        raise typer.Exit(EXIT_INTERRUPTED)
    m = result.metrics
    if result.objects:
        console.print(f"[green]done[/green] in {m['total_seconds']:.1f} s: {len(result.objects)} objects")
        for row in m["objects"]:
            console.print(f"  {row['name']:12s} {row['mesh_file']}  ({row['steps']} steps, "
                          f"{row['mesh']['n_faces']:,} faces, watertight {row['mesh']['watertight']})")
        for note in m["notes"]:
            console.print(f"  [yellow]{escape(note)}[/yellow]")
        console.print(f"  metrics  {result.files['metrics']}")
        return m
    compiling = f"{m['compile_seconds']:.0f} s of it compiling the kernels, once; " if m.get("compile_seconds") else ""
    console.print(f"[green]done[/green] in {m['total_seconds']:.1f} s ({compiling}{m['steps']} steps, "
                  f"{m['params']:,} parameters; training ended by {m['ended_by'].replace('_', ' ')})")
    if "views" in m:  # a NeRF scene: its held-out views
        if "psnr" in m:
            console.print(f"  {m['split']} views: mean PSNR {m['psnr']:.2f} dB (lowest {m['psnr_min']:.2f})   "
                          f"SSIM {m['ssim']:.4f}   ({len(m['views'])} views)")
        for name, path in result.files.items():
            console.print(f"  {name:14s} {path}")
        return m
    if "psnr" in m:  # a picture
        console.print(f"  PSNR {m['psnr']:.2f} dB   SSIM {m['ssim']:.4f}   largest error {m['max_abs_error']:.3f}")
        for name, path in result.files.items():
            console.print(f"  {name:14s} {path}")
        return m
    mesh = m["mesh"]
    if "iou" in m:  # scored against the input mesh
        console.print(f"  IoU {m['iou']:.4f}   Chamfer-L1 {m['chamfer_l1']:.2e}   Hausdorff {m['hausdorff']:.2e}   "
                      f"NAE {m['nae_deg']:.2f} deg   watertight {mesh['watertight']}")
    else:
        console.print(f"  mesh: {mesh['n_faces']:,} faces, watertight {mesh['watertight']}, "
                      f"Euler number {mesh['euler_number']}")
    if "sample_l1" in m:  # signed distance inputs: against their own samples
        agree = f"; signs agree at {100 * m['sign_agreement']:.2f} %" if "sign_agreement" in m else ""
        console.print(f"  against the input's samples: mean distance error {m['sample_l1']:.3g} "
                      f"{m['sample_units'].split(' (')[0]} ({m['sample_l1_rel']:.2e} of the diagonal){agree}")
    if "volume_ml" in m:  # medical inputs: patient mm
        line = f"  volume {m['volume_ml']:.1f} ml, area {m['area_mm2'] / 100:.1f} cm², frame {m['world_frame']} mm"
        if "dice" in m:
            line += f"; against the full mask: Dice {m['dice']:.4f}, HD95 {m['hd95_mm']:.2f} mm"
        console.print(line)
    for name, path in result.files.items():
        console.print(f"  {name:8s} {path}")
    return m


def _version(value: bool) -> None:
    if value:
        import fieldstudio

        print(f"fieldstudio {fieldstudio.__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Turn sparse observations into neural fields and meshes."""


@app.command()
def fit(
    input: Path = typer.Argument(..., help="Input: a picture (.png .jpg .tif .exr .bmp .webp .gif; 8/16-bit or "
                                "float, grey/RGB/RGBA), a mesh (.obj .ply .stl .off .glb), cross-sections (.csl), "
                                "a label map (.nii .nii.gz .nrrd, a DICOM SEG .dcm, or a DICOM series folder), "
                                "an RTSTRUCT (.dcm), a NeRF scene folder (transforms_train.json or transforms.json), or signed distances, negative inside, in the input's units: a "
                                "grid .npy (origin 0, spacing 1) or .npz (sdf indexed i,j,k along x,y,z; origin, "
                                "spacing), a float .nii/.nii.gz (mm), samples .npz (points, sdf, normals)."),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (created; an unfinished run there resumes)."),
    task: str = typer.Option("auto", help="auto (from the input) | sdf | slices | image | nerf"),
    field: Optional[str] = typer.Option(None, help="hybrid (grid + adaptive RBF) | neurbf (RBF only) | grid | mlp | "
                                        "orex | voxels (NeRF: density + RGB voxels)"),
    params: Optional[int] = typer.Option(None, help="Total parameter budget (default: 450,000 for meshes, 40,000 "
                                         "for cross-sections; pictures: 10 % of the pixel values W x H x C, within "
                                         "20,000..2,000,000; NeRF scenes: 10,000,000)."),
    steps: Optional[int] = typer.Option(None, help="Maximum training steps."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Wall-clock seconds for the whole fit."),
    resolution: Optional[int] = typer.Option(None, help="Marching-cubes grid resolution (default 512 for signed distances, 256 for the other shapes; with a small --time-budget the default steps down to 384 or 256)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
    labels: Optional[str] = typer.Option(None, help="Multi-label cross-sections: each (one mesh per label, the "
                                         "default), union (one mesh), or the labels to reconstruct, e.g. 1,4."),
    multi_label: Optional[str] = typer.Option(None, "--multi-label", help="How several labels are fitted: joint "
                                              "(one field for all, trained once, labels never overlap; the "
                                              "default) or separate (one field per label, one after another)."),
    every: Optional[int] = typer.Option(None, help="Label maps: keep every K-th slice along the acquisition axis "
                                        "(default 1: all acquired slices)."),
    offset: Optional[int] = typer.Option(None, help="Label maps: index of the first kept slice (0..K-1)."),
    planes: Optional[str] = typer.Option(None, help="Label maps: plane families instead of --every, e.g. "
                                         "axial:6,sagittal:6,coronal:6; an oblique family is a world normal "
                                         "x/y/z and a count, e.g. 1/0/1:6."),
    roi: Optional[str] = typer.Option(None, help="RTSTRUCT ROI or DICOM SEG segment names to reconstruct, e.g. "
                                      "'Heart,Lt Lung'."),
    reference: Optional[Path] = typer.Option(None, help="Signed distance inputs: a mesh in the input's frame to "
                                             "score the result against (IoU, Chamfer-L1, ...)."),
    downscale: Optional[int] = typer.Option(None, help="NeRF scenes: train on pictures area-averaged by N "
                                            "(e.g. 4: 400 x 400 -> 100 x 100)."),
    config: Optional[Path] = typer.Option(None, help="TOML config; command-line options override it."),
    overwrite: bool = typer.Option(False, help="Replace a finished or unfinished run in the output folder."),
) -> None:
    """Fit a neural field to INPUT and write config.toml, checkpoint.pt, metrics.json and mesh.ply (pictures:
    reconstruction.png, error.png, PSNR and SSIM in metrics.json)."""
    from fieldstudio.api import Request

    request = Request(input, task=task, field=field, params=params, steps=steps, time_budget=time_budget,
                      resolution=resolution, seed=seed, labels=labels, multi_label=multi_label, every=every,
                      offset=offset, planes=planes, roi=roi, reference=reference, config=config, downscale=downscale)
    _run_fit(request, output, overwrite)


@app.command()
def mesh(
    run_dir: Path = typer.Argument(..., help="A run folder written by `fieldstudio fit`."),
    output: Path = typer.Option(..., "-o", "--output", help="Mesh file: .ply .obj .stl or .glb."),
    resolution: Optional[int] = typer.Option(None, help="Marching-cubes resolution (default: the run's)."),
    level: Optional[float] = typer.Option(None, help="NeRF runs: the density (per world unit) where the surface "
                                          "is cut (default 10; higher: tighter)."),
    object_name: Optional[str] = typer.Option(None, "--object", help="Runs of several labels fitted as one field: "
                                              "the object to mesh (its folder name in the run folder)."),
    contour_bound: Optional[str] = typer.Option(None, help="Cross-section runs: off, inside (the mesh holds what "
                                                "neighbouring parallel contours decide is inside) or both (and "
                                                "leaves out what they decide is outside). Default: the run's."),
) -> None:
    """Extract a mesh from a trained run, in the input's coordinate frame."""
    from fieldstudio.api import mesh_job

    done = _run_job(mesh_job(run_dir, output, resolution, level, object_name, contour_bound))
    if done is None:
        raise typer.Exit(EXIT_INTERRUPTED)
    path, report = done
    console.print(f"wrote {path}: {report['n_vertices']:,} vertices, {report['n_faces']:,} faces, "
                  f"watertight {report['watertight']}")


@app.command()
def render(
    run_dir: Path = typer.Argument(..., help="An image or NeRF run folder written by `fieldstudio fit`."),
    output: Path = typer.Option(..., "-o", "--output", help="Picture to write: .png .tif .exr .jpg .bmp .webp "
                                "(NeRF: a folder for --views, a video .mp4/.gif for --orbit, a picture for one "
                                "--pose)."),
    scale: Optional[float] = typer.Option(None, help="Output size as a multiple of the input's (or of the crop's); "
                                          "default 1."),
    size: Optional[str] = typer.Option(None, help="Output size WIDTHxHEIGHT in pixels, instead of --scale (NeRF: of "
                                       "--orbit and --pose frames)."),
    crop: Optional[str] = typer.Option(None, help="Part of the input to render: x,y,w,h in input pixels."),
    error: bool = typer.Option(False, "--error", help="Also write an error heat map, OUTPUT_error.png (at the "
                               "input's resolution; black = exact, white = the 99th percentile of the error)."),
    bits: Optional[int] = typer.Option(None, help="8, 16 or 32 (float); default: as the input was."),
    views: Optional[str] = typer.Option(None, help="NeRF: render a split's cameras (test, val, train) into the "
                                        "OUTPUT folder, one PNG per view named after its picture, with PSNR and "
                                        "SSIM in OUTPUT/metrics.json (the default: test)."),
    orbit: Optional[int] = typer.Option(None, help="NeRF: a video of N frames circling the scene at the training "
                                        "cameras' distance and height."),
    pose: Optional[Path] = typer.Option(None, help="NeRF: cameras from a json (transform_matrix, or a frames "
                                        "list as in transforms.json; camera_angle_x or fl_x, w, h optional)."),
    depth: bool = typer.Option(False, "--depth", help="NeRF: also write NAME_depth.png (near = bright)."),
) -> None:
    """Render a trained run: a picture's reconstruction (at any scale, or a crop of it, in the input's bit depth),
    or a NeRF's views, an orbit video or any camera."""
    from fieldstudio.api import render_job

    done = _run_job(render_job(run_dir, output, scale=scale, size=size, crop=crop, error=error, bits=bits,
                               views=views, orbit=orbit, pose=None if pose is None else str(pose), depth=depth))
    if done is None:
        raise typer.Exit(EXIT_INTERRUPTED)
    if "video" in done:
        console.print(f"wrote {done['video']} ({done['frames']} frames of {done['width']} x {done['height']})")
        return
    if "folder" in done:
        scores = f"; mean PSNR {done['psnr']:.2f} dB, SSIM {done['ssim']:.4f}" if done.get("psnr") else ""
        console.print(f"wrote {done['views']} views into {done['folder']}{scores} ({done['metrics']})")
        return
    if "files" in done:
        for path in done["files"]:
            console.print(f"wrote {path}")
        return
    console.print(f"wrote {done['image']} ({done['width']} x {done['height']} pixels)")
    if "error_map" in done:
        console.print(f"wrote {done['error_map']} (white = {done['error_map_scale']:.4f}; "
                      f"PSNR {done['psnr']:.2f} dB)")


@app.command(name="eval")
def evaluate(
    pred: Path = typer.Argument(..., help="Predicted mesh."),
    ref: Path = typer.Argument(..., help="Reference mesh (distances are divided by its bounding-box diagonal)."),
    samples: int = typer.Option(200_000, help="Surface samples per mesh."),
    seed: int = typer.Option(0),
) -> None:
    """Print IoU, Chamfer-L1, Hausdorff, HD95 and normal angular error as JSON."""
    from fieldstudio.data.meshes import load_mesh
    from fieldstudio.metrics import mesh_metrics
    from fieldstudio.io import json_ready

    p, _ = load_mesh(pred)
    r, _ = load_mesh(ref)
    print(json.dumps(json_ready(mesh_metrics(p, r, n_samples=samples, seed=seed)), indent=2))


@app.command()
def demo(
    output: Path = typer.Option(Path("demo_run"), "-o", "--output", help="Run folder for the demo."),
) -> None:
    """Fit the built-in trefoil-knot shape (under a minute on 2 CPU cores) and print where the files are."""
    from fieldstudio.api import Request
    from fieldstudio.resources import assets

    request = Request(assets() / "trefoil.ply", field="hybrid", params=150_000, steps=1500, time_budget=45.0,
                      resolution=160, overrides={"train.batch_size": 8192, "sdf.pool_size": 400_000})
    console.print(f"fitting {request.input} -> {output}")
    _run_fit(request, output, overwrite=True)


@app.command(name="slice")
def slice_command(
    mesh_file: Path = typer.Argument(..., metavar="MESH", help="Closed mesh to cut (.obj .ply .stl .off .glb)."),
    output: Path = typer.Option(..., "-o", "--output", help="Cross-section file to write (.csl)."),
    planes: int = typer.Option(15, "--planes", help="Number of cutting planes (planes that miss are dropped)."),
    layout: str = typer.Option("parallel", help="parallel | orthogonal | random"),
    axis: str = typer.Option("z", help="x | y | z: normal of the parallel planes (orthogonal: extra planes)."),
    seed: int = typer.Option(0, help="Random seed of the random layout."),
) -> None:
    """Cut MESH with planes and write its cross-sections as a CSL file (OReX's input format)."""
    from fieldstudio.data.cross_sections import write_csl
    from fieldstudio.data.meshes import load_mesh
    from fieldstudio.data.slicing import slice_mesh

    mesh_data, _ = load_mesh(mesh_file)
    cs = slice_mesh(mesh_data, planes, layout, axis=axis, seed=seed)
    path = write_csl(cs, output)
    s = cs.summary()
    console.print(f"wrote {path}: {s['planes']} planes, {s['loops']} loops, {s['holes']} holes", highlight=False)


@app.command()
def batch(
    manifest: Path = typer.Argument(..., help="A TOML manifest (inputs = [paths, globs], fit options as defaults, "
                                    "[[items]] tables per input) or a CSV list (a header row: input, name, fit "
                                    "options)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder: one run folder per item, report.json "
                                "and report.html."),
    workers: Optional[int] = typer.Option(None, help="Local executor: items at once (default: one per 2 cores)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads per item (default: the cores shared among the "
                                          "workers; Ray: CPUs each task asks for)."),
    executor: str = typer.Option("local", help="local (a process pool on this machine) | ray (pip install "
                                 "'fieldstudio[distributed]')."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="A Ray cluster to join (auto, or "
                                              "ray://HOST:10001); default: a Ray instance on this machine."),
    gpus: float = typer.Option(0.0, help="Ray: GPUs per item (e.g. 0.5: two items share a GPU)."),
    force: bool = typer.Option(False, "--force", help="Redo items whose run finished in an earlier batch."),
    check: bool = typer.Option(False, "--check", help="Check the manifest and list the items and what their "
                               "folders hold; run nothing."),
) -> None:
    """Fit every input of MANIFEST into OUTPUT/<name>/: finished items are skipped, interrupted ones resume, failed
    ones are reported (exit status 1) while the rest go on. Ctrl-C stops within seconds; run it again to go on."""
    from fieldstudio.api import batch_job
    from fieldstudio.batch import ManifestError, split_cores
    from fieldstudio.batch.report import shown_path

    try:
        job = batch_job(manifest, output, executor, workers, threads, ray_address, gpus, force)
    except ManifestError as err:
        for line in err.problems:
            console.print(f"[red]error:[/red] {escape(line)}", highlight=False)
        raise typer.Exit(EXIT_USER_ERROR)
    plan = job.plan
    states = [plan.states[it.name] for it in plan.items]
    todo = plan.to_run()
    n_workers, n_threads = split_cores(len(todo), workers, threads)
    plural = lambda n, word: f"{n:g} {word}{'s' if n != 1 else ''}"  # noqa: E731
    how = (f"{plural(n_workers, 'worker')} x {plural(n_threads, 'thread')}" if executor == "local"
           else f"Ray tasks of {plural(n_threads, 'CPU')}" + (f" and {plural(gpus, 'GPU')}" if gpus else ""))
    skipped = 0 if force else states.count("done")
    console.print(f"batch of {len(states)} items into {plan.out_dir}: {len(todo)} to run "
                  f"({states.count('partial')} to resume), {skipped} finished earlier; {how}", highlight=False)
    if check:
        for it, state in zip(plan.items, states):
            what = {"done": "finished" + (" (redone: --force)" if force else ""), "partial": "to resume",
                    "new": "to run"}[state]
            opts = ", ".join(f"{k}={v}" for k, v in {**it.options, **it.overrides}.items())
            where = shown_path(str(it.input), plan.manifest.path.parent)
            console.print(f"  {it.name:24s} {what:10s} {where}" + (f"  ({opts})" if opts else ""),
                          highlight=False)
        return
    report = _run_batch_job(job)
    c = report.get("counts", {})
    failed = [r for r in report["items"] if r["status"] == "failed"]
    console.print(f"{c.get('done', 0)} done, {len(failed)} failed of {len(report['items'])} items in "
                  f"{report['wall_seconds']:.0f} s; report: {plan.out_dir / 'report.html'}", highlight=False)
    if report["state"] == "stopped":
        console.print("[yellow]stopped: run the same command again to go on (finished items are kept, "
                      "interrupted ones resume).[/yellow]")
        raise typer.Exit(EXIT_INTERRUPTED)
    if failed:
        raise typer.Exit(1)


def _item_line(row: dict) -> str:
    """One line for a finished item: status, name, time, steps, headline metrics (or the error)."""
    from fieldstudio.batch.item import HEADLINE

    colour = {"done": "green", "failed": "red", "cancelled": "yellow"}.get(row["status"], "white")
    head = f"[{colour}]{row['status']:9s}[/{colour}] {escape(row['name']):24s}"
    if row["status"] == "failed":
        return f"{head} {escape(str(row['error']))}"
    seconds = f"{row['seconds']:.1f} s" if row.get("seconds") is not None else ""
    steps = f"{row['steps']:,} steps" if row.get("steps") else ""
    titles = dict(HEADLINE)
    figures = "  ".join(f"{titles[k]} {v:.4g}" for k, v in row.get("metrics", {}).items() if k in titles)
    extra = " (finished earlier)" if row.get("reused") else ""
    return f"{head} {seconds:>9s} {steps:>12s}  {figures}{extra}"


def _run_batch_job(job) -> dict:
    """A batch with one overall bar (items, with ETA) and a line per item as it ends; Ctrl-C stops it."""
    import signal

    def listen(e) -> None:
        if e.kind == "object" and e.message != "running":
            progress.console.print(_item_line(e.detail), highlight=False)
        elif e.kind == "progress" and e.stage == "batch":
            progress.update(bar, total=e.total or 1, completed=e.done)

    # `kill PID` stops a batch as Ctrl-C does: the items in hand save their checkpoints
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with _progress() as progress:
            bar = progress.add_task("batch", total=None, loss="")
            job.subscribe(listen).start()
            try:
                while job.wait(0.2) is None and not job.done:
                    pass
            except KeyboardInterrupt:
                progress.console.print("[yellow]stopping: the items in hand save their checkpoints ...[/yellow]")
                job.cancel()
                while not job.done:  # polled: a join that a signal interrupted can report a live thread as gone
                    time.sleep(0.1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return job.wait()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def gui(ctx: typer.Context) -> None:
    """Open the window (optional INPUT; --fit, -o RUN, the fit options, --background CT, --screenshot out.png)."""
    from fieldstudio.app.gui import main as gui_main

    raise typer.Exit(gui_main(list(ctx.args)))


def main() -> None:
    try:
        app()
    except FieldStudioError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)  # "[train] lr" is not markup
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
