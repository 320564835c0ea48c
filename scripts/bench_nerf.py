"""bench_nerf.py
=============
NeRF benchmark (docs/benchmarks.md, "NeRF"): ``nerf/lego_halfres`` at 100 x 100 (``--downscale 4`` of 400 x 400),
train views for training, PSNR / SSIM on the test views, each field trained for the same wall clock in one process
one after another: the hybrid (voxels + adaptive RBFs), a multires hash grid with an MLP (Instant-NGP-like), and
plain density + RGB voxels (Plenoxels-like).

While a field trains, a callback renders ``--probe-views`` test views every ``--probe-every`` seconds and records
their mean PSNR against the training time; the time it takes is given back to the run (the budget is extended by it),
so each curve is training time only. After training every test view is rendered and scored (the task's own end).

Writes under ``--out`` (default ``bench_results/nerf``): ``results.json`` (machine, command, per field: steps,
seconds, curve, final metrics per view), ``table.md``, ``curve.png`` (PSNR over training time) and ``views.png``
(a few test views: ground truth and each field's render).

    python scripts/bench_nerf.py [--time-budget 600] [--fields hybrid,grid,voxels] [--downscale 4]
    python scripts/bench_nerf.py --time-budget 30 --probe-every 10      # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from fieldstudio.api import Request, configure_threads, fit_job  # noqa: E402
from fieldstudio.data.nerf_scenes import load_picture, read_scene  # noqa: E402
from fieldstudio.io import atomic_write_json, atomic_write_text  # noqa: E402
from fieldstudio.metrics import image_metrics  # noqa: E402
from fieldstudio.tasks import nerf  # noqa: E402
from fieldstudio.train import Callback  # noqa: E402
from bench_image import machine_info  # noqa: E402

LABELS = {"hybrid": "hybrid (voxels + RBFs)", "grid": "hash grid + MLP", "voxels": "voxels (Plenoxels-like)"}


class Probe(Callback):
    """Every ``every`` seconds of training: mean PSNR of a few test views; the time it takes is added to the
    budget, so that the curve's time axis (and the run's training) is training alone."""

    def __init__(self, task_getter, cams, truths, every: float):
        self.task_getter, self.cams, self.truths, self.every = task_getter, cams, truths, every
        self.spent, self.next, self.curve = 0.0, every, []

    def on_step(self, state) -> None:
        train_time = state.elapsed - self.spent
        if train_time < self.next:
            return
        t0 = time.perf_counter()
        model, cfg, frame, task = self.task_getter()
        with torch.no_grad():
            renderer = nerf.Renderer(model, cfg, frame, occupancy=task.occupancy, cells=task.cells)
            psnrs = [image_metrics(np.clip(renderer.view(c)["rgb"], 0, 1), t, 1.0)["psnr"]
                     for c, t in zip(self.cams, self.truths)]
        self.curve.append({"train_seconds": round(train_time, 1), "step": state.step,
                           "psnr": float(np.mean(psnrs))})
        print(f"    {train_time:6.0f} s  step {state.step:6d}  PSNR {np.mean(psnrs):.2f}", flush=True)
        spent = time.perf_counter() - t0
        self.spent += spent
        if state.time_budget:
            state.time_budget += spent
        self.next += self.every


def run_field(field: str, args, out: Path) -> dict:
    overrides = {"nerf.downscale": args.downscale, "nerf.eval_views": 0}
    request = Request(args.scene, field=field, time_budget=args.time_budget, seed=args.seed, overrides=overrides,
                      params=args.params)
    scene = read_scene(args.scene)
    cams = nerf.eval_cameras(scene, api_cfg(request), "test")
    pick = cams[:: max(1, len(cams) // args.probe_views)][:args.probe_views]
    truths = [load_picture(c, args.downscale, (1.0, 1.0, 1.0)) for c in pick]
    job = fit_job(request, out / "runs" / field, overwrite=True)
    probe = Probe(lambda: (job._control.live["model"], job._control.live["cfg"], job._control.live["frame"],
                           job._control.live["task"]), pick, truths, args.probe_every)
    job.callbacks.append(probe)
    t0 = time.perf_counter()
    result = job.run()
    wall = time.perf_counter() - t0
    m = result.metrics
    return {"field": field, "label": LABELS.get(field, field), "params": m["params"], "steps": m["steps"],
            "train_seconds": m["train_seconds"] - probe.spent, "probe_seconds": round(probe.spent, 1),
            "wall_seconds": round(wall, 1), "psnr": m["psnr"], "ssim": m["ssim"], "psnr_min": m["psnr_min"],
            "views": m["views"], "curve": probe.curve, "run_dir": str(out / "runs" / field),
            "config": {k: m.get(k) for k in ("occupied",)}}


def api_cfg(request):
    from fieldstudio.api import resolve

    return resolve(request)


def table(results: dict) -> str:
    mach = results["machine"]
    lines = [f"NeRF, lego at {results['size']} px, {results['time_budget']:g} s of training per field, "
             f"{mach['cpu']} ({mach['threads']} threads), {results['date']}", "",
             "| field | parameters | steps | train s | test PSNR (mean, lowest) | SSIM |", "|---|---|---|---|---|---|"]
    for r in results["fields"]:
        lines.append(f"| {r['label']} | {r['params']:,} | {r['steps']:,} | {r['train_seconds']:.0f} | "
                     f"{r['psnr']:.2f} ({r['psnr_min']:.2f}) | {r['ssim']:.4f} |")
    lines += ["", "PSNR of the probe views over training time:", "",
              "| field | " + " | ".join(f"{c['train_seconds']:.0f} s" for c in results["fields"][0]["curve"]) + " |",
              "|---|" + "---|" * len(results["fields"][0]["curve"])]
    for r in results["fields"]:
        lines.append(f"| {r['label']} | " + " | ".join(f"{c['psnr']:.2f}" for c in r["curve"]) + " |")
    return "\n".join(lines) + "\n"


def figures(results: dict, args, out: Path) -> None:
    line_chart(out / "curve.png", [(r["label"], [(c["train_seconds"], c["psnr"]) for c in r["curve"]])
                                    for r in results["fields"]],
               "training time, s", f"PSNR of {args.probe_views} test views, dB")

    scene = read_scene(args.scene)
    cams = scene.splits["test"]
    names = [cams[i].name for i in (0, len(cams) // 3, 2 * len(cams) // 3)]
    rows = []
    for name in names:
        cam = next(c for c in cams if c.name == name)
        row = [load_picture(cam, args.downscale, (1.0, 1.0, 1.0))]
        for r in results["fields"]:
            renders = Path(r.get("renders", Path(r["run_dir"]) / "test"))
            row.append(np.asarray(__import__("imageio.v2", fromlist=["imread"]).imread(
                renders / f"{Path(name).name}.png"), np.float32)[..., :3] / 255.0)
        rows.append(np.concatenate(row, 1))
    grid = (np.clip(np.concatenate(rows, 0), 0, 1) * 255 + 0.5).astype(np.uint8)
    from fieldstudio.data.images import write_image

    write_image(out / "views.png", np.repeat(np.repeat(grid, 2, 0), 2, 1))


def line_chart(path: Path, series: list, xlabel: str, ylabel: str, size=(720, 440)) -> None:
    """A small line chart with PIL (no plotting library needed): one coloured line per (label, [(x, y), ...])."""
    from PIL import Image, ImageDraw

    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    left, top, right, bottom = 70, 20, size[0] - 20, size[1] - 60
    pts = [p for _, s in series for p in s]
    if not pts:
        return
    x0, x1 = 0.0, max(p[0] for p in pts) or 1.0
    y0, y1 = min(p[1] for p in pts) - 0.5, max(p[1] for p in pts) + 0.5
    sx = lambda x: left + (x - x0) / (x1 - x0) * (right - left)  # noqa: E731
    sy = lambda y: bottom - (y - y0) / (y1 - y0) * (bottom - top)  # noqa: E731
    d.rectangle([left, top, right, bottom], outline="black")
    for i in range(6):
        yv, xv = y0 + (y1 - y0) * i / 5, x0 + (x1 - x0) * i / 5
        d.line([left, sy(yv), right, sy(yv)], fill=(225, 225, 225))
        d.text((8, sy(yv) - 6), f"{yv:.1f}", fill="black")
        d.text((sx(xv) - 10, bottom + 6), f"{xv:.0f}", fill="black")
    d.text(((left + right) // 2 - 60, bottom + 24), xlabel, fill="black")
    d.text((8, 2), ylabel, fill="black")
    for i, (label, s) in enumerate(series):
        c = colours[i % len(colours)]
        xy = [(sx(x), sy(y)) for x, y in s]
        if len(xy) > 1:
            d.line(xy, fill=c, width=2)
        for x, y in xy:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=c)
        d.text((left + 10, top + 8 + 16 * i), label, fill=c)
    img.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", default=str(ROOT.parent / "shared" / "data" / "nerf" / "lego_halfres"))
    parser.add_argument("--fields", default="hybrid,grid,voxels")
    parser.add_argument("--time-budget", type=float, default=600.0)
    parser.add_argument("--downscale", type=int, default=4)
    parser.add_argument("--params", type=int, default=None)
    parser.add_argument("--probe-every", type=float, default=60.0)
    parser.add_argument("--probe-views", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "bench_results" / "nerf"))
    args = parser.parse_args()
    configure_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"date": datetime.now().isoformat(timespec="minutes"), "command": " ".join(sys.argv),
               "machine": machine_info(),
               "time_budget": args.time_budget, "size": f"{400 // args.downscale}x{400 // args.downscale}",
               "fields": []}
    for field in args.fields.split(","):
        print(f"{field}: training {args.time_budget:g} s", flush=True)
        results["fields"].append(run_field(field, args, out))
        r = results["fields"][-1]
        print(f"  {field}: {r['steps']} steps, test PSNR {r['psnr']:.2f} (lowest {r['psnr_min']:.2f}), SSIM "
              f"{r['ssim']:.4f}", flush=True)
        atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "table.md", table(results))
    figures(results, args, out)
    print(table(results))


if __name__ == "__main__":
    main()
