"""Shared fixtures: small inputs made by the tests themselves (no data from outside the project)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@pytest.fixture(autouse=True)
def _two_threads():
    # CI has 2 cores; keep runs comparable and deterministic.
    torch.set_num_threads(2)


@pytest.fixture
def sphere_file(tmp_path) -> Path:
    """A unit-radius icosphere in an off-centre millimetre frame (radius 20 mm at (5, -3, 40))."""
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=20.0)
    mesh.apply_translation([5.0, -3.0, 40.0])
    path = tmp_path / "sphere.ply"
    mesh.export(path)
    return path


@pytest.fixture
def trefoil_file() -> Path:
    return ASSETS / "trefoil.ply"


def random_points(n: int, dim: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (n, dim)).astype(np.float32))


@pytest.fixture
def quick_slices_config():
    """A factory of quick cross-section fit configs through the API: the default field for cross-sections (Fourier
    MLP, 40k), 4096-point batches, ``steps`` steps, meshed at ``resolution``."""
    from fieldstudio.api import Request, resolve

    def make(path, steps: int, resolution: int, **request):
        return resolve(Request(path, task="slices", steps=steps, resolution=resolution,
                               overrides={"train.batch_size": 4096}, **request))

    return make


@pytest.fixture
def two_label_csl(tmp_path):
    """A sphere (label 1) and a box (label 2) cut by the same 10 planes, as a segmentation tool writes them.
    Returns (CSL path, sphere, box)."""
    from fieldstudio.data.cross_sections import write_csl
    from fieldstudio.data.slicing import slice_mesh

    sphere = trimesh.creation.icosphere(3, radius=1.0)
    box = trimesh.creation.box([1.6, 1.6, 1.6])
    box.apply_translation([3, 0, 0.5])
    cs = slice_mesh(trimesh.util.concatenate([sphere, box]), 10, "parallel", axis="z")
    for plane in cs.planes:
        for loop in plane.loops:
            loop.label = 1 if loop.points[:, 0].mean() < 1.5 else 2
    return write_csl(cs, tmp_path / "two.csl"), sphere, box


def run_cli(args, monkeypatch, capsys):
    """Run ``fieldstudio ARGS`` in-process; returns (exit code, stdout, stderr)."""
    import sys

    from fieldstudio.app import cli

    monkeypatch.setattr(sys, "argv", ["fieldstudio", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture
def window(qtbot, tmp_path):
    """The main window, its settings in tmp_path; errors go to the status bar (and ``w.errors``) instead of a
    modal dialog."""
    from PySide6.QtCore import QSettings

    QSettings.setPath(QSettings.NativeFormat, QSettings.UserScope, str(tmp_path / "settings"))
    from fieldstudio.app.gui.window import MainWindow

    w = MainWindow()
    w.quiet = True
    w.errors = []
    original = w.error
    w.error = lambda message: (w.errors.append(message), original(message))
    qtbot.addWidget(w)
    w.show()
    return w
