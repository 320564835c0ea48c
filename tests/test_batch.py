"""Batch runs: manifests checked before anything runs, one broken item among good ones, a killed batch resumed, Ray
against the local pool, and the report (json and html)."""

import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli

FLAT_OBJ = "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"  # reads fine, fails in the worker: it encloses no volume


def make_pictures(folder: Path, n: int, size: int = 16) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:size, 0:size] / size
    paths = []
    for k in range(n):
        rgb = np.stack([np.sin((4 + k) * x), np.cos(5 * y), x * y], -1) * 0.5 + 0.5
        paths.append(folder / f"pic{k}.png")
        Image.fromarray((rgb * 255).astype(np.uint8)).save(paths[-1])
    return paths


class ReportRows(HTMLParser):
    """The item rows of report.html (``tr data-name``), their cell count, and the embedded thumbnails."""

    def __init__(self):
        super().__init__()
        self.rows, self.images, self.scripts = {}, [], 0
        self._row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-name" in a:
            self._row = a["data-name"]
            self.rows[self._row] = 0
        elif tag == "td" and self._row is not None:
            self.rows[self._row] += 1
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "script":
            self.scripts += 1


def parse_report(out: Path) -> ReportRows:
    parser = ReportRows()
    parser.feed((out / "report.html").read_text(encoding="utf-8"))
    parser.close()
    return parser


# ------------------------------------------------------------------------------------------------ manifests

def test_manifest_problems_are_listed_one_line_each_before_anything_runs(tmp_path, monkeypatch, capsys):
    make_pictures(tmp_path / "in", 2)
    manifest = tmp_path / "m.toml"
    manifest.write_text('inputs = ["in/*.png", "in/*.nii.gz", "in/missing.png"]\n'
                        'time_budgt = 40\nsteps = "many"\n'
                        '[[items]]\ninput = "in/pic0.png"\nevry = 4\n'
                        '[[items]]\ninput = "in/pic1.png"\nname = "pic0"\n')
    code, out, err = run_cli(["batch", manifest, "-o", tmp_path / "out"], monkeypatch, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert all(line.startswith("error: m.toml: ") for line in lines), err
    assert "Traceback" not in err
    text = "\n".join(lines)
    for words in ("'time_budgt' (did you mean 'time_budget'?)", "steps = 'many' is not a whole number",
                  "in/*.nii.gz matches nothing", "in/missing.png not found", "'evry' (did you mean 'every'?)",
                  "share the run folder 'pic0'"):
        assert words in text, words
    assert len(lines) == 6
    assert not (tmp_path / "out").exists()  # nothing written


def test_manifest_defaults_overrides_names_and_csv(tmp_path):
    from fieldstudio.batch import load_manifest

    for sub in ("a", "b"):
        make_pictures(tmp_path / sub, 2)
    (tmp_path / "a" / "scan.nii.gz").write_bytes(b"")
    manifest = tmp_path / "m.toml"
    manifest.write_text('inputs = ["a/*.png", "b/pic0.png", "a/scan.nii.gz"]\nsteps = 30\nevery = 8\n'
                        '[train]\nbatch_size = 512\n'
                        '[[items]]\ninput = "a/pic1.png"\nsteps = 50\nseed = 3\n'
                        '[[items]]\ninput = "b/pic0.png"\nname = "again with mlp"\nfield = "mlp"\n'
                        '[items.train]\nlr = 0.002\n')
    items = {it.name: it for it in load_manifest(manifest).items}
    # equal stems are told apart by their folders; the suffix .nii.gz is one suffix; names are folder-safe
    assert sorted(items) == ["a_pic0", "again_with_mlp", "b_pic0", "pic1", "scan"]
    assert items["pic1"].options == {"steps": 50, "every": 8, "seed": 3}     # [[items]] overrides the defaults
    assert items["a_pic0"].options == {"steps": 30, "every": 8}
    assert items["a_pic0"].overrides == {"train.batch_size": 512}
    assert items["again_with_mlp"].input == items["b_pic0"].input          # a named item is a second fit
    assert items["again_with_mlp"].options["field"] == "mlp"
    assert items["again_with_mlp"].overrides == {"train.batch_size": 512, "train.lr": 0.002}
    assert items["pic1"].request().steps == 50

    listing = tmp_path / "list.csv"
    listing.write_text("input,name,time_budget,train.lr\na/pic0.png,first,12,0.01\nb/pic1.png,,,\n")
    items = load_manifest(listing).items
    assert [it.name for it in items] == ["first", "pic1"]
    assert items[0].options == {"time_budget": 12.0} and items[0].overrides == {"train.lr": 0.01}
    assert items[1].options == {} and items[1].overrides == {}
    plain = tmp_path / "plain.csv"
    plain.write_text("a/pic0.png\n# a comment\nb/pic1.png\n")
    assert [it.name for it in load_manifest(plain).items] == ["pic0", "pic1"]


# ------------------------------------------------------------------------------------------------ running

def test_broken_items_are_reported_and_the_rest_finish(tmp_path, monkeypatch, capsys):
    make_pictures(tmp_path, 2)
    (tmp_path / "corrupt.png").write_bytes(b"not a picture")  # fails while the batch is planned
    (tmp_path / "flat.obj").write_text(FLAT_OBJ)                # fails in its worker
    manifest = tmp_path / "m.toml"
    manifest.write_text('inputs = ["pic*.png", "corrupt.png", "flat.obj"]\nsteps = 30\nresolution = 32\n')
    out = tmp_path / "out"
    code, stdout, err = run_cli(["batch", manifest, "-o", out, "--workers", "2", "--threads", "1"], monkeypatch,
                                capsys)
    assert code == 1, err
    report = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in report["items"]}
    assert [r["name"] for r in report["items"]] == ["pic0", "pic1", "corrupt", "flat"]  # manifest order
    assert {n: r["status"] for n, r in rows.items()} == {"pic0": "done", "pic1": "done", "corrupt": "failed",
                                                         "flat": "failed"}
    assert "not a PNG file" in rows["corrupt"]["error"] and "encloses no volume" in rows["flat"]["error"]
    assert "encloses no volume" in (out / "flat" / "batch.log").read_text()
    for name in ("pic0", "pic1"):
        assert rows[name]["steps"] == 30 and rows[name]["metrics"]["psnr"] > 15
        assert (out / name / "thumbnail.png").exists() and rows[name]["thumbnail"] == "thumbnail.png"
    assert report["state"] == "finished" and report["counts"]["done"] == 2 and report["counts"]["failed"] == 2
    assert "2 done, 2 failed of 4 items" in err and "Traceback" not in err
    html = parse_report(out)
    assert set(html.rows) == set(rows) and len(set(html.rows.values())) == 1  # every item, every column
    assert sum(src.startswith("data:image/png;base64,") for src in html.images) == 2 and html.scripts == 1

    # a rerun skips what finished and tries the failed ones again
    (tmp_path / "flat.obj").unlink()
    code, _, err = run_cli(["batch", manifest, "-o", out], monkeypatch, capsys)
    assert code == 2 and "flat.obj not found" in err


def _batch_processes(out: Path) -> list[int]:
    """Live processes whose command line names this batch's output folder, or that are its pool's workers."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(out) in cmd:
                pids.append(int(proc.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_batch_reruns_only_what_is_left(tmp_path):
    make_pictures(tmp_path, 3)
    manifest = tmp_path / "m.toml"
    manifest.write_text('inputs = ["pic*.png"]\nsteps = 400\n')
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fieldstudio.app.cli", "batch", str(manifest), "-o", str(out), "--workers", "1"]
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline, first_done = time.time() + 120, None
    while time.time() < deadline and first_done is None:
        time.sleep(0.2)
        try:
            rows = json.loads((out / "report.json").read_text())["items"]
        except (OSError, ValueError, KeyError):
            continue
        first_done = next((r["name"] for r in rows if r["status"] == "done"), None)
    assert first_done is not None, proc.stderr.read().decode() if proc.poll() is not None else "no item finished"
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: the worker must notice by itself
    proc.wait()
    done_before = (out / first_done / "metrics.json").stat().st_mtime_ns
    for _ in range(60):  # the orphaned worker saves its item's checkpoint and leaves
        if not _batch_processes(out):
            break
        time.sleep(0.25)
    assert not _batch_processes(out), "a worker outlived its killed batch"

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    rows = {r["name"]: r for r in json.loads((out / "report.json").read_text())["items"]}
    assert all(r["status"] == "done" and r["steps"] == 400 for r in rows.values())
    assert rows[first_done].get("reused") is True                       # not run again ...
    assert (out / first_done / "metrics.json").stat().st_mtime_ns == done_before
    assert sum(bool(r.get("resumed")) for r in rows.values()) >= 1      # ... and the interrupted one resumed
    assert "(finished earlier)" in rerun.stderr


def test_ray_gives_the_same_report_as_the_local_pool(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from fieldstudio.api import batch_job
    from fieldstudio.batch.executors import RayExecutor

    make_pictures(tmp_path, 2)
    (tmp_path / "flat.obj").write_text(FLAT_OBJ)
    manifest = tmp_path / "m.toml"
    manifest.write_text('inputs = ["pic*.png", "flat.obj"]\nsteps = 60\nseed = 1\n')
    token = Path.home() / ".ray" / "auth_token"
    had_token = token.exists()
    reports = {"local": batch_job(manifest, tmp_path / "local", threads=1).start().wait()}
    # One private Ray instance (no dashboard, no token file; ../shared/docs/gui_testing.md) for two batches: run
    # folders written where the nodes see them, and shipped back as from nodes that do not.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        reports["ray"] = batch_job(manifest, tmp_path / "ray", executor="ray", threads=1).start().wait()
        reports["shipped"] = batch_job(manifest, tmp_path / "shipped", executor=RayExecutor(shared=False),
                                       threads=1).start().wait()
    finally:
        ray.shutdown()
    assert token.exists() == had_token

    def essence(report):
        return {r["name"]: (r["status"], r["steps"], r["task"], sorted(r["metrics"]), bool(r["error"]),
                            r["thumbnail"]) for r in report["items"]}

    local = {r["name"]: r for r in reports["local"]["items"]}
    assert local["flat"]["status"] == "failed" and local["pic0"]["status"] == "done"
    for kind in ("ray", "shipped"):
        assert reports[kind]["executor"] == "ray" and essence(reports[kind]) == essence(reports["local"]), kind
        for row in reports[kind]["items"]:
            for key, value in row["metrics"].items():  # same seed, same thread count: the same numbers
                assert value == pytest.approx(local[row["name"]]["metrics"][key], rel=1e-5), (kind, row["name"])
        names = {p.name for p in (tmp_path / kind / "pic0").iterdir()}
        assert {"metrics.json", "checkpoint.pt", "thumbnail.png", "reconstruction.png"} <= names, kind
        assert set(parse_report(tmp_path / kind).rows) == set(local)
    assert not list((tmp_path / "shipped").glob(".*.incoming")) and not list((tmp_path / "shipped").glob(".*.old"))


# ------------------------------------------------------------------------------------------------ pieces

def test_folder_state_and_multi_object_summary(tmp_path):
    from fieldstudio.batch.item import folder_state, summarize

    run = tmp_path / "run"
    assert folder_state(run) == "new"
    (run / "liver").mkdir(parents=True)
    (run / "liver" / "checkpoint.pt").write_bytes(b"")
    assert folder_state(run) == "partial"
    history = [{"step": s, "loss": 1.0 / s} for s in range(1, 200)]
    (run / "liver" / "metrics.json").write_text(json.dumps(
        {"dice": 0.9, "volume_ml": 1500.0, "steps": 199, "total_seconds": 5.0, "history": history,
         "mesh": {"watertight": True}}))
    (run / "metrics.json").write_text(json.dumps(
        {"objects": [{"name": "liver", "steps": 199, "total_seconds": 5.0},
                     {"name": "spleen", "error": "no surface: the field has no zero level; rerun ..."}],
         "total_seconds": 7.5}))
    assert folder_state(run) == "partial"  # an object failed: the next batch tries it again
    row = summarize("case", "case.nii.gz", run)
    assert row["status"] == "failed" and "spleen: no surface" in row["error"]
    assert row["metrics"] == {"objects": 2, "watertight": 1, "dice": 0.9, "volume_ml": 1500.0}  # of what is done
    assert row["steps"] == 199 and len(row["history"]) == 1 and len(row["history"][0]) <= 60
    assert row["history"][0][-1] == [199, 1.0 / 199]


def test_mesh_thumbnails_show_each_object(tmp_path):
    import trimesh

    from fieldstudio.thumbnails import PALETTE, render_meshes

    a = trimesh.creation.icosphere(2, radius=1.0)
    b = trimesh.creation.box([1, 1, 1])
    b.apply_translation([0, 2.5, 0])
    img = render_meshes([a, b], size=96).astype(float) / 255
    assert img.shape == (96, 96, 3)
    assert np.allclose(img[0, 0], 1.0) and np.allclose(img[-1, -1], 1.0)  # background in the corners
    hue = img / np.maximum(img.max(-1, keepdims=True), 1e-6)
    for colour in PALETTE[:2]:  # both objects, each in its own colour
        target = colour / colour.max()
        assert (np.abs(hue - target).max(-1) < 0.03).sum() > 50
