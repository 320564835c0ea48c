"""The CUDA kernels without a GPU: ``cuda/rbf_kernels.cu`` and ``grid_kernels.cu`` compiled as C++ with a serial
launch loop (``cuda/emulated/``), called through the real bindings (``cuda/cuda_ops.cpp``) and compared with the
PyTorch reference, forward and backward; a subset again under AddressSanitizer and UndefinedBehaviorSanitizer.
Only a host compiler is needed. Checked by hand once (2026-11-30): the RBF forward kernel reading ``freqs[0]`` for
every feature failed 49 of these 69 tests, the grid backward kernel scattering ``g[0]`` for every feature 9."""

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fieldstudio import kernels
from fieldstudio.encoders.grid import MultiResGrid
from fieldstudio.encoders.rbf import KERNEL_IDS, rbf_reference

pytestmark = pytest.mark.emulated_cuda
if shutil.which(os.environ.get("CXX", "c++")) is None:
    pytest.skip("no host C++ compiler", allow_module_level=True)


@pytest.fixture(scope="module")
def emu():
    return kernels.emulated_extension()


def tol(dtype):
    return {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-11}


def rbf_case(dim, k, kernel, dtype, n=37, n_rbf=11, n_feat=5, missing=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, dim, generator=g, dtype=torch.float64) * 2 - 1
    centers = torch.rand(n_rbf, dim, generator=g, dtype=torch.float64) * 2 - 1
    if kernel == "nlin_s":
        shapes = 0.5 + 2 * torch.rand(n_rbf, 1, generator=g, dtype=torch.float64)
    else:
        a = torch.randn(n_rbf, dim, dim, generator=g, dtype=torch.float64)
        shapes = a @ a.transpose(1, 2) + 0.5 * torch.eye(dim, dtype=torch.float64)
    idx = torch.stack([torch.randperm(n_rbf, generator=g)[:k] for _ in range(n)])
    if missing:  # a third of the neighbour slots empty (-1), and one query with none at all
        idx[torch.rand(n, k, generator=g) < 0.33] = -1
        idx[0] = -1
    features = torch.randn(n_rbf, n_feat, generator=g, dtype=torch.float64)
    freqs = torch.exp2(torch.linspace(0, 3, n_feat, dtype=torch.float64))
    cast = lambda t: t.to(dtype)  # noqa: E731
    return cast(x), idx, cast(centers), cast(shapes), cast(features), cast(freqs)


def rbf_expected(x, idx, centers, shapes, features, freqs, kernel, normalize, grad):
    """The reference, with empty slots (-1) pointing at an extra RBF whose value and feature are 0."""
    n_rbf, dim = centers.shape
    far = torch.cat([centers, torch.full((1, dim), 1e3, dtype=centers.dtype)])
    shapes_ = torch.cat([shapes, (shapes[:1] * 0 + 1) * (1e6 if shapes.ndim == 2 else torch.eye(dim) * 1e6)])
    feats = torch.cat([features, torch.zeros(1, features.shape[1], dtype=features.dtype)]).requires_grad_(True)
    out = rbf_reference(x, torch.where(idx < 0, n_rbf, idx), far, shapes_, feats, freqs, kernel, normalize)
    (out * grad).sum().backward()
    return out.detach(), feats.grad[:n_rbf]


RBF_CASES = list(itertools.product((2, 3), (1, 8), ("nlin_s", "ivq_a", "gauss_a"), (False, True),
                                   (torch.float32, torch.float64)))


@pytest.mark.parametrize("dim,k,kernel,normalize,dtype", RBF_CASES)
def test_rbf_kernels_match_the_reference(emu, dim, k, kernel, normalize, dtype):
    for missing in (False, True):
        x, idx, centers, shapes, features, freqs = rbf_case(dim, k, kernel, dtype, missing=missing)
        grad = torch.randn(x.shape[0], features.shape[1], dtype=dtype, generator=torch.Generator().manual_seed(1))
        want, want_grad = rbf_expected(x, idx, centers, shapes, features, freqs, kernel, normalize, grad)
        flat = shapes.reshape(shapes.shape[0], -1).contiguous()
        got = emu.rbf_forward(x, idx, centers, flat, features, freqs, KERNEL_IDS[kernel], normalize, 0)
        got_grad = emu.rbf_backward(grad, x, idx, centers, flat, freqs, features.shape[0], KERNEL_IDS[kernel],
                                    normalize, 0)
        torch.testing.assert_close(got, want, **tol(dtype))
        torch.testing.assert_close(got_grad, want_grad, **tol(dtype))


def test_rbf_kernels_with_no_queries_and_a_shuffled_thread_order(emu):
    x, idx, centers, shapes, features, freqs = rbf_case(3, 8, "gauss_a", torch.float64, n=200)
    flat = shapes.reshape(shapes.shape[0], -1).contiguous()
    grad = torch.randn(200, features.shape[1], dtype=torch.float64)
    args = (centers, flat)
    first = emu.rbf_backward(grad, x, idx, *args, freqs, 11, 2, True, 0)
    emu.set_thread_order(12345)
    try:
        shuffled = emu.rbf_backward(grad, x, idx, *args, freqs, 11, 2, True, 0)
    finally:
        emu.set_thread_order(0)
    torch.testing.assert_close(shuffled, first, rtol=1e-12, atol=1e-12)  # only the summation order differs
    empty = emu.rbf_forward(x[:0], idx[:0], centers, flat, features, freqs, 2, True, 0)
    assert empty.shape == (0, features.shape[1])
    assert emu.rbf_backward(grad[:0], x[:0], idx[:0], *args, freqs, 11, 2, True, 0).abs().sum() == 0


GRID_CASES = [  # dim, levels, features, base, finest, log2 table size (small tables: hashed levels appear)
    (2, 1, 1, 4, 4, 12), (2, 4, 2, 4, 64, 8), (3, 2, 16, 2, 8, 10), (3, 8, 4, 4, 128, 10), (2, 32, 1, 2, 512, 9),
    (3, 5, 3, 3, 40, 19),
]


@pytest.mark.parametrize("dim,levels,n_feat,base,finest,log2", GRID_CASES)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_grid_kernels_match_the_reference(emu, dim, levels, n_feat, base, finest, log2, dtype):
    grid = MultiResGrid(dim, levels, n_feat, base, finest, log2, init_scale=1.0,
                        generator=torch.Generator().manual_seed(0)).to(dtype)
    g = torch.Generator().manual_seed(2)
    inside = torch.rand(40, dim, generator=g, dtype=torch.float64) * 2 - 1
    outside = torch.rand(8, dim, generator=g, dtype=torch.float64) * 4 - 2           # clamped onto the box
    res = int(grid.resolutions[-1])
    faces = torch.randint(0, res + 1, (8, dim), generator=g).double() / res * 2 - 1   # on cell faces and corners
    x = torch.cat([inside, outside, faces, -torch.ones(1, dim), torch.ones(1, dim)]).to(dtype)
    emb = grid.embeddings.detach().clone().requires_grad_(True)
    grid.embeddings = torch.nn.Parameter(emb)
    want = grid.forward_reference(x)
    grad = torch.randn(want.shape, generator=g, dtype=torch.float64).to(dtype)
    (want * grad).sum().backward()
    layout = grid.host_layout()
    got = emu.grid_forward(x, grid.embeddings.detach(), *layout, grid.n_dense, grid.log2_hashmap_size, 0)
    got_grad = emu.grid_backward(grad, x, grid.embeddings.shape[0], *layout, grid.n_dense,
                                 grid.log2_hashmap_size, 0)
    torch.testing.assert_close(got, want.detach(), **tol(dtype))
    torch.testing.assert_close(got_grad, grid.embeddings.grad, **tol(dtype))


@pytest.mark.parametrize("call,words", [
    ("rbf_forward(x4, idx, c4, s, f, q, 0, True, 0)", "RBF kernels support dim 2 and 3"),
    ("rbf_backward(g, x, big, c, s, q, 11, 0, True, 0)", "1 to 64 neighbours per query"),
    ("rbf_forward(x, big, c, s, f, q, 0, True, 0)", "1 to 64 neighbours per query"),
    ("grid_forward(x, e, r33, o33, m33, 0, 19, 0)", "1 to 32 grid levels"),
])
def test_bindings_refuse_what_the_kernels_would_read_out_of_bounds(emu, call, words):
    x, idx, c, s4, f, q = rbf_case(3, 8, "nlin_s", torch.float32)
    s = s4.reshape(11, -1).contiguous()
    names = {"x": x, "idx": idx, "c": c, "s": s, "f": f, "q": q, "g": torch.ones(len(x), 5),
             "x4": torch.zeros(len(x), 4), "c4": torch.zeros(11, 4), "big": torch.zeros(len(x), 65, dtype=torch.long),
             "e": torch.zeros(33 * 8, 1), "r33": torch.full((33,), 2, dtype=torch.long),
             "o33": torch.arange(34, dtype=torch.long) * 8, "m33": torch.ones(33, 3, dtype=torch.long)}
    with pytest.raises(RuntimeError, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        eval("emu." + call, {"emu": emu}, names)


def test_neighbour_indices_out_of_range(emu):
    # The CUDA kernels treat them as missing (checking them would stall the GPU once per call) and never read
    # them; the CPU binding refuses them, as the reference does.
    x, idx, c, s4, f, q = rbf_case(3, 8, "nlin_s", torch.float32)
    s = s4.reshape(11, -1).contiguous()
    bad = idx.clone()
    bad[::3, 2] = 11 + torch.arange(len(bad[::3, 2]))  # past the last RBF
    bad[1::5, 4] = -7                                     # below -1
    masked = torch.where((bad >= 11) | (bad < 0), -1, bad)
    g = torch.ones(len(x), 5)
    torch.testing.assert_close(emu.rbf_forward(x, bad, c, s, f, q, 0, True, 0),
                               emu.rbf_forward(x, masked, c, s, f, q, 0, True, 0))
    torch.testing.assert_close(emu.rbf_backward(g, x, bad, c, s, q, 11, 0, True, 0),
                               emu.rbf_backward(g, x, masked, c, s, q, 11, 0, True, 0))
    cpu = kernels.extension("cpu")
    if cpu is None:
        pytest.skip("no fused CPU kernels here")
    with pytest.raises(RuntimeError, match=r"neighbour indices must be in \[-1, 11\), got -7..\d+"):
        cpu.rbf_forward(x, bad, c, s, f, q, 0, True)
    with pytest.raises(RuntimeError, match=r"neighbour indices must be in"):
        cpu.rbf_backward(g, x, bad, c, s, q, 11, 0, True)


def test_fused_calls_beyond_the_limits_take_the_reference():
    # Before: the CPU binding refused K > 64 with an error and the CUDA launch would have failed.
    from fieldstudio.encoders.rbf import rbf_layer

    x, idx, c, s, f, q = rbf_case(3, 8, "nlin_s", torch.float32, n_rbf=80)
    idx = torch.stack([torch.randperm(80)[:70] for _ in range(len(x))])  # K = 70 > 64
    torch.testing.assert_close(rbf_layer(x, idx, c, s, f, q, "nlin_s", True),
                               rbf_reference(x, idx, c, s, f, q, "nlin_s", True))
    grid = MultiResGrid(2, 33, 1, 2, 4096, 10)  # 33 levels > 32
    x2 = torch.rand(9, 2) * 2 - 1
    torch.testing.assert_close(grid(x2), grid.forward_reference(x2))


SANITIZED = """
import ctypes, sys
import torch
sys.path.insert(0, {tests!r})
import test_emulated_cuda as t

lib = ctypes.CDLL({lib!r})
P = ctypes.c_void_p
for name in ("fs_rbf_forward_f32", "fs_rbf_backward_f32", "fs_grid_forward_f64", "fs_grid_backward_f64"):
    getattr(lib, name).restype = ctypes.c_int
ptr = lambda a: P(a.data_ptr())
I, L = ctypes.c_int, ctypes.c_int64


class Launchers:
    # The bindings' calls, made on the raw launchers of the sanitized library (checks as in checks.h passed).
    def rbf_forward(self, x, idx, c, s, f, q, kernel, normalize, stream):
        out = torch.empty(len(x), f.shape[1], dtype=x.dtype)
        assert lib.fs_rbf_forward_f32(ptr(x), ptr(idx), ptr(c), ptr(s), ptr(f), ptr(q), L(len(x)), L(len(c)),
                                      I(idx.shape[1]),
                                      I(x.shape[1]), I(f.shape[1]), I(kernel), I(normalize), ptr(out), P(0)) == 0
        return out

    def rbf_backward(self, g, x, idx, c, s, q, n_rbf, kernel, normalize, stream):
        out = torch.zeros(n_rbf, g.shape[1], dtype=x.dtype)
        assert lib.fs_rbf_backward_f32(ptr(g), ptr(x), ptr(idx), ptr(c), ptr(s), ptr(q), L(len(x)), L(n_rbf),
                                       I(idx.shape[1]),
                                       I(x.shape[1]), I(g.shape[1]), I(kernel), I(normalize), ptr(out), P(0)) == 0
        return out

    def grid_forward(self, x, e, r, o, m, n_dense, log2, stream):
        out = torch.empty(len(x), len(r) * e.shape[1], dtype=x.dtype)
        assert lib.fs_grid_forward_f64(ptr(x), ptr(e), L(len(x)), I(e.shape[1]), ptr(r), ptr(o), ptr(m), I(len(r)),
                                       I(x.shape[1]), I(n_dense), I(log2), ptr(out), P(0)) == 0
        return out

    def grid_backward(self, g, x, n_rows, r, o, m, n_dense, log2, stream):
        out = torch.zeros(n_rows, g.shape[1] // len(r), dtype=x.dtype)
        assert lib.fs_grid_backward_f64(ptr(g), ptr(x), L(len(x)), I(out.shape[1]), ptr(r), ptr(o), ptr(m),
                                        I(len(r)), I(x.shape[1]), I(n_dense), I(log2), ptr(out), P(0)) == 0
        return out


emu = Launchers()
for dim, k, kernel, normalize in [(3, 8, "gauss_a", True), (2, 1, "nlin_s", False), (3, 8, "ivq_a", True)]:
    t.test_rbf_kernels_match_the_reference(emu, dim, k, kernel, normalize, torch.float32)
for case in (t.GRID_CASES[1], t.GRID_CASES[2], t.GRID_CASES[4]):
    t.test_grid_kernels_match_the_reference(emu, *case, torch.float64)
print("sanitized ok")
"""


def _runtime(cxx: str, name: str) -> str | None:
    path = subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return path if path and Path(path).is_file() else None


def test_kernels_under_address_and_undefined_behaviour_sanitizers(tmp_path):
    # The kernels alone (no torch headers: seconds to build), with ASan and UBSan, called like the bindings call them.
    cxx = os.environ.get("CXX", "c++")
    runtimes = [_runtime(cxx, "libasan.so"), _runtime(cxx, "libubsan.so")]
    if None in runtimes:
        pytest.skip("the compiler has no ASan / UBSan runtime")
    cuda = Path(kernels.SOURCES)
    lib = tmp_path / "libfs_emulated_sanitized.so"
    build = subprocess.run([cxx, "-shared", "-fPIC", "-std=c++17", "-O1", "-g", "-fno-omit-frame-pointer",
                            "-fsanitize=address,undefined", "-DFS_EMULATE_CUDA", f"-I{cuda / 'emulated'}", f"-I{cuda}",
                            str(cuda / "emulated" / "rbf_kernels.cpp"), str(cuda / "emulated" / "grid_kernels.cpp"),
                            "-o", str(lib)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    env = {**os.environ, "LD_PRELOAD": ":".join(runtimes), "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    code = SANITIZED.format(tests=str(Path(__file__).parent), lib=str(lib))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and "sanitized ok" in done.stdout, done.stderr[-3000:]
