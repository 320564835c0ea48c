"""bench_kernels.py
================
Fused kernels against the PyTorch reference, in one process (docs/benchmarks.md, "Kernels"):

* RBF layer: K = 8 neighbours, F = 32 features, 3-D, 2^16 queries, 100k RBFs (``nlin_s``; ``--kernels`` adds
  the anisotropic ones);
* multires grid: 16 levels of 2 features, resolutions 16..2048, 2^19-row hash tables, 3-D, 2^16 queries;
* a whole training step (forward + backward) of the 450k-parameter SDF hybrid field on 2^16 queries, kernels
  forced to the reference, then fused (the "0.36 s per step" of issue 4).

Each op is timed forward and forward + backward (gradients of the trained table), the median of ``--repeat``
runs after two warm-up runs, on the CPU and, when there is one, on the GPU. Outputs are compared with the
reference (max abs error forward, max error / max value for the gradient). On a GPU it also reports the
achieved bandwidth: the bytes the op must move at least (inputs read once, gathered rows once per use, outputs
and gradient scatters once), divided by the time, beside the card's peak.

    python scripts/bench_kernels.py [--out results] [--repeat 10] [--devices cpu cuda]

Writes ``<out>/kernels.json`` and ``<out>/kernels.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fieldstudio import kernels  # noqa: E402
from fieldstudio.encoders.grid import MultiResGrid  # noqa: E402
from fieldstudio.encoders.rbf import KERNEL_IDS, rbf_layer, rbf_reference  # noqa: E402

# Peak memory bandwidth (GB/s) of the cards we may be lent, from their data sheets.
PEAK_GBS = {"H100 80GB HBM3": 3350.0, "H100 PCIe": 2000.0, "H100 NVL": 3900.0, "H200": 4800.0}
N_POINTS, K, F, N_RBF = 2**16, 8, 32, 100_000


def peak_for(name: str) -> float | None:
    for key, value in PEAK_GBS.items():
        if key in name:
            return value
    return None


def timed(fn, device: torch.device, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs after two warm-ups."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def rbf_inputs(device, kernel, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N_POINTS, 3, generator=g, dtype=dtype) * 2 - 1
    centers = torch.rand(N_RBF, 3, generator=g, dtype=dtype) * 2 - 1
    if kernel == "nlin_s":
        shapes = torch.full((N_RBF, 1), 20.0, dtype=dtype)
    else:
        shapes = torch.eye(3, dtype=dtype).repeat(N_RBF, 1, 1) * 400.0
    features = (torch.randn(N_RBF, F, generator=g, dtype=dtype) * 0.1)
    freqs = torch.exp2(torch.linspace(0, 3, F, dtype=dtype))
    # Neighbours as training uses them: precomputed, spatially coherent (the k nearest of a k-d tree).
    from scipy.spatial import cKDTree

    idx = torch.from_numpy(cKDTree(centers.numpy()).query(x.numpy(), k=K)[1]).long()
    return [t.to(device) for t in (x, idx, centers, shapes, features, freqs)]


def rbf_bytes(kernel: str, backward: bool) -> int:
    shape = 1 if kernel == "nlin_s" else 9
    fwd = N_POINTS * (3 * 4 + K * 8 + K * (3 + shape) * 4 + K * F * 4 + F * 4)
    bwd = N_POINTS * (F * 4 + 3 * 4 + K * 8 + K * (3 + shape) * 4 + 2 * K * F * 4)  # scatter = read + write
    return fwd + (bwd if backward else 0)


def grid_bytes(grid: MultiResGrid, backward: bool) -> int:
    L, nf, corners = grid.n_levels, grid.n_features, 2**grid.dim
    fwd = N_POINTS * (3 * 4 + L * corners * nf * 4 + L * nf * 4)
    bwd = N_POINTS * (3 * 4 + L * nf * 4 + 2 * L * corners * nf * 4)
    return fwd + (bwd if backward else 0)


def compare(fused_out, ref_out, fused_grad, ref_grad) -> dict:
    return {"max_abs_err_forward": float((fused_out - ref_out).abs().max()),
            "max_rel_err_grad": float((fused_grad - ref_grad).abs().max() / ref_grad.abs().max())}


def bench_rbf(device, kernel, repeat) -> dict:
    x, idx, centers, shapes, features, freqs = rbf_inputs(device, kernel)
    w = features.clone().requires_grad_(True)
    grad_out = torch.randn(N_POINTS, F, device=device) * 0.01

    def ref_fwd():
        with torch.no_grad():
            return rbf_reference(x, idx, centers, shapes, w, freqs, kernel, True)

    def fused_fwd():
        with torch.no_grad():
            return rbf_layer(x, idx, centers, shapes, w, freqs, kernel, True)

    def ref_step():
        w.grad = None
        rbf_reference(x, idx, centers, shapes, w, freqs, kernel, True).backward(grad_out)

    def fused_step():
        w.grad = None
        rbf_layer(x, idx, centers, shapes, w, freqs, kernel, True).backward(grad_out)

    ref_step()
    g_ref = w.grad.clone()
    fused_step()
    row = {"op": f"rbf {kernel}", **compare(fused_fwd(), ref_fwd(), w.grad, g_ref)}
    row.update(_times(device, repeat, ref_fwd, fused_fwd, ref_step, fused_step,
                      rbf_bytes(kernel, False), rbf_bytes(kernel, True)))
    return row


def bench_grid(device, repeat) -> dict:
    torch.manual_seed(0)
    grid = MultiResGrid(3, n_levels=16, n_features=2, base_resolution=16, max_resolution=2048,
                        log2_hashmap_size=19).to(device)
    x = (torch.rand(N_POINTS, 3) * 2 - 1).to(device)
    grad_out = torch.randn(N_POINTS, grid.out_dim, device=device)

    def ref_fwd():
        with torch.no_grad():
            return grid.forward_reference(x)

    def fused_fwd():
        with torch.no_grad():
            return grid(x)

    def ref_step():
        grid.embeddings.grad = None
        grid.forward_reference(x).backward(grad_out)

    def fused_step():
        grid.embeddings.grad = None
        grid(x).backward(grad_out)

    ref_step()
    g_ref = grid.embeddings.grad.clone()
    fused_step()
    row = {"op": "grid 16x2, 2^19 rows", **compare(fused_fwd(), ref_fwd(), grid.embeddings.grad, g_ref)}
    row.update(_times(device, repeat, ref_fwd, fused_fwd, ref_step, fused_step,
                      grid_bytes(grid, False), grid_bytes(grid, True)))
    return row


def bench_field_step(device, repeat) -> dict:
    """One training step's forward + backward of the default SDF field (`fieldstudio fit MESH`: the 450k hybrid):
    every encoder, the decoder and autograd, with the kernels forced to the reference and then to the fused path."""
    from fieldstudio.api import Request, resolve
    from fieldstudio.field import Field
    from fieldstudio.resources import assets

    torch.manual_seed(0)
    model = Field(resolve(Request(assets() / "trefoil.ply")).field)
    pts = torch.rand(200_000, 3) * 2 - 1
    model.init_from_points(pts, None)
    model.to(device)
    x = (torch.rand(N_POINTS, 3) * 2 - 1).to(device)
    idx = model.neighbours(x)
    target = torch.zeros(N_POINTS, 1, device=device)

    def step():
        model.zero_grad(set_to_none=True)
        (model(x, idx) - target).abs().mean().backward()

    native = kernels.path_for(device)
    times = {}
    for path in ("reference", native):
        os.environ[kernels.ENV] = path
        times[path] = timed(step, device, repeat)
    del os.environ[kernels.ENV]
    t_ref, t_fused = times["reference"], times[native]
    return {"op": "hybrid SDF field step (450k)", "max_abs_err_forward": float("nan"),
            "max_rel_err_grad": float("nan"),
            "fwd+bwd": {"reference_ms": round(1e3 * t_ref, 3), "fused_ms": round(1e3 * t_fused, 3),
                        "speedup": round(t_ref / t_fused, 2), "fused_GBps": float("nan")}}


def _times(device, repeat, ref_fwd, fused_fwd, ref_step, fused_step, bytes_fwd, bytes_step) -> dict:
    out = {}
    for name, ref, fused, nbytes in (("forward", ref_fwd, fused_fwd, bytes_fwd),
                                     ("fwd+bwd", ref_step, fused_step, bytes_step)):
        t_ref, t_fused = timed(ref, device, repeat), timed(fused, device, repeat)
        out[name] = {"reference_ms": round(1e3 * t_ref, 3), "fused_ms": round(1e3 * t_fused, 3),
                     "speedup": round(t_ref / t_fused, 2), "fused_GBps": round(nbytes / t_fused / 1e9, 1)}
    return out


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"Kernels, {meta['date']}, command `{meta['command']}`", ""]
    for dev in meta["devices"]:
        peak = dev.get("peak_GBps")
        lines += [f"**{dev['name']}** ({dev['path']} path)" + (f", peak memory bandwidth {peak:.0f} GB/s" if peak
                                                               else ""), "",
                  "| op | pass | reference (ms) | fused (ms) | speed-up | fused GB/s | max err fwd | max rel err grad |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r["device"] != dev["device"]:
                continue
            for name in ("forward", "fwd+bwd"):
                if name not in r:
                    continue
                t = r[name]
                gbs = f"{t['fused_GBps']:.0f}" + (f" ({100 * t['fused_GBps'] / peak:.0f} %)" if peak else "")
                lines.append(f"| {r['op']} | {name} | {t['reference_ms']:.2f} | {t['fused_ms']:.2f} | "
                             f"{t['speedup']:.1f}x | {gbs} | {r['max_abs_err_forward']:.1e} | "
                             f"{r['max_rel_err_grad']:.1e} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--devices", nargs="*", default=["cpu", "cuda"])
    ap.add_argument("--kernels", nargs="*", default=["nlin_s"], choices=list(KERNEL_IDS))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, devices = [], []
    for name in args.devices:
        if name == "cuda" and not torch.cuda.is_available():
            print("no CUDA device: GPU rows skipped", file=sys.stderr)
            continue
        device = torch.device(name)
        path = kernels.path_for(device)
        if path == "reference":
            sys.exit(f"the fused {name} kernels are unavailable here; nothing to compare")
        label = (torch.cuda.get_device_name(device) if name == "cuda"
                 else f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.get_num_threads()} threads")
        devices.append({"device": name, "name": label, "path": path,
                        "peak_GBps": peak_for(label) if name == "cuda" else None})
        for kernel in args.kernels:
            rows.append({"device": name, **bench_rbf(device, kernel, args.repeat)})
            print(json.dumps(rows[-1]), flush=True)
        rows.append({"device": name, **bench_grid(device, args.repeat)})
        print(json.dumps(rows[-1]), flush=True)
        rows.append({"device": name, **bench_field_step(device, args.repeat)})
        print(json.dumps(rows[-1]), flush=True)
    meta = {"date": date.today().isoformat(), "command": " ".join(["python"] + sys.argv), "devices": devices,
            "torch": torch.__version__, "points": N_POINTS, "k": K, "features": F, "n_rbf": N_RBF}
    (args.out / "kernels.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    text = markdown(rows, meta)
    (args.out / "kernels.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
