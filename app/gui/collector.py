"""collector.py
============
Python's cyclic garbage collector, run from the window's thread only while a window is open.

A collection runs in whichever thread happens to allocate when a threshold is passed. If it frees a Qt object
(a menu, its actions) in a fit's thread, PySide destroys it there: that thread takes Qt's lock and waits for the
GIL, while the window's thread holds the GIL and waits for that lock. Seen once in `tests/test_gui_image.py`: the
job thread collecting inside `torch.save`, the window thread in a pyqtgraph `boundingRect`, both stuck for good.
So while a window is open, automatic collection is off and a timer in the window's thread collects instead, the
generations whose thresholds were passed, as automatic collection would.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

_open = 0  # windows holding automatic collection off
_was_enabled = True


class MainThreadCollector(QObject):
    """Collect garbage from the owner's (the window's) thread every ``interval_ms``; ``stop()`` when it closes."""

    def __init__(self, parent: QObject, interval_ms: int = 500):
        super().__init__(parent)
        global _open, _was_enabled
        if _open == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _open += 1
        self._running = True
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.collect)
        self._timer.start(interval_ms)

    def collect(self) -> None:
        counts, thresholds = gc.get_count(), gc.get_threshold()
        # The oldest generation over its threshold, as automatic collection picks it (it also collects the younger).
        for generation in (2, 1, 0):
            if thresholds[generation] and counts[generation] > thresholds[generation]:
                gc.collect(generation)
                return

    def stop(self) -> None:
        """Collect once more here and give collection back to Python when no other window holds it."""
        global _open
        if not self._running:
            return
        self._running = False
        self._timer.stop()
        gc.collect()
        _open -= 1
        if _open == 0 and _was_enabled:
            gc.enable()
