"""Fused kernels (fields/kernels.py, cuda/): parity with the PyTorch reference, gradients, dispatch, nvcc check."""

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from fieldstudio import kernels
from fieldstudio.encoders.grid import MultiResGrid
from fieldstudio.encoders.rbf import rbf_reference
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
    out = kernels.rbf(x, idx, centers, shapes, w_fused, freqs, kernel, normalize)
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
    torch.testing.assert_close(kernels.rbf(x, idx, centers, shapes, features, freqs, "ivq_a", True),
                               rbf_reference(x, idx, centers, shapes, features, freqs, "ivq_a", True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [2, 3])
def test_cpu_grid_matches_reference(cpu_ext, dim, dtype):
    assert_grid_parity(dim, dtype)


def test_gradcheck_on_tiny_double_inputs(cpu_ext):
    x, idx, centers, shapes, features, freqs = rbf_case("gauss_a", torch.float64, n=12, n_rbf=6, k=3, n_feat=4)
    w = features.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: kernels.rbf(x, idx, centers, shapes, w, freqs, "gauss_a", True), (w,))
    grid = MultiResGrid(3, n_levels=3, n_features=2, base_resolution=2, max_resolution=16,
                        log2_hashmap_size=6).double()
    xg = torch.rand(10, 3, dtype=torch.float64) * 2 - 1
    emb = grid.embeddings

    def encode(e):
        return kernels._GridFunction.apply(xg, e, grid.resolutions, grid.offsets, grid._axis_mult, grid.n_dense,
                                           grid.log2_hashmap_size, "cpu")
    assert torch.autograd.gradcheck(encode, (emb.detach().clone().requires_grad_(True),))


def test_position_gradients_take_the_reference_and_stay_twice_differentiable(cpu_ext):
    x, idx, centers, shapes, features, freqs = rbf_case("nlin_s", torch.float64, n=120)
    x, idx = x[50:].clone(), idx[50:]  # queries inside the box (rbf_case moves the first 50 far away)
    x.requires_grad_(True)
    w = features.requires_grad_(True)
    out = kernels.rbf(x, idx, centers, shapes, w, freqs, "nlin_s", True)
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
    out = kernels.rbf(x, idx, centers, shapes, w, freqs, "nlin_s", True)
    assert "RBFFunction" not in type(out.grad_fn).__name__
    monkeypatch.setenv(kernels.ENV, "cpu")
    out = kernels.rbf(x, idx, centers, shapes, w, freqs, "nlin_s", True)
    assert "RBFFunction" in type(out.grad_fn).__name__


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

    from fieldstudio.config import RunConfig
    from fieldstudio.field import preset
    from fieldstudio.run import fit

    sphere = trimesh.creation.icosphere(4, radius=30.0)
    sphere.apply_translation([100, -20, 5])
    sphere.export(tmp_path / "sphere.ply")
    cfg = RunConfig(input=str(tmp_path / "sphere.ply"), task="sdf")
    cfg.field = preset("hybrid", "sdf", 150_000)
    cfg.train.steps, cfg.train.device = 300, "cuda"
    cfg.mesh.resolution = 128
    result = fit(cfg, tmp_path / "run")
    assert result.metrics["iou"] >= 0.98 and result.metrics["mesh"]["watertight"]
