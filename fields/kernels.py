"""kernels.py
==========
The one dispatch point of the hot paths: which implementation serves a call of the adaptive-RBF layer or the
multires grid. This module loads the compiled extensions and answers that question; it knows nothing about the
encoders. Each encoder (``fields/encoders/rbf.py``, ``grid.py``) owns its autograd Functions and its plain-PyTorch
reference, and asks :func:`path_for_call` which one to run.

Paths, chosen per call from the tensors' device:

* ``cuda``: ``cuda/rbf_kernels.cu`` and ``grid_kernels.cu`` with ``cuda/cuda_ops.cpp``, for CUDA tensors;
* ``cpu``: ``cuda/cpu_ops.cpp`` (C++ with OpenMP), for CPU tensors;
* ``reference``: the plain-PyTorch functions in ``fields/encoders`` that the tests compare the others to.

Extensions are compiled on first use with ``torch.utils.cpp_extension`` (ninja) into a folder of ours,
:func:`build_folder`: ``$FIELDSTUDIO_KERNEL_CACHE`` (else ``$XDG_CACHE_HOME/fieldstudio/kernels``, else
``~/.cache/fieldstudio/kernels``), one subfolder per fieldstudio version, torch version, extension and hash of
the sources and flags. The first build takes about a minute and is announced once on the ``fieldstudio`` logger.
Builders of one folder take turns through an OS lock (``fcntl.flock`` on ``fieldstudio.lock``), which dies with
its process; so a torch ``lock`` file found while holding it was left by a killed build and is removed (it would
make torch wait forever). Without a compiler (or without CUDA) the reference is used, also announced once.
``FIELDSTUDIO_KERNELS=reference|cpu|cuda`` forces a path; forcing one that cannot load is an error.

The fused paths return gradients for the trained tables (RBF features, grid embeddings). A call whose positions
need a gradient (eikonal or gradient-hinge losses, vertex refinement) takes the reference, which is twice
differentiable; so do half-precision inputs and tables whose dtype differs from the positions'.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path

import torch

from fieldstudio import __version__
from fieldstudio.errors import FieldStudioError
from fieldstudio.resources import kernel_sources

try:
    import fcntl
except ImportError:  # Windows: no flock; builders are then not serialised across processes
    fcntl = None

log = logging.getLogger("fieldstudio")
SOURCES = kernel_sources()
PATHS = ("reference", "cpu", "cuda")
ENV = "FIELDSTUDIO_KERNELS"
CACHE_ENV = "FIELDSTUDIO_KERNEL_CACHE"
LOCK_NAME = "fieldstudio.lock"  # ours, flock-ed while building or loading; torch's own is "lock"
BUILD_WAIT_S = 900.0  # how long to wait for another process's build before falling back to the reference
_POLL_S = 0.2

_modules: dict[str, object] = {}
_failures: dict[str, str] = {}
_lock = threading.Lock()
_compiles: list[tuple[float, float]] = []  # (perf_counter at the start, seconds) of each first-use compile


def compile_seconds_since(t: float) -> float:
    """Seconds spent compiling kernels (first use, not a cached load) in builds that began at or after ``t``
    (``time.perf_counter``): a time budget leaves them out, since later fits do not pay them."""
    return sum(seconds for start, seconds in _compiles if start >= t)


def forced_path() -> str | None:
    """The path forced by ``$FIELDSTUDIO_KERNELS``, or None."""
    value = os.environ.get(ENV, "").strip().lower()
    if not value:
        return None
    if value not in PATHS:
        raise FieldStudioError(f"{ENV}={value!r} is not a kernel path; use one of {', '.join(PATHS)}")
    return value


# ------------------------------------------------------------------------------------------------ build folder

def _cpu_has(*features: str) -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return all(f in flags for f in features)


def _spec(name: str) -> tuple[str, list[Path], dict]:
    """Module name, source files and ``load`` flags of the ``cpu`` or ``cuda`` extension."""
    flags = ["-O3", "-std=c++17"]
    if name == "cpu":
        # -ffast-math lets GCC call the vector sine of glibc's libmvec in the feature loops; 8 lanes with AVX2.
        # The instruction set is part of the module name and the folder hash, so a shared cache never serves a
        # CPU that lacks it.
        simd = ["-mavx2", "-mfma"] if _cpu_has("avx2", "fma") else []
        return ("fieldstudio_cpu" + ("_avx2" if simd else ""), [SOURCES / "cpu_ops.cpp"],
                {"extra_include_paths": [str(SOURCES)], "extra_cflags": flags + ["-fopenmp", "-ffast-math"] + simd,
                 "extra_ldflags": ["-fopenmp"]})
    if name == "cuda":
        return ("fieldstudio_cuda", [SOURCES / f for f in ("cuda_ops.cpp", "rbf_kernels.cu", "grid_kernels.cu")],
                {"extra_include_paths": [str(SOURCES)], "extra_cflags": flags,
                 "extra_cuda_cflags": ["-O3", "-std=c++17", *_cuda_arch_flags()]})
    if name == "emulated":
        # The CUDA bindings and kernels compiled as C++ with a serial launch loop (cuda/emulated/), for tests on
        # machines without a GPU.
        return ("fieldstudio_cuda_emulated",
                [SOURCES / "cuda_ops.cpp", SOURCES / "emulated" / "rbf_kernels.cpp",
                 SOURCES / "emulated" / "grid_kernels.cpp"],
                {"extra_include_paths": [str(SOURCES / "emulated"), str(SOURCES)],
                 "extra_cflags": ["-O2", "-std=c++17", "-DFS_EMULATE_CUDA"]})
    raise ValueError(f"unknown extension {name!r}; use 'cpu' or 'cuda'")


def _cuda_arch_flags() -> list[str]:
    """Name the GPU architectures: ``$TORCH_CUDA_ARCH_LIST`` when set (torch's build reads it), else the visible
    devices' own (never older nvcc defaults, below the sm_60 that double atomicAdd needs)."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST") or not torch.cuda.is_available():
        return []
    caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    return [f"-gencode=arch=compute_{a}{b},code=sm_{a}{b}" for a, b in caps]


def cache_root() -> Path:
    """Where extensions are built: ``$FIELDSTUDIO_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/fieldstudio/kernels``,
    else ``~/.cache/fieldstudio/kernels``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "fieldstudio" / "kernels"


def _folder(module: str, sources: list[Path], flags: dict) -> Path:
    """``cache_root()/<module>-fs<version>-torch<version>-<hash>``; the hash covers the sources, the headers
    beside them, the flags and torch's CUDA version, so any change builds into a fresh folder."""
    h = hashlib.sha256()
    files = {Path(s) for s in sources}
    for src in list(files):
        files.update(p for p in Path(src).parent.iterdir() if p.suffix in (".h", ".cuh", ".hpp"))
    if any(Path(s).parent.name == "emulated" for s in sources):  # they include the .cu files of the folder above
        files.update(SOURCES.glob("*.cu"))
        files.update(SOURCES.glob("*.h"))
    for path in sorted(files, key=lambda p: p.name):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(json.dumps([module, flags, torch.version.cuda, sys.version_info[:2]], sort_keys=True).encode())
    tag = re.sub(r"[^A-Za-z0-9._+-]", "_", f"{module}-fs{__version__}-torch{torch.__version__}")
    return cache_root() / f"{tag}-{h.hexdigest()[:12]}"


def build_folder(name: str) -> Path:
    """The folder the ``cpu`` or ``cuda`` extension is built in (it need not exist yet)."""
    return _folder(*_spec(name))


# ------------------------------------------------------------------------------------------------ building

@contextlib.contextmanager
def _builder_lock(folder: Path, name: str):
    """Hold the flock of ``folder``: one builder at a time, and the lock is released when its process dies."""
    if fcntl is None:
        yield
        return
    with open(folder / LOCK_NAME, "a") as handle:
        deadline, waiting = time.monotonic() + BUILD_WAIT_S, False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting:
                    waiting = True
                    log.info("waiting for another fieldstudio process building the fused %s kernels in %s",
                             name.upper(), folder)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another process held {folder / LOCK_NAME} for {BUILD_WAIT_S:.0f} s; "
                                       f"if no fieldstudio process is running, delete the folder {folder}") from None
                time.sleep(_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _compile(module: str, sources: list[Path], folder: Path, flags: dict):
    """torch's JIT build (ninja; a no-op when the module in ``folder`` is up to date) and import."""
    from torch.utils.cpp_extension import load

    return load(module, [str(s) for s in sources], build_directory=str(folder), verbose=False, **flags)


def _build_in_folder(name: str, module: str, sources: list[Path], flags: dict):
    folder = _folder(module, sources, flags)
    folder.mkdir(parents=True, exist_ok=True)
    with _builder_lock(folder, name):
        stale = folder / "lock"
        if stale.exists():  # we hold the flock, so whoever created it is no longer building: a killed build
            log.warning("removing the stale build lock %s: the kernel build that left it was interrupted", stale)
            stale.unlink(missing_ok=True)
        built = folder / (module + (".pyd" if os.name == "nt" else ".so"))
        # ninja rebuilds when a source is newer than the module (a reinstall rewrites them): that is a compile too
        rebuild = not built.exists() or any(s.stat().st_mtime > built.stat().st_mtime for s in sources)
        if rebuild:
            log.info("compiling the fused %s kernels (first use, about a minute; cached afterwards)", name.upper())
        start = time.perf_counter()
        try:
            return _compile(module, sources, folder, flags)
        finally:
            seconds = time.perf_counter() - start
            if rebuild or seconds > 2.0:  # a cached module loads in about 0.1 s; longer: ninja rebuilt (a header)
                _compiles.append((start, seconds))


def _build(name: str):
    return _build_in_folder(name, *_spec(name))


def emulated_extension():
    """The emulated CUDA build (see ``_spec``), built on first use and cached like the others; raises when it cannot
    be built (no host compiler)."""
    return _build_in_folder("emulated", *_spec("emulated"))


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
        try:
            _modules[name] = _build(name)
        except Exception as err:  # no compiler, no ninja, a broken toolchain: the reference still works
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            _failures[name] = reason
            log.warning("fused %s kernels unavailable (%s); using the PyTorch reference", name.upper(), reason)
            return None
        return _modules[name]


# ------------------------------------------------------------------------------------------------ dispatch

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


def path_for_call(x: torch.Tensor, trained: torch.Tensor, *frozen: torch.Tensor, supported: bool = True) -> str:
    """The path that serves one encoder call: ``path_for(x.device)``, or "reference" when the fused kernels cannot.

    Args:
        x: the positions. A gradient w.r.t. them (the fused kernels have none) or a dtype other than float32 /
            float64 takes the reference.
        trained: the table the fused backward differentiates (RBF features, grid embeddings).
        frozen: the other float inputs; any that needs a gradient takes the reference.
        supported: False when the encoder's configuration is beyond the fused kernels (e.g. too many features).

    Every table must match ``x``'s dtype and device, else the reference serves the call.
    """
    if x.requires_grad or x.dtype not in (torch.float32, torch.float64):
        return "reference"
    if any(t.dtype != x.dtype or t.device != x.device for t in (trained, *frozen)):
        return "reference"
    path = path_for(x.device)
    if not supported or any(t.requires_grad for t in frozen):
        return "reference"
    return path


def ops(path: str):
    """The loaded extension module of a fused ``path`` (``"cpu"`` or ``"cuda"``) returned by a dispatch answer."""
    return _modules[path]


def stream_args(path: str, device: torch.device) -> tuple:
    """Trailing arguments of an extension call: the current CUDA stream (as an integer) on the ``cuda`` path."""
    return (torch.cuda.current_stream(device).cuda_stream,) if path == "cuda" else ()


__all__ = ["path_for", "path_for_call", "extension", "forced_path", "ops", "stream_args", "build_folder",
           "cache_root", "PATHS", "ENV", "CACHE_ENV"]
