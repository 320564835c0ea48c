"""cli.py
======
The command-line face: ``fieldstudio fit | mesh | eval | slice | demo``. A thin layer over ``fieldstudio.run``.

User errors (``FieldStudioError``) print one line and exit 2, without a traceback.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fieldstudio.errors import FieldStudioError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Turn sparse observations into neural fields and meshes.")
console = Console(stderr=True, soft_wrap=True)  # messages stay one line, whatever the width
ASSETS = Path(__file__).resolve().parent.parent / "assets"
EXIT_USER_ERROR = 2
# The best field measured per task (docs/benchmarks.md): cross-sections: the hybrid's hash grid is
# unconstrained between planes (IoU 0.37 on a 12-plane torus) where a small Fourier MLP reaches 0.91.
DEFAULT_FIELD = {"sdf": ("hybrid", 450_000), "slices": ("mlp", 40_000)}
EXIT_INTERRUPTED = 130


class RichProgress:
    """Training progress bar with ETA (steps or time budget, whichever ends first) and the current loss."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.task = None
        self.description = "training"

    def on_object(self, name: str, index: int, count: int):
        self.description = f"{name} ({index + 1}/{count})"

    def on_start(self, state):
        self.task = self.progress.add_task(self.description, total=1000, loss="")

    def on_step(self, state):
        if state.step % 5 == 0 or state.step == state.steps:
            self.progress.update(self.task, completed=int(1000 * state.progress),
                                 loss=f"step {state.step}  loss {state.loss:.4g}")

    def on_checkpoint(self, state, path):
        pass

    def on_end(self, state):
        self.progress.update(self.task, completed=1000 if state.done else int(1000 * state.progress))


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    TextColumn("{task.fields[loss]}"), console=console, transient=False)


def _mesh_progress(progress: Progress):
    state = {}

    def update(done: int, total: int) -> None:
        if "task" not in state:
            state["task"] = progress.add_task("meshing", total=total, loss="")
        progress.update(state["task"], completed=done)
    return update


def _run_fit(cfg, run_dir: Path, overwrite: bool) -> dict:
    from fieldstudio.run import fit

    with _progress() as progress:
        result = fit(cfg, run_dir, [RichProgress(progress)], _mesh_progress(progress), overwrite=overwrite)
    if result.resumed:
        console.print(f"resumed the unfinished run in {run_dir}")
    if result.interrupted or not result.metrics:
        console.print(f"[yellow]stopped at step {result.steps}; checkpoint saved in {run_dir}. "
                      "Run the same command again to resume.[/yellow]")
        raise typer.Exit(EXIT_INTERRUPTED)
    m = result.metrics
    if result.objects:
        console.print(f"[green]done[/green] in {m['total_seconds']:.1f} s: {len(result.objects)} objects")
        for row in m["objects"]:
            console.print(f"  {row['name']:12s} {row['mesh_file']}  ({row['steps']} steps, "
                          f"{row['mesh']['n_faces']:,} faces, watertight {row['mesh']['watertight']})")
        for note in m["notes"]:
            console.print(f"  [yellow]{note}[/yellow]")
        console.print(f"  metrics  {result.files['metrics']}")
        return m
    console.print(f"[green]done[/green] in {m['total_seconds']:.1f} s ({m['steps']} steps, {m['params']:,} parameters)")
    mesh = m["mesh"]
    if "iou" in m:  # scored against the input mesh
        console.print(f"  IoU {m['iou']:.4f}   Chamfer-L1 {m['chamfer_l1']:.2e}   Hausdorff {m['hausdorff']:.2e}   "
                      f"NAE {m['nae_deg']:.2f} deg   watertight {mesh['watertight']}")
    else:
        console.print(f"  mesh: {mesh['n_faces']:,} faces, watertight {mesh['watertight']}, "
                      f"Euler number {mesh['euler_number']}")
    if "volume_ml" in m:  # medical inputs: patient mm
        line = f"  volume {m['volume_ml']:.1f} ml, area {m['area_mm2'] / 100:.1f} cm², frame {m['world_frame']} mm"
        if "dice" in m:
            line += f"; against the full mask: Dice {m['dice']:.4f}, HD95 {m['hd95_mm']:.2f} mm"
        console.print(line)
    for name, path in result.files.items():
        console.print(f"  {name:8s} {path}")
    return m


@app.command()
def fit(
    input: Path = typer.Argument(..., help="Input: a mesh (.obj .ply .stl .off .glb), cross-sections (.csl), "
                                "a label map (.nii .nii.gz .nrrd, a DICOM SEG .dcm, or a DICOM series folder) or "
                                "an RTSTRUCT (.dcm)."),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (created; an unfinished run there resumes)."),
    task: str = typer.Option("auto", help="auto | sdf | slices"),
    field: Optional[str] = typer.Option(None, help="hybrid (grid + adaptive RBF) | neurbf (RBF only) | grid | mlp | orex"),
    params: Optional[int] = typer.Option(None, help="Total parameter budget (default: 450,000 for meshes, 40,000 for cross-sections)."),
    steps: Optional[int] = typer.Option(None, help="Maximum training steps."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Wall-clock seconds for the whole fit."),
    resolution: Optional[int] = typer.Option(None, help="Marching-cubes grid resolution (default 256)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
    labels: Optional[str] = typer.Option(None, help="Multi-label cross-sections: each (one mesh per label, the "
                                         "default), union (one mesh), or the labels to reconstruct, e.g. 1,4."),
    every: Optional[int] = typer.Option(None, help="Label maps: keep every K-th slice along the acquisition axis "
                                        "(default 1: all acquired slices)."),
    offset: Optional[int] = typer.Option(None, help="Label maps: index of the first kept slice (0..K-1)."),
    planes: Optional[str] = typer.Option(None, help="Label maps: plane families instead of --every, e.g. "
                                         "axial:6,sagittal:6,coronal:6; an oblique family is a world normal "
                                         "x/y/z and a count, e.g. 1/0/1:6."),
    roi: Optional[str] = typer.Option(None, help="RTSTRUCT ROI or DICOM SEG segment names to reconstruct, e.g. "
                                      "'Heart,Lt Lung'."),
    config: Optional[Path] = typer.Option(None, help="TOML config; command-line options override it."),
    overwrite: bool = typer.Option(False, help="Replace a finished or unfinished run in the output folder."),
) -> None:
    """Fit a neural field to INPUT and write config.toml, checkpoint.pt, metrics.json and mesh.ply."""
    from fieldstudio.config import RunConfig, load_run_config
    from fieldstudio.field import preset, tune_training
    from fieldstudio.run import detect_task

    if not input.exists():
        raise FieldStudioError(f"input file not found: {input}")
    cfg = load_run_config(config) if config else RunConfig()
    cfg.input = str(input.resolve())
    cfg.task = detect_task(input) if task == "auto" else task
    default_kind, default_params = DEFAULT_FIELD[cfg.task]
    # A config without a [field] table gets the task's default field, not the dataclass default.
    config_has_field = bool(config) and "field" in tomllib.loads(config.read_text())
    if not config_has_field:
        cfg.field = preset(field or default_kind, cfg.task, default_params)
    elif field is not None and field != cfg.field.kind:
        cfg.field = preset(field, cfg.task, cfg.field.params or default_params)
    if not config:
        tune_training(cfg.field.kind, cfg.train)
    if params is not None:  # sizes follow the new budget
        cfg.field = preset(cfg.field.kind, cfg.task, params) if not config_has_field else cfg.field
        cfg.field.params = params
        if cfg.field.kind in ("hybrid", "neurbf"):
            cfg.field.rbf.n_rbf = "auto"
    if steps is not None:
        cfg.train.steps = steps
    if time_budget is not None:
        cfg.train.time_budget = time_budget
    if resolution is not None:
        cfg.mesh.resolution = resolution
    if seed is not None:
        cfg.train.seed = seed
    if labels is not None:
        cfg.slices.labels = labels
    for name, value in (("every", every), ("slice_offset", offset), ("families", planes), ("rois", roi)):
        if value is not None:
            setattr(cfg.slices, name, value)
    _run_fit(cfg, output, overwrite)


@app.command()
def mesh(
    run_dir: Path = typer.Argument(..., help="A run folder written by `fieldstudio fit`."),
    output: Path = typer.Option(..., "-o", "--output", help="Mesh file: .ply .obj .stl or .glb."),
    resolution: Optional[int] = typer.Option(None, help="Marching-cubes resolution (default: the run's)."),
) -> None:
    """Extract a mesh from a trained run, in the input's coordinate frame."""
    from fieldstudio.run import mesh_from_run

    with _progress() as progress:
        path, report = mesh_from_run(run_dir, output, resolution, _mesh_progress(progress))
    console.print(f"wrote {path}: {report['n_vertices']:,} vertices, {report['n_faces']:,} faces, "
                  f"watertight {report['watertight']}")


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
    from fieldstudio.config import RunConfig
    from fieldstudio.field import preset

    cfg = RunConfig(input=str(ASSETS / "trefoil.ply"), task="sdf")
    cfg.mesh.resolution = 160
    cfg.field = preset("hybrid", "sdf", 150_000)
    cfg.train.steps, cfg.train.time_budget, cfg.train.batch_size = 1500, 45.0, 8192
    cfg.sdf.pool_size = 400_000
    console.print(f"fitting {cfg.input} -> {output}")
    _run_fit(cfg, output, overwrite=True)


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


def main() -> None:
    try:
        app()
    except FieldStudioError as err:
        console.print(f"[red]error:[/red] {err}", highlight=False)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
