"""kernels.py
==========
The one dispatch point of the hot paths: the adaptive-RBF layer and the multires grid, forward and backward.

Paths, chosen per call from the tensors' device:

* ``cuda``: ``cuda/rbf_kernels.cu`` and ``grid_kernels.cu`` with ``cuda/cuda_ops.cpp``, for CUDA tensors;
* ``cpu``: ``cuda/cpu_ops.cpp`` (C++ with OpenMP), for CPU tensors;
* ``reference``: the plain-PyTorch functions in ``fields/encoders`` that the tests compare the others to.

Extensions are compiled on first use with ``torch.utils.cpp_extension`` (ninja) and cached by torch (under
``~/.cache/torch_extensions`` or ``$TORCH_EXTENSIONS_DIR``); the first build takes about a minute and is
announced once on the ``fieldstudio`` logger. Without a compiler (or without CUDA) the reference is used, also
announced once. ``FIELDSTUDIO_KERNELS=reference|cpu|cuda`` forces a path; forcing one that cannot load is an error.

The fused paths return gradients for the trained tables (RBF features, grid embeddings). A call whose positions
need a gradient (eikonal or gradient-hinge losses, vertex refinement) takes the reference, which is twice
differentiable; so do half-precision inputs and tables whose dtype differs from the positions'.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import torch

from fieldstudio.errors import FieldStudioError
from fieldstudio.resources import kernel_sources

log = logging.getLogger("fieldstudio")
SOURCES = kernel_sources()
PATHS = ("reference", "cpu", "cuda")
ENV = "FIELDSTUDIO_KERNELS"
KERNEL_IDS = {"nlin_s": 0, "ivq_a": 1, "gauss_a": 2}

_modules: dict[str, object] = {}
_failures: dict[str, str] = {}
_lock = threading.Lock()


def forced_path() -> str | None:
    """The path forced by ``$FIELDSTUDIO_KERNELS``, or None."""
    value = os.environ.get(ENV, "").strip().lower()
    if not value:
        return None
    if value not in PATHS:
        raise FieldStudioError(f"{ENV}={value!r} is not a kernel path; use one of {', '.join(PATHS)}")
    return value


def _cpu_has(*features: str) -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return all(f in flags for f in features)


def _build(name: str):
    from torch.utils.cpp_extension import load

    flags = ["-O3", "-std=c++17"]
    if name == "cpu":
        # -ffast-math lets GCC call the vector sine of glibc's libmvec in the feature loops; 8 lanes with AVX2.
        # The instruction set is part of the module name, so a shared cache never serves a CPU that lacks it.
        simd = ["-mavx2", "-mfma"] if _cpu_has("avx2", "fma") else []
        return load("fieldstudio_cpu" + ("_avx2" if simd else ""), [str(SOURCES / "cpu_ops.cpp")],
                    extra_include_paths=[str(SOURCES)], extra_cflags=flags + ["-fopenmp", "-ffast-math"] + simd,
                    extra_ldflags=["-fopenmp"], verbose=False)
    return load("fieldstudio_cuda", [str(SOURCES / f) for f in ("cuda_ops.cpp", "rbf_kernels.cu", "grid_kernels.cu")],
                extra_include_paths=[str(SOURCES)], extra_cflags=flags, extra_cuda_cflags=["-O3", "-std=c++17"],
                verbose=False)


def extension(name: str):
    """The compiled ``cpu`` or ``cuda`` module, or None when it cannot be built here (reason logged once)."""
    with _lock:
        if name in _modules:
            return _modules[name]
        if name in _failures:
            return None
        if name == "cuda" and not torch.cuda.is_available():
            _failures[name] = "no CUDA device"
            return None
        log.info("compiling the fused %s kernels (first use, about a minute; cached afterwards)", name.upper())
        try:
            _modules[name] = _build(name)
        except Exception as err:  # no compiler, no ninja, a broken toolchain: the reference still works
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            _failures[name] = reason
            log.warning("fused %s kernels unavailable (%s); using the PyTorch reference", name.upper(), reason)
            return None
        return _modules[name]


def path_for(device: torch.device) -> str:
    """The path that serves tensors on ``device``: forced, else the device's extension, else the reference."""
    native = "cuda" if device.type == "cuda" else "cpu"
    forced = forced_path()
    if forced == "reference":
        return "reference"
    if forced is not None and forced != native:
        raise FieldStudioError(f"{ENV}={forced} but the tensors are on {device.type}; unset it or use {native}")
    if extension(native) is not None:
        return native
    if forced is not None:
        raise FieldStudioError(f"{ENV}={forced} but the {forced} kernels cannot be built: {_failures[native]}")
    return "reference"


def _fused(x: torch.Tensor, *tables: torch.Tensor) -> str:
    """The fused path for this call, or "reference" (position gradients, half precision, mixed dtypes)."""
    if x.requires_grad or x.dtype not in (torch.float32, torch.float64):
        return "reference"
    if any(t.dtype != x.dtype or t.device != x.device for t in tables):
        return "reference"
    return path_for(x.device)


def _stream_args(path: str, device: torch.device) -> tuple:
    return (torch.cuda.current_stream(device).cuda_stream,) if path == "cuda" else ()


# ------------------------------------------------------------------------------------------------ RBF layer

class _RBFFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, idx, centers, shapes, features, freqs, kernel_id, normalize, path):
        ops = _modules[path]
        stream = _stream_args(path, x.device)
        out = ops.rbf_forward(x, idx, centers, shapes, features, freqs, kernel_id, normalize, *stream)
        ctx.save_for_backward(x, idx, centers, shapes, freqs)
        ctx.meta = (features.shape[0], kernel_id, normalize, path)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, idx, centers, shapes, freqs = ctx.saved_tensors
        n_rbf, kernel_id, normalize, path = ctx.meta
        gfeat = None
        if ctx.needs_input_grad[4]:
            ops = _modules[path]
            gfeat = ops.rbf_backward(grad.contiguous(), x, idx, centers, shapes, freqs, n_rbf, kernel_id, normalize,
                                     *_stream_args(path, x.device))
        return None, None, None, None, gfeat, None, None, None, None


def rbf(x: torch.Tensor, idx: torch.Tensor, centers: torch.Tensor, shapes: torch.Tensor, features: torch.Tensor,
        freqs: torch.Tensor, kernel: str, normalize: bool) -> torch.Tensor:
    """The RBF layer ``sum_k features[idx] * sin(phi_k * freqs)``; arguments as ``rbf_reference``."""
    path = _fused(x, centers, shapes, features, freqs)
    if path == "reference" or freqs.requires_grad or centers.requires_grad or shapes.requires_grad:
        from fieldstudio.encoders.rbf import rbf_reference

        return rbf_reference(x, idx, centers, shapes, features, freqs, kernel, normalize)
    return _RBFFunction.apply(x.contiguous(), idx.long().contiguous(), centers.contiguous(),
                              shapes.reshape(shapes.shape[0], -1).contiguous(), features.contiguous(),
                              freqs.contiguous(), KERNEL_IDS[kernel], bool(normalize), path)


# ------------------------------------------------------------------------------------------------ multires grid

class _GridFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, embeddings, resolutions, offsets, mult, n_dense, log2_hashmap_size, path):
        ops = _modules[path]
        out = ops.grid_forward(x, embeddings, resolutions, offsets, mult, n_dense, log2_hashmap_size,
                               *_stream_args(path, x.device))
        ctx.save_for_backward(x, resolutions, offsets, mult)
        ctx.meta = (embeddings.shape[0], n_dense, log2_hashmap_size, path)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, resolutions, offsets, mult = ctx.saved_tensors
        n_rows, n_dense, log2, path = ctx.meta
        gemb = None
        if ctx.needs_input_grad[1]:
            gemb = _modules[path].grid_backward(grad.contiguous(), x, n_rows, resolutions, offsets, mult, n_dense,
                                                log2, *_stream_args(path, x.device))
        return None, gemb, None, None, None, None, None, None


def grid(module, x: torch.Tensor) -> torch.Tensor:
    """``MultiResGrid`` encoding of ``x`` (N, dim): the fused path or ``module.forward_reference``."""
    path = _fused(x, module.embeddings)
    if path == "reference" or module.n_features > 16:
        return module.forward_reference(x)
    return _GridFunction.apply(x.contiguous(), module.embeddings, module.resolutions, module.offsets,
                               module._axis_mult.contiguous(), module.n_dense, module.log2_hashmap_size, path)


__all__ = ["rbf", "grid", "path_for", "extension", "forced_path", "PATHS", "ENV"]
