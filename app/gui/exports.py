"""exports.py
==========
Renders of a finished run written from the window (a picture at another scale, a NeRF's views or orbit): one job in a
thread of its own, at most one at a time per view, its end reported through the view's signals.
"""

from __future__ import annotations

import json
from pathlib import Path


def run_metrics(run_dir: Path | None) -> dict:
    """A run folder's metrics.json ({} when there is none or it cannot be read)."""
    try:
        return json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError, TypeError):
        return {}


def start_export(view, run: Path | None, path: Path, message: str, missing: str, **options) -> bool:
    """Start ``fieldstudio.api.render_job(run, path, **options)`` for ``view``, which has the signals ``problem(str)``,
    ``note(str, int)`` and ``_export_done(result, error)`` and an ``export_job`` attribute. ``missing``: the message
    when there is no finished run. Returns whether the export started."""
    from fieldstudio.api import render_job
    from fieldstudio.errors import FieldStudioError

    if run is None:
        view.problem.emit(missing)
        return False
    if view.export_job is not None and not view.export_job.done:
        view.problem.emit("an export is still being written; wait for it to finish")
        return False
    try:
        job = render_job(run, path, **options)
    except FieldStudioError as err:
        view.problem.emit(str(err))
        return False

    def listen(e):  # the job's thread
        try:
            if e.kind == "finished":
                view._export_done.emit(job.result, "")
            elif e.kind in ("failed", "cancelled"):
                view._export_done.emit(None, e.message or e.kind)
        except RuntimeError:  # the view is gone
            pass
    job.subscribe(listen)
    view.export_job = job
    view.note.emit(message, 0)
    job.start()  # in a thread of its own; errors come as its "failed" event
    return True
