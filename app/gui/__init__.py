"""The desktop face: ``fieldstudio gui [INPUT]`` (or ``fieldstudio-gui``). A main window over ``fieldstudio.api``.

``--screenshot out.png`` loads INPUT, runs the fit with the panel's defaults when ``--fit`` is given, saves a grab of
the window when done and exits (0 on success): the README's pictures are made this way. The panel's fields are
options too (``--time-budget``, ``--labels``, ``--every`` ...), spelled as ``fieldstudio fit`` spells them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fieldstudio.app.gui.options import FIELDS, NUMBERS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fieldstudio gui", description="The fieldstudio window.")
    ap.add_argument("input", nargs="?", type=Path, help="an input or a run folder to open")
    ap.add_argument("--fit", action="store_true", help="start fitting INPUT at once")
    for name, _, option, tip in FIELDS:  # the settings panel's fields, as `fieldstudio fit` spells them
        ap.add_argument(option, dest=name, type=NUMBERS.get(name, str), help=f"{tip} (the panel's field)")
    ap.add_argument("-o", "--output", type=Path, help="run folder of the fit")
    ap.add_argument("--background", type=Path, help="a CT / MR image shown under a label map's slices")
    ap.add_argument("--slice", help="the slice view's direction and slice, e.g. coronal:120")
    ap.add_argument("--screenshot", type=Path, help="save a grab of the window when loaded (or fitted) and exit")
    ap.add_argument("--colour-by-distance", action="store_true",
                    help="colour the result by its distance to the input mesh (View menu)")
    args = ap.parse_args(argv)
    import importlib.util

    missing = [m for m in ("PySide6", "pyqtgraph", "OpenGL") if importlib.util.find_spec(m) is None]
    if missing:  # installed without the gui extra: one line, not an ImportError
        print(f"error: the window needs {', '.join(missing)}: pip install 'fieldstudio[gui]' (or make setup in the "
              "repository)", file=sys.stderr)
        return 2

    import pyqtgraph as pg
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from fieldstudio.app.gui.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    pg.setConfigOptions(antialias=True)
    window = MainWindow()
    window.quiet = args.screenshot is not None  # nobody is there to close a dialog
    window.show()
    status = {"code": 0}
    window.distance_action.setChecked(args.colour_by_distance)
    if args.input is not None and not window.open_path(args.input):
        status["code"] = 2
    if args.background is not None and status["code"] == 0 and not window.open_background(args.background):
        status["code"] = 2
    if args.slice:
        direction, _, index = args.slice.partition(":")
        if direction not in ("axial", "coronal", "sagittal") or not (index.isdigit() or index == ""):
            ap.error(f"--slice {args.slice!r}: write a direction (axial, coronal, sagittal) and a slice number, "
                     "e.g. coronal:120")
        window.slices.direction.setCurrentText(direction)
        if index:
            window.slices.slider.setValue(int(index))
    for name, *_ in FIELDS:
        if getattr(args, name) is not None:
            window.panel.edits[name].setText(str(getattr(args, name)))
    if args.output is not None:
        window.panel.output.setText(str(args.output))

    def shoot_and_quit():
        app.processEvents()
        if not window.save_screenshot(args.screenshot):
            status["code"] = 1
        window.close()
        app.quit()

    if args.screenshot is not None and status["code"] == 0:
        if args.fit:
            window.fit_ended.connect(lambda s: (status.update(code=0 if s == "finished" else 1),
                                                QTimer.singleShot(500, shoot_and_quit)))
            window.start_fit()
            if window.worker is None:
                return 2
        else:
            QTimer.singleShot(1500, shoot_and_quit)
    elif args.fit:
        window.start_fit()
    if args.screenshot is not None and status["code"] != 0:
        return status["code"]
    app.exec()
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
