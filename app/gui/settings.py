"""settings.py
===========
The settings panel: what ``fieldstudio fit`` takes, as widgets. Empty fields mean "the default", and the defaults
shown are the library's (``fieldstudio.api.resolve`` of the input), never the panel's own. Every change is checked
by resolving the request; the library's message is shown in the panel and the Fit button waits for a valid one.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QComboBox, QFormLayout, QLabel, QLineEdit, QWidget)

from fieldstudio.api import Request, resolve
from fieldstudio.app.gui.options import FIELDS, NUMBERS
from fieldstudio.config import FIELD_KINDS
from fieldstudio.errors import FieldStudioError
from fieldstudio.tasks import registry

# Fields a task does not use: hidden while its input is open, and left out of its requests and commands.
UNUSED = {"image": {"resolution", "labels", "multi_label", "every", "offset", "planes", "roi",
                    "downscale"},
          "nerf": {"resolution", "labels", "multi_label", "every", "offset", "planes", "roi"},
          "sdf": {"downscale", "multi_label"}, "slices": {"downscale"}}


class SettingsPanel(QWidget):
    """Emits ``changed(ok)`` whenever the request changes (``ok``: it resolves)."""

    changed = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.input: Path | None = None
        self.input_task: str | None = None  # the task that reads the input
        form = self.form = QFormLayout(self)
        self.task = QComboBox()
        self.task.addItems(["auto"] + registry.names())
        self.field = QComboBox()
        self.field.addItems(["default"] + list(FIELD_KINDS))
        form.addRow("Task", self.task)
        form.addRow("Field", self.field)
        self.edits: dict[str, QLineEdit] = {}
        for name, label, _, tip in FIELDS:
            edit = QLineEdit()
            edit.setToolTip(tip)
            edit.setClearButtonEnabled(True)
            self.edits[name] = edit
            form.addRow(label, edit)
            edit.textChanged.connect(self.check)
        self.output = QLineEdit()
        self.output.setToolTip("run folder (created; an unfinished run there resumes)")
        form.addRow("Run folder", self.output)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #e06c6c")
        form.addRow(self.message)
        self.task.currentIndexChanged.connect(self.check)
        self.field.currentIndexChanged.connect(self.check)
        self.resolved = None

    def set_input(self, path: Path, run_dir: Path | None = None) -> None:
        self.input = Path(path)
        try:
            self.input_task = registry.for_input(self.input).name
        except FieldStudioError:
            self.input_task = None
        self.output.setText(str(run_dir or Path.cwd() / "runs" / self.input.name.split(".")[0]))
        self.check()

    def unused(self) -> set[str]:
        """The fields the chosen task (or the input's, for "auto") does not use."""
        task = self.task.currentText()
        return UNUSED.get(self.input_task if task == "auto" else task, set())

    def show_config(self, cfg) -> None:
        """Fill the fields from a run's resolved config (reopening a run folder shows what it was made with)."""
        values = {"params": cfg.field.params, "time_budget": cfg.train.time_budget, "steps": cfg.train.steps,
                  "resolution": cfg.mesh.resolution, "seed": cfg.train.seed, "labels": cfg.slices.labels,
                  "multi_label": cfg.slices.multi_label, "every": cfg.slices.every,
                  "offset": cfg.slices.slice_offset, "planes": cfg.slices.families,
                  "roi": cfg.slices.rois}
        for name, value in values.items():
            self.edits[name].blockSignals(True)
            self.edits[name].setText("" if value in (None, "") else str(value))
            self.edits[name].blockSignals(False)
        self.field.blockSignals(True)
        self.field.setCurrentText(cfg.field.kind)
        self.field.blockSignals(False)
        self.check()

    def request(self) -> Request:
        """The panel as a Request (raises FieldStudioError for a value that is not a number)."""
        values = {}
        unused = self.unused()
        for name, edit in self.edits.items():
            text = edit.text().strip()
            if not text or name in unused:
                continue
            if name in NUMBERS:
                try:
                    values[name] = NUMBERS[name](text)
                except ValueError:
                    raise FieldStudioError(f"{name.replace('_', ' ')} must be a number, got {text!r}") from None
            else:
                values[name] = text
        field = None if self.field.currentIndex() == 0 else self.field.currentText()
        return Request(self.input, task=self.task.currentText(), field=field, **values)

    def check(self) -> bool:
        """Resolve the request; show the library's defaults as placeholders and its message when it is refused."""
        if self.input is None:
            return False
        unused = self.unused()
        for name, edit in self.edits.items():
            self.form.setRowVisible(edit, name not in unused)
        try:
            self.resolved = resolve(self.request())
        except FieldStudioError as err:
            self.resolved = None
            self.message.setText(str(err))
            self.changed.emit(False)
            return False
        cfg = self.resolved
        defaults = {"params": cfg.field.params, "resolution": cfg.mesh.resolution, "seed": cfg.train.seed,
                    "steps": cfg.train.steps, "time_budget": cfg.train.time_budget, "labels": cfg.slices.labels,
                    "multi_label": cfg.slices.multi_label, "every": cfg.slices.every,
                    "offset": cfg.slices.slice_offset}
        for name, value in defaults.items():
            self.edits[name].setPlaceholderText("" if value is None else f"{value:,}" if isinstance(value, int)
                                                else str(value))
        self.field.setItemText(0, f"default ({registry.get(cfg.task).default_field})")
        self.message.setText("")
        self.changed.emit(True)
        return True

    def command(self) -> str:
        """The ``fieldstudio fit`` command line that makes the same run."""
        args = ["fieldstudio", "fit", str(self.input), "-o", self.output.text()]
        if self.task.currentText() != "auto":
            args += ["--task", self.task.currentText()]
        if self.field.currentIndex() > 0:
            args += ["--field", self.field.currentText()]
        unused = self.unused()
        for name, _, option, _ in FIELDS:
            text = self.edits[name].text().strip()
            if text and name not in unused:
                args += [option, text]
        return shlex.join(args)
