"""metrics_table.py
================
A run's metrics (``metrics.json``) as a table, one column per run, so that a second run opened for comparison
reads side by side with the first.
"""

from __future__ import annotations

from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem


def metric_rows(m: dict) -> list[tuple[str, str]]:
    """(name, value) rows of one run's metrics.json; runs of several objects get one row per object."""
    if "objects" in m:
        rows = []
        for r in m["objects"]:
            if "error" in r:
                rows.append((r["name"], "failed: " + r["error"].split(";")[0]))
            else:
                rows.append((r["name"], f"{r.get('steps', '?')} steps, watertight {r['mesh']['watertight']}"))
        rows.append(("total time", f"{m.get('total_seconds', 0):.1f} s"))
        return rows
    rows = [("steps", f"{m['steps']:,}"), ("time", f"{m['total_seconds']:.1f} s"), ("parameters", f"{m['params']:,}")]
    for key, name, fmt in (("iou", "IoU", "{:.4f}"), ("chamfer_l1", "Chamfer L1", "{:.2e}"),
                           ("nae_deg", "normal error", "{:.2f}°"), ("dice", "Dice", "{:.4f}"),
                           ("hd95_mm", "HD95", "{:.2f} mm"), ("volume_ml", "volume", "{:.1f} ml"),
                           ("mask_volume_ml", "mask volume", "{:.1f} ml"), ("psnr", "PSNR", "{:.2f} dB"),
                           ("ssim", "SSIM", "{:.4f}"), ("max_abs_error", "max abs error", "{:.4f}")):
        if key in m:
            rows.append((name, fmt.format(m[key])))
    mesh = m.get("mesh", {})
    if mesh:
        rows.append(("faces", f"{mesh['n_faces']:,}"))
        if "mesh_resolution" in m:  # a small time budget may have taken a coarser grid than the panel's default
            rows.append(("mesh grid", f"{m['mesh_resolution']}³"))
        rows.append(("watertight", str(mesh["watertight"])))
    return rows


class MetricsTable(QTableWidget):
    """Rows: metrics; columns: runs (``show_runs([(title, metrics), ...])``)."""

    def __init__(self, parent=None):
        super().__init__(0, 0, parent)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.setMinimumHeight(120)

    def show_runs(self, runs: list[tuple[str, dict]]) -> None:
        names: list[str] = []
        values: list[dict[str, str]] = []
        for _, m in runs:
            rows = metric_rows(m)
            values.append(dict(rows))
            names += [n for n, _ in rows if n not in names]
        self.clear()
        self.setRowCount(len(names))
        self.setColumnCount(len(runs))
        self.setHorizontalHeaderLabels([title for title, _ in runs])
        self.setVerticalHeaderLabels(names)
        for c, column in enumerate(values):
            for r, name in enumerate(names):
                self.setItem(r, c, QTableWidgetItem(column.get(name, "")))

    def cell(self, metric: str, column: int = 0) -> str:
        """The text shown for ``metric`` in ``column`` ("" when absent)."""
        for r in range(self.rowCount()):
            if self.verticalHeaderItem(r).text() == metric:
                item = self.item(r, column)
                return item.text() if item else ""
        return ""
