"""fieldstudio.batch
=================
Many fits from one manifest, headless: each item a run folder under the output folder, run by a local process pool
or by Ray, with a report (``report.json``, ``report.html``) rewritten as items start and end.

    from fieldstudio.api import batch_job
    job = batch_job("cases.toml", "out/", workers=2)   # the manifest is read and checked here
    job.subscribe(print).start()
    report = job.wait()                                 # the final report.json as a dict

Reruns: items whose folder holds a finished run are skipped (``force`` redoes them), interrupted ones resume from
their checkpoints, failed ones are tried again. Modules: ``manifest`` (reading and checking), ``item`` (one item in
a worker), ``executors`` (local pool, Ray), ``report`` (json + html).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from fieldstudio.batch.executors import LocalExecutor, RayExecutor, machine_cores, split_cores
from fieldstudio.batch.item import ItemTask, empty_row, folder_state, summarize, write_thumbnail
from fieldstudio.batch.manifest import Item, Manifest, ManifestError, load_manifest
from fieldstudio.batch.report import counts, timestamp, write_report
from fieldstudio.errors import FieldStudioError

EXECUTORS = ("local", "ray")
REPORT_EVERY_S = 5.0  # progress alone rewrites the report at most this often (starts and ends always do)


@dataclass
class BatchPlan:
    """A checked manifest against an output folder: what each item's folder holds now (done | partial | new)."""

    manifest: Manifest
    out_dir: Path
    states: dict[str, str]
    force: bool = False

    @property
    def items(self) -> list[Item]:
        return self.manifest.items

    def to_run(self) -> list[Item]:
        return [it for it in self.items if self.force or self.states[it.name] != "done"]


def plan_batch(manifest: str | Path, out_dir: str | Path, force: bool = False) -> BatchPlan:
    """Read and check ``manifest`` (ManifestError lists every problem) and look at what ``out_dir`` holds."""
    m = load_manifest(manifest)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise FieldStudioError(f"{out} is a file; the batch's output must be a folder")
    return BatchPlan(m, out, {it.name: folder_state(out / it.name) for it in m.items}, force)


def make_executor(kind, workers: int, ray_address: str | None = None, gpus: float = 0.0):
    """The executor called ``kind`` (local | ray); an executor object is used as it is."""
    if not isinstance(kind, str):
        return kind
    if kind not in EXECUTORS:
        raise FieldStudioError(f"executor {kind!r}; use local or ray")
    if kind == "local":
        if ray_address is not None:
            raise FieldStudioError("--ray-address is for --executor ray")
        return LocalExecutor(workers)
    return RayExecutor(ray_address, gpus)


def run_batch(plan: BatchPlan, executor="local", workers: int | None = None, threads: int | None = None,
              ray_address: str | None = None, gpus: float = 0.0, sink=None, should_stop=None) -> dict:
    """Run the plan's items that are not finished yet and return the final report (also in ``out_dir``).
    ``executor``: local | ray, or an executor object (``fieldstudio.batch.executors``).

    ``sink(kind, **data)`` hears ``object`` events (an item's ``message``: running | done | failed: why |
    cancelled, with its report row as ``detail``) and ``progress`` events over the whole batch (``done`` of
    ``total`` items, fractions of running ones included, ``eta`` in seconds). ``should_stop()`` ends the batch:
    items in hand save their checkpoints, the rest are not started."""
    from fieldstudio.api import resolve
    from fieldstudio.io import ensure_writable_dir

    sink = sink or (lambda kind, **data: None)
    should_stop = should_stop or (lambda: False)
    out = ensure_writable_dir(plan.out_dir)
    t0 = time.perf_counter()
    todo = plan.to_run()
    n_workers, n_threads = split_cores(len(todo), workers, threads)
    runner = make_executor(executor, n_workers, ray_address, gpus)
    executor = runner.name
    rows: dict[str, dict] = {}
    tasks: list[ItemTask] = []
    for it in plan.items:
        run_dir = out / it.name
        if it not in todo:
            rows[it.name] = _finished_row(it, run_dir)
            continue
        rows[it.name] = empty_row(it.name, it.input, "pending")
        try:  # bad options for this input fail this item only, before any worker starts
            request = it.request()
            resolve(request)
        except FieldStudioError as err:
            rows[it.name].update(status="failed", error=str(err))
            continue
        tasks.append(ItemTask(it.name, request, str(run_dir), n_threads, overwrite=plan.force))

    report = {"manifest": str(plan.manifest.path), "manifest_name": plan.manifest.path.name, "out_dir": str(out),
              "executor": executor, "workers": n_workers if executor == "local" else None, "threads": n_threads,
              "state": "running", "started": timestamp(), "updated": timestamp(), "wall_seconds": 0.0,
              "items": list(rows.values())}
    last_write = [0.0]

    def save(force: bool = True) -> None:
        now = time.perf_counter()
        if force or now - last_write[0] >= REPORT_EVERY_S:
            report.update(updated=timestamp(), wall_seconds=round(now - t0, 1), items=list(rows.values()),
                          counts=counts(list(rows.values())))
            write_report(out, report)
            last_write[0] = now

    def overall() -> None:
        finished = sum(rows[t.name]["status"] in ("done", "failed", "cancelled") for t in tasks)
        running = sum(rows[t.name].get("fraction", 0.0) for t in tasks if rows[t.name]["status"] == "running")
        done, elapsed = finished + running, time.perf_counter() - t0
        eta = elapsed * (len(tasks) - done) / done if done > 0.02 else None
        sink("progress", stage="batch", done=done, total=len(tasks), eta=eta)

    def on_start(name: str) -> None:
        rows[name].update(status="running", fraction=0.0)
        sink("object", object=name, message="running", detail=rows[name])
        save()

    def on_progress(name: str, fraction: float) -> None:
        rows[name]["fraction"] = fraction
        overall()
        save(force=False)

    def on_done(row: dict) -> None:
        if row["status"] == "pending":  # handed to a worker as the batch stopped: not started
            rows[row["name"]]["status"] = "pending"
            return
        row = {**rows[row["name"]], **row}
        row.pop("fraction", None)
        rows[row["name"]] = row
        message = row["status"] if row["status"] != "failed" else f"failed: {row['error']}"
        sink("object", object=row["name"], message=message, detail=row)
        overall()
        save()

    for row in rows.values():  # what is known before anything runs: finished earlier, or failed to resolve
        if row["status"] != "pending":
            sink("object", object=row["name"], message=row["status"] if row["status"] != "failed"
                 else f"failed: {row['error']}", detail=row)
    save()
    sink("stage", stage="batch")
    overall()
    stopped = False
    try:
        if tasks:
            runner.run(tasks, on_start, on_progress, on_done,
                       lambda: should_stop() or False)
        stopped = should_stop()
    finally:
        for row in rows.values():  # never reported back: stopped, or their worker pool kept breaking
            if row["status"] == "running":
                row.update(status="cancelled", error="stopped; the next batch run resumes it")
            elif row["status"] == "pending" and not stopped:
                row.update(status="failed", error="not run: the worker pool kept breaking")
        report["state"] = "stopped" if stopped else "finished"
        save()
    return report


def _finished_row(it: Item, run_dir: Path) -> dict:
    """A run finished by an earlier batch (or by ``fieldstudio fit``): its row, with a thumbnail drawn if it had
    none."""
    try:
        if not (run_dir / "thumbnail.png").exists():
            write_thumbnail(run_dir)
        row = summarize(it.name, str(it.input), run_dir)
    except (OSError, ValueError, KeyError) as err:
        row = empty_row(it.name, it.input, "failed", f"its finished run could not be read ({err}); rerun with --force")
    row["reused"] = True
    return row


__all__ = ["BatchPlan", "plan_batch", "run_batch", "load_manifest", "Manifest", "ManifestError", "Item",
           "EXECUTORS", "machine_cores", "split_cores"]
