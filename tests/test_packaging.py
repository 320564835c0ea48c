"""The wheel carries the kernel sources and the built-in example, installs one package (``fieldstudio``) and no
generic top-level modules, and its program knows its version."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: setuptools and wheel come from the test extra, so this works offline.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, cwd=out)
    (path,) = out.glob("fieldstudio-*.whl")
    return path


def test_wheel_holds_one_package_with_kernel_sources_and_assets(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"fieldstudio"}  # no `fields`, no `app` in site-packages
    for needed in ("fieldstudio/api.py", "fieldstudio/app/cli.py", "fieldstudio/cuda/cpu_ops.cpp",
                   "fieldstudio/cuda/common.h", "fieldstudio/cuda/rbf_kernels.cu", "fieldstudio/cuda/cuda_ops.cpp",
                   "fieldstudio/assets/trefoil.ply", "fieldstudio/tasks/registry.py", "fieldstudio/batch/report.py",
                   "fieldstudio/cuda/checks.h", "fieldstudio/cuda/launch.h", "fieldstudio/cuda/emulated/cuda_runtime.h"):
        assert needed in names, needed
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "fieldstudio = fieldstudio.app.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_layout_finds_its_resources(wheel, tmp_path):
    """Unpacked as pip would install it, the package finds kernel sources and assets inside itself."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import fieldstudio, fieldstudio.resources as r; "
            "print(fieldstudio.__file__); print(r.kernel_sources()); print(r.assets())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}).stdout.split()
    assert all(line.startswith(str(site)) for line in out), out
    assert (Path(out[1]) / "cpu_ops.cpp").exists() and (Path(out[2]) / "trefoil.ply").exists()


def test_version_from_the_console_script():
    exe = Path(sys.executable).parent / "fieldstudio"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True).stdout
    import fieldstudio

    assert out.strip() == f"fieldstudio {fieldstudio.__version__}"
