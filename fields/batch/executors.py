"""executors.py
============
Where a batch's items run: ``LocalExecutor`` (a process pool on this machine) or ``RayExecutor`` (Ray tasks on a
cluster, or on a Ray instance started here). Both run :func:`fieldstudio.batch.item.run_item` and report to the
same three callbacks, so the batch and its report do not know which one ran an item:

* ``on_start(name)``, ``on_progress(name, fraction)``, ``on_done(row)``; ``should_stop()`` is polled 4 times a
  second, and once it says yes the items in hand stop (checkpoints saved) and the others are not started.
"""

from __future__ import annotations

import os
from pathlib import Path
from concurrent.futures import FIRST_COMPLETED, CancelledError, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from fieldstudio.batch.item import ItemTask, empty_row, folder_state, init_local_worker, run_item, run_local_item
from fieldstudio.batch.shipping import pack_folder, sees, unpack_folder, write_marker
from fieldstudio.errors import FieldStudioError


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def split_cores(n_items: int, workers: int | None, threads: int | None, cores: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker) that fill the machine without oversubscribing it: by default one worker per
    two cores (small fields scale poorly past two threads; see docs/benchmarks.md "Batch"), never more workers
    than items."""
    cores = cores or machine_cores()
    if workers is None:
        workers = max(1, cores // (threads or 2))
    workers = max(1, min(workers, max(n_items, 1)))
    return workers, threads or max(1, cores // workers)


def _drain(queue, started: set[str], on_start, on_progress) -> None:
    """Hand the workers' messages (a multiprocessing queue, or Ray's queue actor) to the callbacks."""
    while True:
        try:
            kind, name, fraction = queue.get_nowait()
        except Exception:  # Empty (either kind), or a queue whose other end is gone
            return
        if kind == "start":
            started.add(name)
            on_start(name)
        else:
            on_progress(name, fraction)


def _failed(task: ItemTask, error: str) -> dict:
    return empty_row(task.name, task.request.input, "failed", error)


class LocalExecutor:
    """A pool of ``workers`` processes (spawned, so that no thread state of this process leaks into them), each
    item with ``ItemTask.threads`` CPU threads. A worker that dies (killed, out of memory) fails the item it held;
    the pool is rebuilt for the rest."""

    name = "local"

    def __init__(self, workers: int):
        self.workers = workers

    def run(self, tasks: list[ItemTask], on_start, on_progress, on_done, should_stop) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        todo, pools = list(tasks), 0
        while todo and pools < 3:  # a pool that keeps breaking before its items start is not rebuilt forever
            pools += 1
            stop, queue = ctx.Event(), ctx.Queue()
            started: set[str] = set()
            with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=init_local_worker,
                                     initargs=(stop, queue, os.getpid())) as pool:
                futures = {pool.submit(run_local_item, t): t for t in todo}
                pending, broken = set(futures), False
                while pending:
                    done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                    _drain(queue, started, on_start, on_progress)
                    for f in done:
                        task = futures[f]
                        try:
                            on_done(f.result())
                        except CancelledError:
                            continue  # never started (the batch is stopping): it stays pending
                        except BrokenProcessPool:
                            broken = True
                            if task.name in started:
                                on_done(_failed(task, "its worker process died (killed, or out of memory?); "
                                                "rerun the batch to retry it"))
                        except Exception as err:  # the row could not come back (not picklable, ...)
                            on_done(_failed(task, f"{type(err).__name__}: {err}"))
                    if should_stop() and not stop.is_set():
                        stop.set()
                        for f in pending:
                            f.cancel()  # not started yet: never will be
                _drain(queue, started, on_start, on_progress)
            if should_stop() or not broken:
                return
            # a broken pool: what never started gets a new pool (what had started was reported as failed)
            todo = [t for t in todo if t.name not in started]


class RayExecutor:
    """Items as Ray tasks of ``ItemTask.threads`` CPUs (and ``gpus`` GPUs) each; Ray decides how many run at
    once. A task whose worker or node is lost is retried (``retries`` times): it resumes from its checkpoint.

    ``address`` None starts a Ray instance on this machine for the batch (no dashboard, no auth token written) and
    stops it afterwards; ``"auto"`` or ``"ray://host:10001"`` joins a running cluster. Inputs must be at the same
    paths on every node. A node that sees the output folder writes its run folder there; one that does not fits in
    a scratch folder and ships the run folder back to this machine (``fieldstudio.batch.shipping``; ``shared=False``
    ships always)."""

    name = "ray"

    def __init__(self, address: str | None = None, gpus: float = 0.0, retries: int = 2, cores: int | None = None,
                 shared: bool | None = None):
        self.address, self.gpus, self.retries, self.cores = address, gpus, retries, cores
        self.shared = shared

    def run(self, tasks: list[ItemTask], on_start, on_progress, on_done, should_stop) -> None:
        try:
            import ray
            from ray.util.queue import Queue
        except ImportError:
            raise FieldStudioError("the ray executor needs Ray: pip install 'fieldstudio[distributed]'") from None
        started_here = not ray.is_initialized()
        if started_here:
            self._init(ray)
        try:
            queue = Queue()
            remote = ray.remote(max_retries=self.retries, retry_exceptions=False)(_ray_item)
            refs = {}
            out_dirs = {Path(t.run_dir).parent for t in tasks}
            tokens = {d: write_marker(d) if self.shared is not False else None for d in out_dirs}
            for t in tasks:
                run_dir = Path(t.run_dir)
                # an interrupted item's folder goes along, in case its node cannot see it (wrapped in a list: Ray
                # fetches it only when the task asks)
                seed = [ray.put(pack_folder(run_dir))] if folder_state(run_dir) == "partial" else None
                ref = remote.options(num_cpus=t.threads, num_gpus=self.gpus or 0).remote(
                    t, queue, tokens[run_dir.parent], seed)
                refs[ref] = t
            pending, stopping, seen = list(refs), False, set()
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=0.25)
                _drain(queue, seen, on_start, on_progress)
                for ref in ready:
                    task = refs[ref]
                    try:
                        row = ray.get(ref)
                        if row.get("shipped_folder") is not None:  # fitted where the output folder is not seen
                            unpack_folder(row.pop("shipped_folder"), Path(task.run_dir))
                        on_done(row)
                    except ray.exceptions.TaskCancelledError:
                        continue  # cancelled before it started: nothing to report
                    except ray.exceptions.RayError as err:
                        on_done(_failed(task, f"Ray lost it ({type(err).__name__}: {str(err).splitlines()[0]}); "
                                        "rerun the batch to retry it"))
                if should_stop() and not stopping:
                    stopping = True
                    for ref in pending:
                        ray.cancel(ref)  # running tasks hear a KeyboardInterrupt and save their checkpoints
            _drain(queue, seen, on_start, on_progress)
            queue.shutdown()
        finally:
            if started_here:
                ray.shutdown()

    def _init(self, ray) -> None:
        if self.address is None:
            # A private instance: no dashboard, no token file in ~/.ray (see ../shared/docs/gui_testing.md)
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(num_cpus=self.cores or machine_cores(), include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=True)
            return
        try:
            ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise FieldStudioError(f"cannot reach the Ray cluster at {self.address}: {str(err).splitlines()[0]}; "
                                   "start it with `ray start --head` or check --ray-address") from None


def _ray_item(task: ItemTask, queue, token: str | None, seed: list | None) -> dict:
    """A Ray task: one item, progress through the queue actor; ``ray.cancel`` arrives as a KeyboardInterrupt. A
    node that does not see the output folder (its marker with ``token``) fits in a scratch folder, seeded with the
    interrupted folder when there is one, and returns the folder packed as ``shipped_folder``."""
    import dataclasses
    import shutil
    import tempfile
    def tell(kind: str, name: str, fraction: float) -> None:
        # Sent without waiting for the queue actor: a task blocked in ray.get lends its CPUs to another task,
        # and the node would run more items than it has cores (measured: 3 at once on 2 CPUs).
        try:
            queue.actor.put_nowait.remote((kind, name, fraction))
        except Exception:  # progress is a courtesy; the item goes on without it
            pass

    tell("start", task.name, 0.0)
    report = lambda name, f: tell("progress", name, f)  # noqa: E731
    if sees(Path(task.run_dir).parent, token):
        return run_item(task, None, report)
    import ray

    scratch = Path(tempfile.mkdtemp(prefix="fieldstudio-batch-")) / task.name
    try:
        if seed is not None:
            unpack_folder(ray.get(seed[0]), scratch)
        row = run_item(dataclasses.replace(task, run_dir=str(scratch)), None, report)
        if scratch.exists():
            row["shipped_folder"] = pack_folder(scratch)
        return row
    finally:
        shutil.rmtree(scratch.parent, ignore_errors=True)


__all__ = ["LocalExecutor", "RayExecutor", "split_cores", "machine_cores", "run_item"]
