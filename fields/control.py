"""control.py
==========
How a running job is steered and watched from another thread: cancel, pause, a lock for previews, and the stage and
progress reports that become a face's events.

The library's long loops call :func:`check_cancel` (or report progress through :func:`report`) often enough that a
cancel takes effect within about a second, in every stage: set-up, RBF placement, neighbour tables, training,
meshing and scoring. The control of the job running in this thread is found through a context variable, so library
functions need no extra argument and two jobs in two threads never see each other's control.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from typing import Callable, Iterator

STAGES = ("prepare", "train", "mesh", "score")


class Cancelled(Exception):
    """Raised inside library code when the job running in this thread was cancelled. Not a user error: the job
    catches it, keeps what can be resumed and reports ``cancelled``."""


class Control:
    """Cancel, pause and preview lock of one job, and the sink its stage and progress reports go to.

    ``sink(kind, **data)`` receives ``("stage", stage=..., object=...)`` and ``("progress", stage=..., done=...,
    total=..., eta=...)``; it is called from the job's thread.
    """

    def __init__(self, sink: Callable[..., None] | None = None):
        self._cancel = threading.Event()
        self._running = threading.Event()
        self._running.set()
        # Held by the training loop during each step; a preview takes it between steps (as live viewers do).
        self.lock = threading.RLock()
        self.sink = sink or (lambda kind, **data: None)
        self.stage = ""
        self._stage_object = ""
        self.object = ""  # the object being fitted, in runs of several (one per label)
        self.live: dict = {}  # what a preview needs of the running fit: model, cfg, frame (set by fieldstudio.run)
        self.memo: dict = {}  # inputs read once per job (planning and building both need them); dies with the job
        self._stage_start = time.perf_counter()
        self._last_report = 0.0

    # -- steering (any thread)
    def cancel(self) -> None:
        self._cancel.set()
        self._running.set()  # a paused job must wake up to notice

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    # -- called from the job's thread
    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()

    def wait_while_paused(self) -> float:
        """Block while paused (training pauses between steps); returns the seconds spent waiting."""
        if self._running.is_set():
            return 0.0
        t = time.perf_counter()
        self.sink("paused", stage=self.stage)
        self._running.wait()
        self.sink("resumed", stage=self.stage)
        return time.perf_counter() - t

    def enter(self, stage: str) -> None:
        """Begin ``stage`` of the current ``object`` (reported once: entering the stage already running is only a
        cancel check)."""
        self.check()
        if (stage, self.object) == (self.stage, self._stage_object):
            return
        self.stage, self._stage_object = stage, self.object
        self._stage_start, self._last_report = time.perf_counter(), 0.0
        self.sink("stage", stage=stage, object=self.object)

    def progress(self, done: float, total: float, eta: float | None = None) -> None:
        """Report ``done`` of ``total`` in the current stage (ETA from the rate so far unless given); checks for a
        cancel. Reports are throttled to 10 per second, except the last one."""
        self.check()
        now = time.perf_counter()
        if done < total and now - self._last_report < 0.1:
            return
        self._last_report = now
        if eta is None and total > 0 and done > 0:
            eta = (now - self._stage_start) * (total - done) / done
        self.sink("progress", stage=self.stage, done=done, total=total, eta=eta)


_current: contextvars.ContextVar[Control | None] = contextvars.ContextVar("fieldstudio_control", default=None)


@contextlib.contextmanager
def active(control: Control) -> Iterator[Control]:
    """Make ``control`` the one that library code in this thread reports to."""
    token = _current.set(control)
    try:
        yield control
    finally:
        _current.reset(token)


def current() -> Control | None:
    return _current.get()


def check_cancel() -> None:
    """Raise :class:`Cancelled` when the job running in this thread was cancelled; free when there is none."""
    control = _current.get()
    if control is not None:
        control.check()


def memoized(key, make):
    """``make()`` once per job for ``key`` (e.g. a label map that planning and building both read); outside a job,
    simply ``make()``. Nothing outlives the job."""
    control = _current.get()
    if control is None:
        return make()
    if key not in control.memo:
        control.memo[key] = make()
    return control.memo[key]


def report(done: float, total: float) -> None:
    """Progress of the current stage (and a cancel check); a no-op outside a job."""
    control = _current.get()
    if control is not None:
        control.progress(done, total)


__all__ = ["Control", "Cancelled", "STAGES", "active", "current", "check_cancel", "memoized", "report"]
