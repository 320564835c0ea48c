"""Fused kernels (fields/kernels.py, cuda/, the encoders' fused paths): parity with the PyTorch reference, gradients,
dispatch, the build folder and its lock, nvcc check."""

import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import fieldstudio
from fieldstudio import kernels
from fieldstudio.encoders.grid import MultiResGrid, _GridFunction
from fieldstudio.encoders.rbf import rbf_layer, rbf_reference
from fieldstudio.errors import FieldStudioError

CUDA_DIR = Path(__file__).resolve().parent.parent / "cuda"
FWD_TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
GRAD_RTOL = {torch.float32: 1e-4, torch.float64: 1e-10}


@pytest.fixture(scope="module")
def cpu_ext():
    ext = kernels.extension("cpu")
    assert ext is not None, f"the fused CPU kernels did not build: {kernels._failures.get('cpu')}"
    return ext


def rbf_case(kernel, dtype, n=600, n_rbf=150, k=8, n_feat=32, dim=3, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, dim, generator=g, dtype=dtype) * 2.6 - 1.3  # some queries outside the box
    x[:50] += 10.0  # far from every centre: an empty neighbourhood (all kernel values 0)
    centers = torch.rand(n_rbf, dim, generator=g, dtype=dtype) * 2 - 1
    if kernel == "nlin_s":
        shapes = torch.rand(n_rbf, 1, generator=g, dtype=dtype) * 4 + 1
    else:
        a = torch.randn(n_rbf, dim, dim, generator=g, dtype=dtype)
        shapes = a @ a.transpose(1, 2) * 3 + torch.eye(dim, dtype=dtype)
    features = torch.randn(n_rbf, n_feat, generator=g, dtype=dtype)
    freqs = torch.exp2(torch.linspace(0, 3, n_feat, dtype=dtype))
    idx = torch.randint(n_rbf, (n, k), generator=g)
    to = {"device": device}
    return [t.to(**to) for t in (x, idx, centers, shapes, features, freqs)]



def test_cpu_sine_is_accurate_over_a_wide_argument_range(cpu_ext):
    """The CPU path computes float sines with its own polynomial; arguments far beyond the usual 0..8 (large
    frequencies, unnormalised kernels) must still match to float precision, sign flips included."""
    n_feat = 4096
    freqs = torch.linspace(-1000.0, 1000.0, n_feat)
    # one query on one RBF with a zero inverse width: its kernel value is exactly 1, so out = sin(freqs)
    out = cpu_ext.rbf_forward(torch.zeros(1, 3), torch.zeros(1, 1, dtype=torch.int64), torch.zeros(1, 3),
                              torch.zeros(1), torch.ones(1, n_feat), freqs, 0, False)
    err = (out[0].double() - torch.sin(freqs.double())).abs().max().item()
    assert err < 3e-7, err

def assert_rbf_parity(kernel, dtype, k, device="cpu", normalize=True):
    x, idx, centers, shapes, features, freqs = rbf_case(kernel, dtype, k=k, device=device)
    w_ref = features.clone().requires_grad_(True)
    w_fused = features.clone().requires_grad_(True)
    ref = rbf_reference(x, idx, centers, shapes, w_ref, freqs, kernel, normalize)
    out = rbf_layer(x, idx, centers, shapes, w_fused, freqs, kernel, normalize)
    torch.testing.assert_close(out, ref, atol=FWD_TOL[dtype], rtol=FWD_TOL[dtype])
    if kernel == "nlin_s":  # tents have compact support: far queries have an empty neighbourhood, exactly 0
        assert out[:50].abs().max() == 0
    grad_out = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad(ref, w_ref, grad_out)
    (g_fused,) = torch.autograd.grad(out, w_fused, grad_out)
    scale = g_ref.abs().max()
    assert scale > 0
    assert ((g_fused - g_ref).abs().max() / scale).item() <= GRAD_RTOL[dtype]


def grid_case(dim, dtype, device="cpu"):
    torch.manual_seed(0)
    grid = MultiResGrid(dim, n_levels=6, n_features=2, base_resolution=4, max_resolution=300,
                        log2_hashmap_size=10).to(device=device, dtype=dtype)
    assert 0 < grid.n_dense < grid.n_levels  # both dense and hashed levels
    with torch.no_grad():
        grid.embeddings.uniform_(-1, 1)
    x = (torch.rand(2000, dim, dtype=dtype) * 2.4 - 1.2).to(device)  # some outside: clamped onto the box
    x[0] = 1.0  # the upper face belongs to the last cell
    return grid, x


def assert_grid_parity(dim, dtype, device="cpu"):
    grid, x = grid_case(dim, dtype, device)
    ref = grid.forward_reference(x)
    grad_out = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad(ref, grid.embeddings, grad_out)
    out = grid(x)
    (g_fused,) = torch.autograd.grad(out, grid.embeddings, grad_out)
    torch.testing.assert_close(out, ref, atol=FWD_TOL[dtype], rtol=FWD_TOL[dtype])
    assert ((g_fused - g_ref).abs().max() / g_ref.abs().max()).item() <= GRAD_RTOL[dtype]


# ------------------------------------------------------------------------------------------------ CPU extension

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel", ["nlin_s", "ivq_a", "gauss_a"])
@pytest.mark.parametrize("k", [1, 8])
def test_cpu_rbf_matches_reference(cpu_ext, kernel, dtype, k):
    assert_rbf_parity(kernel, dtype, k)


def test_cpu_rbf_without_normalisation_and_in_2d(cpu_ext):
    assert_rbf_parity("nlin_s", torch.float32, 8, normalize=False)
    x, idx, centers, shapes, features, freqs = rbf_case("ivq_a", torch.float64, dim=2, k=4)
    torch.testing.assert_close(rbf_layer(x, idx, centers, shapes, features, freqs, "ivq_a", True),
                               rbf_reference(x, idx, centers, shapes, features, freqs, "ivq_a", True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [2, 3])
def test_cpu_grid_matches_reference(cpu_ext, dim, dtype):
    assert_grid_parity(dim, dtype)


def test_gradcheck_on_tiny_double_inputs(cpu_ext):
    x, idx, centers, shapes, features, freqs = rbf_case("gauss_a", torch.float64, n=12, n_rbf=6, k=3, n_feat=4)
    w = features.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: rbf_layer(x, idx, centers, shapes, w, freqs, "gauss_a", True), (w,))
    grid = MultiResGrid(3, n_levels=3, n_features=2, base_resolution=2, max_resolution=16,
                        log2_hashmap_size=6).double()
    xg = torch.rand(10, 3, dtype=torch.float64) * 2 - 1
    emb = grid.embeddings

    def encode(e):
        return _GridFunction.apply(xg, e, grid.resolutions, grid.offsets, grid._axis_mult, grid.n_dense,
                                           grid.log2_hashmap_size, "cpu")
    assert torch.autograd.gradcheck(encode, (emb.detach().clone().requires_grad_(True),))


def test_position_gradients_take_the_reference_and_stay_twice_differentiable(cpu_ext):
    x, idx, centers, shapes, features, freqs = rbf_case("nlin_s", torch.float64, n=120)
    x, idx = x[50:].clone(), idx[50:]  # queries inside the box (rbf_case moves the first 50 far away)
    x.requires_grad_(True)
    w = features.requires_grad_(True)
    out = rbf_layer(x, idx, centers, shapes, w, freqs, "nlin_s", True)
    assert out.grad_fn is not None and "RBFFunction" not in type(out.grad_fn).__name__
    (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    (gw,) = torch.autograd.grad(gx.pow(2).sum(), w)  # an eikonal-style penalty trains the features
    assert gw.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ dispatch

def test_environment_forces_the_reference(monkeypatch, cpu_ext):
    x, idx, centers, shapes, features, freqs = rbf_case("nlin_s", torch.float32, n=20)
    w = features.requires_grad_(True)
    monkeypatch.setenv(kernels.ENV, "reference")
    assert kernels.path_for(torch.device("cpu")) == "reference"
    out = rbf_layer(x, idx, centers, shapes, w, freqs, "nlin_s", True)
    assert "RBFFunction" not in type(out.grad_fn).__name__
    monkeypatch.setenv(kernels.ENV, "cpu")
    out = rbf_layer(x, idx, centers, shapes, w, freqs, "nlin_s", True)
    assert "RBFFunction" in type(out.grad_fn).__name__


def test_calls_the_fused_kernels_cannot_serve_take_the_reference(monkeypatch, cpu_ext):
    """The encoders ask kernels.path_for_call; even with the CPU path forced, these calls run the reference."""
    monkeypatch.setenv(kernels.ENV, "cpu")
    x, idx, centers, shapes, features, freqs = rbf_case("ivq_a", torch.float32, n=20)
    w = features.requires_grad_(True)
    assert "RBFFunction" in type(rbf_layer(x, idx, centers, shapes, w, freqs, "ivq_a", True).grad_fn).__name__
    for frozen in ("centers", "shapes", "freqs"):  # the fused backward has no gradient for them
        args = {"centers": centers, "shapes": shapes, "freqs": freqs}
        args[frozen] = args[frozen].clone().requires_grad_(True)
        out = rbf_layer(x, idx, args["centers"], args["shapes"], w, args["freqs"], "ivq_a", True)
        assert "RBFFunction" not in type(out.grad_fn).__name__, frozen
    out = rbf_layer(x.double(), idx, centers, shapes, w, freqs, "ivq_a", True)  # mixed dtypes
    assert "RBFFunction" not in type(out.grad_fn).__name__

    for n_features, fused in ((16, True), (17, False)):  # the fused grid holds at most 16 features per level
        grid = MultiResGrid(2, n_levels=2, n_features=n_features, base_resolution=2, max_resolution=8)
        out = grid(torch.rand(30, 2) * 2 - 1)
        assert ("GridFunction" in type(out.grad_fn).__name__) == fused


@pytest.mark.parametrize("value, words", [("fast", ["not a kernel path", "reference, cpu, cuda"]),
                                          ("cuda", ["tensors are on cpu", "use cpu"])])
def test_bad_kernel_choice_is_a_user_error(monkeypatch, value, words):
    monkeypatch.setenv(kernels.ENV, value)
    with pytest.raises(FieldStudioError) as err:
        kernels.path_for(torch.device("cpu"))
    for w in words:
        assert w in str(err.value)


def test_a_failed_build_falls_back_once_with_a_notice(monkeypatch, caplog):
    monkeypatch.setattr(kernels, "_modules", {})
    monkeypatch.setattr(kernels, "_failures", {})

    def broken(name):
        raise RuntimeError("Error building extension 'fieldstudio_cpu'\nninja: build stopped: no compiler")
    monkeypatch.setattr(kernels, "_build", broken)
    with caplog.at_level("WARNING", logger="fieldstudio"):
        assert kernels.path_for(torch.device("cpu")) == "reference"
        assert kernels.path_for(torch.device("cpu")) == "reference"
    notices = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(notices) == 1 and "no compiler" in notices[0]
    monkeypatch.setenv(kernels.ENV, "cpu")
    with pytest.raises(FieldStudioError, match="cannot be built: ninja: build stopped"):
        kernels.path_for(torch.device("cpu"))


# ------------------------------------------------------------------------------------------------ build folder and lock

def test_kernels_module_does_not_import_the_encoders():
    code = ("import sys, fieldstudio.kernels; "
            "print(sorted(m for m in sys.modules if m.startswith('fieldstudio.encoders')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_build_folder_is_versioned_and_follows_the_sources(tmp_path, monkeypatch):
    sources = tmp_path / "src"
    shutil.copytree(CUDA_DIR, sources)
    monkeypatch.setattr(kernels, "SOURCES", sources)
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "cache"))
    first = kernels.build_folder("cpu")
    assert first.parent == tmp_path / "cache"
    assert first.name.startswith(kernels._spec("cpu")[0] + "-")
    assert f"fs{fieldstudio.__version__}" in first.name and f"torch{torch.__version__}" in first.name
    assert kernels.build_folder("cpu") == first and kernels.build_folder("cuda") != first

    original = (sources / "cpu_ops.cpp").read_text()
    (sources / "cpu_ops.cpp").write_text(original + "\n// edited\n")
    edited = kernels.build_folder("cpu")
    (sources / "cpu_ops.cpp").write_text(original)
    assert edited != first and kernels.build_folder("cpu") == first
    (sources / "common.h").write_text((sources / "common.h").read_text() + "\n// edited\n")  # a header counts too
    assert kernels.build_folder("cpu") != first

    monkeypatch.delenv(kernels.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert kernels.cache_root() == tmp_path / "xdg" / "fieldstudio" / "kernels"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert kernels.cache_root() == tmp_path / "home" / ".cache" / "fieldstudio" / "kernels"


@pytest.fixture
def fake_build(tmp_path, monkeypatch):
    """A fresh kernel cache in tmp_path and a stand-in for torch's compiler; returns (folder of "cpu", calls)."""
    pytest.importorskip("fcntl")
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(kernels.ENV, raising=False)
    monkeypatch.setattr(kernels, "_modules", {})
    monkeypatch.setattr(kernels, "_failures", {})
    calls = []

    def compile_(module, sources, folder, flags):
        assert not (folder / "lock").exists(), "torch would wait forever on this lock"
        calls.append(folder)
        return "built module"
    monkeypatch.setattr(kernels, "_compile", compile_)
    folder = kernels.build_folder("cpu")
    folder.mkdir(parents=True)
    return folder, calls


def within(seconds, fn):
    """fn() run in a thread; fails instead of hanging when it takes longer than ``seconds``."""
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("value", fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    return result["value"]


def messages(caplog, level):
    return [r.getMessage() for r in caplog.records if r.levelname == level and r.name == "fieldstudio"]


def test_a_killed_build_leaves_no_lock_that_hangs_the_next_run(fake_build, caplog):
    folder, calls = fake_build
    # A builder that holds our flock, has created torch's lock file, and is then killed mid-build.
    code = ("import fcntl, pathlib, sys, time; f = open(sys.argv[1] + '/fieldstudio.lock', 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); pathlib.Path(sys.argv[1], 'lock').touch(); print('ready', flush=True); "
            "time.sleep(120)")
    builder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert builder.stdout.readline().strip() == "ready"
    finally:
        builder.send_signal(signal.SIGKILL)
        builder.wait(30)
    assert (folder / "lock").exists()
    with caplog.at_level("INFO", logger="fieldstudio"):
        assert within(30, lambda: kernels.extension("cpu")) == "built module"
    assert calls == [folder] and not (folder / "lock").exists()
    warnings = messages(caplog, "WARNING")
    assert len(warnings) == 1 and "stale build lock" in warnings[0] and str(folder / "lock") in warnings[0]
    infos = messages(caplog, "INFO")
    assert not any("waiting" in m for m in infos)
    assert sum("compiling the fused CPU kernels" in m for m in infos) == 1  # nothing built in this folder yet


def test_the_compile_notice_is_only_logged_when_a_build_is_needed(fake_build, caplog):
    folder, calls = fake_build
    (folder / (kernels._spec("cpu")[0] + ".so")).write_bytes(b"")  # built before: torch only loads it
    with caplog.at_level("INFO", logger="fieldstudio"):
        assert kernels.extension("cpu") == "built module"
    assert calls == [folder]
    assert not any("compiling" in m for m in messages(caplog, "INFO")) and not messages(caplog, "WARNING")


def test_a_live_builder_is_waited_for_and_a_stuck_one_falls_back(fake_build, caplog, monkeypatch):
    import fcntl

    folder, calls = fake_build
    monkeypatch.setattr(kernels, "_POLL_S", 0.02)
    other = open(folder / kernels.LOCK_NAME, "a")  # another open file: flock conflicts as with another process
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        monkeypatch.setattr(kernels, "BUILD_WAIT_S", 0.3)
        with caplog.at_level("INFO", logger="fieldstudio"):
            assert within(30, lambda: kernels.extension("cpu")) is None
        assert calls == []
        waits = [m for m in messages(caplog, "INFO") if "waiting for another fieldstudio process" in m]
        assert len(waits) == 1
        (warning,) = messages(caplog, "WARNING")
        assert "using the PyTorch reference" in warning and f"delete the folder {folder}" in warning

        caplog.clear()
        monkeypatch.setattr(kernels, "_failures", {})
        monkeypatch.setattr(kernels, "BUILD_WAIT_S", 60.0)
        threading.Timer(0.3, lambda: fcntl.flock(other, fcntl.LOCK_UN)).start()
        with caplog.at_level("INFO", logger="fieldstudio"):
            assert within(30, lambda: kernels.extension("cpu")) == "built module"
        assert calls == [folder]
        assert sum("waiting for another" in m for m in messages(caplog, "INFO")) == 1
    finally:
        other.close()


PROBE = """#include <Python.h>
static struct PyModuleDef probe = {PyModuleDef_HEAD_INIT, "fs_lock_probe", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit_fs_lock_probe(void) { return PyModule_Create(&probe); }
"""


@pytest.mark.skipif(shutil.which("ninja") is None or shutil.which("c++") is None, reason="needs ninja and c++")
def test_a_real_build_goes_through_a_stale_torch_lock(tmp_path, monkeypatch, caplog):
    """torch's own load() into our folder, with the lock file a killed build leaves: it must not wait forever."""
    pytest.importorskip("fcntl")
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "cache"))
    source = tmp_path / "probe.cpp"
    source.write_text(PROBE)
    folder = kernels._folder("fs_lock_probe", [source], {})
    folder.mkdir(parents=True)
    (folder / "lock").touch()
    with caplog.at_level("INFO", logger="fieldstudio"):
        module = within(180, lambda: kernels._build_in_folder("probe", "fs_lock_probe", [source], {}))
    assert module.__name__ == "fs_lock_probe" and (folder / "fs_lock_probe.so").exists()
    assert not (folder / "lock").exists()
    assert any("stale build lock" in m for m in messages(caplog, "WARNING"))


# ------------------------------------------------------------------------------------------------ CUDA sources

@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("source", sorted(p.name for p in CUDA_DIR.glob("*.cu")))
def test_cuda_sources_compile_with_nvcc(tmp_path, source):
    cmd = ["nvcc", "-std=c++17", "-O1", "-c", str(CUDA_DIR / source), "-I", str(CUDA_DIR), "-o",
           str(tmp_path / "out.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out.o").stat().st_size > 0


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel", ["nlin_s", "ivq_a", "gauss_a"])
def test_cuda_rbf_matches_reference(kernel, dtype):
    assert kernels.path_for(torch.device("cuda")) == "cuda"
    for k in (1, 8):
        assert_rbf_parity(kernel, dtype, k, device="cuda")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [2, 3])
def test_cuda_grid_matches_reference(dim, dtype):
    assert_grid_parity(dim, dtype, device="cuda")


@pytest.mark.gpu
@gpu
def test_sdf_fit_on_the_gpu(tmp_path):
    import trimesh

    from fieldstudio.api import Request, fit_job

    sphere = trimesh.creation.icosphere(4, radius=30.0)
    sphere.apply_translation([100, -20, 5])
    sphere.export(tmp_path / "sphere.ply")
    request = Request(tmp_path / "sphere.ply", field="hybrid", params=150_000, steps=300, resolution=128,
                      overrides={"train.device": "cuda"})
    result = fit_job(request, tmp_path / "run").run()
    assert result.metrics["iou"] >= 0.98 and result.metrics["mesh"]["watertight"]
