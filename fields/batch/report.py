"""report.py
=========
A batch's report, rewritten atomically whenever an item starts or ends: ``report.json`` (every row, for scripts)
and ``report.html`` (one self-contained page: a table sortable by any column, with each item's status, time, steps,
headline metrics, thumbnail and loss curve). While the batch runs the page reloads itself every 10 s, so a browser
left open on it shows the progress.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
import os
from pathlib import Path

from fieldstudio.batch.item import HEADLINE
from fieldstudio.io import atomic_write_json, atomic_write_text

STATUS_ORDER = {"failed": 0, "cancelled": 1, "running": 2, "pending": 3, "done": 4}
EXTRA_COLUMNS = (("objects", "objects"), ("watertight", "watertight"))


def write_report(out_dir: Path, report: dict) -> None:
    """``report.json`` and ``report.html`` in ``out_dir`` (each written, then renamed into place)."""
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.html", render_html(report, out_dir))


def counts(rows: list[dict]) -> dict[str, int]:
    out = {k: 0 for k in STATUS_ORDER}
    for r in rows:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


def _fmt(value, key: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if key in ("iou", "dice", "ssim"):
            return f"{value:.4f}"
        if key in ("psnr", "nae_deg", "hd95_mm", "volume_ml"):
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def _seconds(s) -> str:
    if s is None:
        return ""
    s = float(s)
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _sparkline(series: list[list[list[float]]], width: int = 140, height: int = 44) -> str:
    """Loss against step (log scale) as an inline SVG, one polyline per object."""
    pts = [p for s in series for p in s if p[1] > 0]
    if len(pts) < 2:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(math.log10(p[1]) for p in pts), max(math.log10(p[1]) for p in pts)
    sx, sy = (width - 4) / max(x1 - x0, 1), (height - 4) / max(y1 - y0, 1e-9)
    colours = ("#3b6ea8", "#c9822b", "#4f9a4f", "#a85a9a", "#5a8fb0", "#b0a040", "#7a6ab8", "#c85a5a")
    lines = []
    for k, s in enumerate(series):
        xy = " ".join(f"{2 + (p[0] - x0) * sx:.1f},{height - 2 - (math.log10(p[1]) - y0) * sy:.1f}"
                      for p in s if p[1] > 0)
        if xy:
            lines.append(f'<polyline points="{xy}" fill="none" stroke="{colours[k % len(colours)]}" '
                         'stroke-width="1.3"/>')
    last = series[0][-1] if series and series[0] else pts[-1]
    title = f"loss (log scale) from {10 ** y1:.3g} to {last[1]:.3g} at step {int(last[0]):,}"
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}"><title>{html.escape(title)}'
            f'</title><rect width="{width}" height="{height}" fill="#fafafa"/>{"".join(lines)}</svg>')


def _thumbnail(out_dir: Path, row: dict) -> str:
    if not row.get("thumbnail"):
        return ""
    path = out_dir / row["name"] / row["thumbnail"]
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return ""
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(row["name"])}" width="96">'


def shown_path(path: str, base: str | Path) -> str:
    """``path`` relative to ``base`` (the manifest's folder) when that is shorter, as the manifest wrote it."""
    try:
        rel = os.path.relpath(path, base)
    except ValueError:  # another drive
        return str(path)
    return rel if len(rel) < len(str(path)) else str(path)


def render_html(report: dict, out_dir: Path) -> str:
    rows = report["items"]
    base = Path(report.get("manifest", ".")).parent
    keys = [(k, t) for k, t in HEADLINE + EXTRA_COLUMNS if any(k in (r.get("metrics") or {}) for r in rows)]
    c = counts(rows)
    running = report.get("state") == "running"
    head = ["", "name", "status", "time", "steps", *[t for _, t in keys], "loss", "error"]
    sort_types = ["none", "text", "num", "num", "num", *["num"] * len(keys), "none", "text"]
    th = "".join(f'<th data-type="{s}">{html.escape(h)}</th>' for h, s in zip(head, sort_types))
    body = []
    for r in rows:
        m = r.get("metrics") or {}
        status = r["status"] + (f" {100 * r['fraction']:.0f} %" if r["status"] == "running" and r.get("fraction")
                                else "")
        cells = [
            ("", _thumbnail(out_dir, r)),
            (r["name"], f'<a href="{html.escape(r["name"])}/">{html.escape(r["name"])}</a>'
                        f'<div class="input">{html.escape(shown_path(r.get("input", ""), base))}</div>'),
            (STATUS_ORDER.get(r["status"], 9), f'<span class="st {r["status"]}">{html.escape(status)}</span>'
                                               + (" <small>(earlier run)</small>" if r.get("reused") else "")),
            (r.get("seconds") if r.get("seconds") is not None else "", _seconds(r.get("seconds"))),
            (r.get("steps") if r.get("steps") is not None else "", _fmt(r.get("steps"))),
            *[(m.get(k, ""), _fmt(m.get(k), k) if not (k == "watertight" and "objects" in m)
               else f'{m["watertight"]} of {m["objects"]}') for k, _ in keys],
            ("", _sparkline(r.get("history") or [])),
            (r.get("error") or "", f'<div class="err">{html.escape(r.get("error") or "")}</div>'),
        ]
        tds = "".join(f'<td data-v="{html.escape(str(v))}">{content}</td>' for v, content in cells)
        body.append(f'<tr data-name="{html.escape(r["name"])}">{tds}</tr>')
    refresh = '<meta http-equiv="refresh" content="10">' if running else ""
    summary = ", ".join(f"{n} {k}" for k, n in c.items() if n)
    state = "running (this page reloads every 10 s)" if running else report.get("state", "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{refresh}
<title>fieldstudio batch: {html.escape(report.get("manifest_name", ""))}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 4px 10px; border-bottom: 1px solid #e4e4e4;
  text-align: left; vertical-align: middle; }}
th {{ background: #f3f3f3; cursor: pointer; user-select: none; position: sticky; top: 0; }}
th[data-type=none] {{ cursor: default; }} th.asc::after {{ content: " ▲"; }} th.desc::after {{ content: " ▼"; }}
td[data-v] {{ font-variant-numeric: tabular-nums; white-space: nowrap; }} .input {{ color: #888; font-size: 11px; }}
.err {{ color: #a33; max-width: 420px; font-size: 12px; }} .st {{ padding: 1px 6px; border-radius: 3px; }}
.done {{ background: #dcefdc; }} .failed {{ background: #f6d6d6; }} .running {{ background: #dde8f6; }}
.cancelled {{ background: #f4ead0; }} .pending {{ background: #eee; }} small {{ color: #888; }}
</style></head><body>
<h2>fieldstudio batch: {html.escape(report.get("manifest_name", ""))}</h2>
<p>{html.escape(summary)} of {len(rows)} items; {html.escape(state)}. Executor {html.escape(report.get("executor", ""))},
{_how(report)}. Wall time {_seconds(report.get("wall_seconds"))}.
Updated {html.escape(report.get("updated", ""))}. Manifest: {html.escape(report.get("manifest", ""))}.</p>
<table id="items"><thead><tr>{th}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
<script>
document.querySelectorAll("#items th").forEach((th, col) => {{
  if (th.dataset.type === "none") return;
  th.addEventListener("click", () => {{
    const asc = !th.classList.contains("asc");
    document.querySelectorAll("#items th").forEach(h => h.classList.remove("asc", "desc"));
    th.classList.add(asc ? "asc" : "desc");
    const tbody = document.querySelector("#items tbody");
    const key = tr => tr.children[col].dataset.v;
    const num = th.dataset.type === "num";
    const rows = [...tbody.rows].sort((a, b) => {{
      let x = key(a), y = key(b);
      if (num) {{ x = x === "" ? Infinity : +x; y = y === "" ? Infinity : +y; return asc ? x - y : y - x; }}
      return asc ? x.localeCompare(y) : y.localeCompare(x);
    }});
    rows.forEach(r => tbody.appendChild(r));
  }});
}});
</script>
</body></html>
"""


def _how(report: dict) -> str:
    threads = report.get("threads") or 1
    per = f"{threads} thread{'s' if threads != 1 else ''}"
    if report.get("executor") == "ray":
        return f"Ray tasks of {threads} CPU{'s' if threads != 1 else ''}"
    workers = report.get("workers") or 1
    return f"{workers} worker{'s' if workers != 1 else ''} &times; {per}"


def timestamp() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")
