"""item.py
=======
One batch item in a worker process (local pool or Ray task): fit it through the API with a given number of CPU
threads, honour a stop request within about a second (training saves a checkpoint, so the next batch resumes),
draw its thumbnail, and return its report row. Also what the batch knows about a run folder without running it
(:func:`folder_state`, :func:`summarize`).

Rows are plain dicts (they cross process boundaries): ``name``, ``input``, ``status`` (done | failed | cancelled),
``seconds``, ``steps``, ``task``, ``metrics`` (the headline figures), ``objects`` (per label), ``history`` (loss
curves), ``thumbnail`` (file name in the run folder), ``error``.
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Headline metrics per result, in report order: (metrics.json key, column title)
HEADLINE = (("iou", "IoU"), ("nae_deg", "NAE °"), ("hausdorff", "Hausdorff"), ("hd95", "HD95"),
            ("dice", "Dice"), ("hd95_mm", "HD95 mm"), ("volume_ml", "volume ml"), ("psnr", "PSNR dB"),
            ("ssim", "SSIM"))
THUMBNAIL = "thumbnail.png"
LOG = "batch.log"
HISTORY_POINTS = 60  # loss-curve points kept per run in the report


@dataclass
class ItemTask:
    """What a worker needs to run one item (picklable)."""

    name: str
    request: Any          # fieldstudio.api.Request
    run_dir: str
    threads: int
    overwrite: bool = False


def empty_row(name: str, input, status: str, error: str | None = None) -> dict:
    """A report row with nothing measured yet (pending items, failures before or outside a fit)."""
    return {"name": name, "input": str(input), "status": status, "seconds": None, "steps": None, "task": None,
            "metrics": {}, "objects": [], "history": [], "thumbnail": None, "error": error}


# ------------------------------------------------------------------------------------------------ run folders

def folder_state(run_dir: Path) -> str:
    """``done`` (metrics.json written, no object failed), ``partial`` (a checkpoint or finished objects to resume
    from) or ``new``."""
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        try:
            rows = json.loads(metrics.read_text()).get("objects", [])
        except (OSError, ValueError, AttributeError):
            rows = [{"error": "unreadable"}]
        if not any("error" in r for r in rows):
            return "done"
        return "partial"
    if (run_dir / "checkpoint.pt").exists() or any(run_dir.glob("*/checkpoint.pt")):
        return "partial"
    return "new"


def summarize(name: str, input: str, run_dir: Path) -> dict:
    """The report row of a finished run folder (``status`` done, or failed when objects of it failed). Runs of
    several objects list them in ``objects`` and sum them up in ``metrics``: objects, watertight (a count), Dice
    (the mean), volume_ml (the total)."""
    m = json.loads((run_dir / "metrics.json").read_text())
    row = {"name": name, "input": str(input), "status": "done", "seconds": m.get("total_seconds"),
           "steps": m.get("steps"), "task": _task(run_dir), "metrics": _headline(m), "objects": [],
           "history": [_curve(m.get("history", []))], "thumbnail": None, "error": None}
    if "objects" in m:  # one run per label, or one field for all labels ("multi_label": "joint": steps and
        # history are the run's, once)
        joint = m.get("multi_label") == "joint"
        row["steps"], row["history"] = (m.get("steps"), [_curve(m.get("history", []))]) if joint else (0, [])
        for obj in m["objects"]:
            entry = {"name": obj["name"], "status": "failed" if "error" in obj else "done",
                     "error": obj.get("error"), "steps": obj.get("steps"), "seconds": obj.get("total_seconds")}
            sub = run_dir / obj["name"] / "metrics.json"
            if "error" not in obj and sub.exists():
                sm = json.loads(sub.read_text())
                entry["metrics"] = _headline(sm)
                entry["watertight"] = sm.get("mesh", {}).get("watertight")
                if not joint:
                    row["history"].append(_curve(sm.get("history", [])))
            if not joint:
                row["steps"] += obj.get("steps") or 0
            row["objects"].append(entry)
        failed = [o for o in row["objects"] if o["status"] == "failed"]
        if failed:
            row["status"] = "failed"
            row["error"] = f"{len(failed)} of {len(row['objects'])} objects failed: " + "; ".join(
                f"{o['name']}: {str(o['error']).split(';')[0]}" for o in failed)
        done = [o for o in row["objects"] if o["status"] == "done"]
        row["metrics"] = {"objects": len(row["objects"]),
                          "watertight": sum(bool(o.get("watertight")) for o in done)}
        for key, combine in (("dice", np.mean), ("volume_ml", np.sum)):  # mean Dice, total volume
            values = [o["metrics"][key] for o in done if key in o.get("metrics", {})]
            if values:
                row["metrics"][key] = float(combine(values))
    elif "mesh" in m:
        row["metrics"]["watertight"] = m["mesh"].get("watertight")
    if (run_dir / THUMBNAIL).exists():
        row["thumbnail"] = THUMBNAIL
    return row


def _task(run_dir: Path) -> str | None:
    import tomllib

    try:
        return tomllib.loads((run_dir / "config.toml").read_text()).get("task")
    except (OSError, ValueError):
        return None


def _headline(m: dict) -> dict:
    return {key: float(m[key]) for key, _ in HEADLINE if isinstance(m.get(key), (int, float))}


def _curve(history: list[dict]) -> list[list[float]]:
    """[[step, loss], ...], at most HISTORY_POINTS of them, evenly picked, the last one kept."""
    points = [[h["step"], h["loss"]] for h in history if isinstance(h.get("loss"), (int, float))]
    if len(points) > HISTORY_POINTS:
        stride = len(points) / HISTORY_POINTS
        points = [points[int(i * stride)] for i in range(HISTORY_POINTS - 1)] + [points[-1]]
    return points


def write_thumbnail(run_dir: Path, size: int = 160) -> Path | None:
    """``run_dir/thumbnail.png``: the mesh(es) rendered, the reconstructed picture, or a NeRF's first test view.
    None when the run has nothing to show."""
    from fieldstudio.thumbnails import picture_thumbnail, render_meshes, write_png

    m = json.loads((run_dir / "metrics.json").read_text())
    if "objects" in m:
        meshes = [run_dir / o["name"] / "mesh.ply" for o in m["objects"] if "error" not in o]
    elif (run_dir / "mesh.ply").exists():
        meshes = [run_dir / "mesh.ply"]
    else:
        meshes = []
    if meshes:
        import trimesh

        rgb = render_meshes([trimesh.load(p, force="mesh") for p in meshes if p.exists()], size=size)
    elif (run_dir / "reconstruction.png").exists():
        rgb = picture_thumbnail(run_dir / "reconstruction.png", size)
    elif m.get("split") and sorted((run_dir / m["split"]).glob("*.png")):
        rgb = picture_thumbnail(sorted((run_dir / m["split"]).glob("*.png"))[0], size)
    else:
        return None
    return write_png(run_dir / THUMBNAIL, rgb)


# ------------------------------------------------------------------------------------------------ workers

class StopFlags:
    """How a worker learns to stop: a shared event (local pool), its parent process gone (a killed batch), or a
    KeyboardInterrupt (Ray's cancel)."""

    def __init__(self, event=None, parent_pid: int | None = None):
        self.event, self.parent_pid = event, parent_pid

    def __call__(self) -> bool:
        if self.event is not None and self.event.is_set():
            return True
        return self.parent_pid is not None and os.getppid() != self.parent_pid


def run_item(task: ItemTask, should_stop=None, progress=None) -> dict:
    """Fit one item in this process and return its row. ``should_stop()`` is polled 4 times a second;
    ``progress(name, fraction)`` hears the training fraction about once a second. Never raises for the item's own
    errors: they become ``status = failed`` rows, with the traceback of unexpected ones in the run folder's
    ``batch.log``."""
    from fieldstudio.api import configure_threads, fit_job
    from fieldstudio.errors import FieldStudioError

    configure_threads(task.threads)
    run_dir = Path(task.run_dir)
    t0 = time.perf_counter()
    row = {**empty_row(task.name, task.request.input, "failed"), "host": os.uname().nodename,
           "threads": task.threads}
    if should_stop is not None and should_stop():  # handed over while the batch stops: leave the folder as it is
        return {**row, "status": "pending"}
    log_lines = []
    last = [0.0]

    def listen(e) -> None:
        if e.kind == "note":
            log_lines.append(f"note: {e.message}")
        elif e.kind == "step" and progress is not None and time.perf_counter() - last[0] >= 1.0:
            last[0] = time.perf_counter()
            progress(task.name, float(e.done))

    job = None
    try:
        job = fit_job(task.request, run_dir, overwrite=task.overwrite).subscribe(listen)
        job.start()
        while not job.done:
            try:
                job.wait(0.25)
                if should_stop is not None and should_stop():
                    job.cancel()
            except KeyboardInterrupt:  # Ray's cancel, or Ctrl-C reaching a worker
                job.cancel()
        result = job.wait()
        row["resumed"] = bool(getattr(result, "resumed", False))
        if result is None or not result.finished:
            row.update(status="cancelled", error="stopped before the end; the next batch run resumes it",
                       steps=getattr(result, "steps", None))
        else:
            write_thumbnail(run_dir)
            row.update(summarize(task.name, task.request.input, run_dir))
    except FieldStudioError as err:
        row["error"] = str(err)
        if (run_dir / "metrics.json").exists():  # some objects of a multi-label run failed, the rest are kept
            try:
                write_thumbnail(run_dir)
            except Exception:  # the row matters more than its picture
                pass
            row.update(summarize(task.name, task.request.input, run_dir))
    except Exception as err:  # a bug or an unreadable input: recorded, the batch goes on
        row["error"] = f"{type(err).__name__}: {err}"
        log_lines.append(traceback.format_exc())
    row["seconds"] = round(time.perf_counter() - t0, 2)
    if log_lines or row["error"]:
        _append_log(run_dir, log_lines + ([f"{row['status']}: {row['error']}"] if row["error"] else []))
    return row


def _append_log(run_dir: Path, lines: list[str]) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / LOG, "a", encoding="utf-8") as fh:
            fh.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n" + "\n".join(lines) + "\n")
    except OSError:
        pass


# Set in each local worker process by its pool's initializer.
_WORKER: dict[str, Any] = {}


def init_local_worker(stop_event, queue, parent_pid: int) -> None:
    """Pool initializer: Ctrl-C is the parent's to handle (it asks workers to stop through ``stop_event``), and a
    worker whose parent was killed stops its item (checkpoint saved) and exits."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER.update(stop=StopFlags(stop_event, parent_pid), queue=queue)

    def watch_parent() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        time.sleep(3.0)  # the item in hand sees the same and saves its checkpoint; then leave for sure
        os._exit(1)

    threading.Thread(target=watch_parent, daemon=True, name="parent-watch").start()


def run_local_item(task: ItemTask) -> dict:
    """A local pool's task: :func:`run_item` with the worker's stop flags, telling the parent when it starts."""
    queue = _WORKER["queue"]
    queue.put(("start", task.name, 0.0))
    return run_item(task, _WORKER["stop"], lambda name, f: queue.put(("progress", name, f)))
