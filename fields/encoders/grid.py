"""grid.py
=======
Multi-resolution grid encoder (dense coarse levels, hashed fine levels) in plain PyTorch, for 2-D and 3-D inputs.

Conventions
-----------
* Input frame: the normalised field box, ``x : (N, dim) float`` in ``[-1, 1]``. Points outside the box are
  **clamped** onto it (so they get the boundary feature, and zero gradient w.r.t. ``x`` in the clamped axes).
* Level ``l`` has ``res_l = floor(base * b**l)`` cells per axis with ``b = exp((ln max - ln base) / (L - 1))``
  (``b = 1`` if ``L == 1``); ``res_l + 1`` vertices per axis. ``x`` maps to ``[0, res_l]`` with aligned corners:
  ``x = -1`` sits on vertex 0 and ``x = +1`` on vertex ``res_l``.
* A level is *dense* when ``(res_l + 1)**dim <= 2**log2_hashmap_size``: vertex ``v`` is row
  ``v_0 + v_1 * (res_l+1) + v_2 * (res_l+1)**2`` (axis 0 fastest) of a ``(res_l+1)**dim``-row table. Otherwise it is
  *hashed* into ``2**log2_hashmap_size`` rows by ``(v_0 * 1) ^ (v_1 * 2654435761) ^ (v_2 * 805459861)`` masked to
  the table size (int64 arithmetic; equal to the usual uint32 hash on the kept low bits).
* All levels share one parameter ``embeddings : (sum of table rows, n_features)``; level ``l`` owns rows
  ``offsets[l]:offsets[l+1]``. Output features are level-major: ``out[:, l*F:(l+1)*F]`` is level ``l``.

The forward pass is vectorised over points, levels and corners: one gather from ``embeddings``. It is made of
ordinary differentiable torch ops, so double backward (gradients of ``d out / d x`` w.r.t. ``embeddings``, as the
eikonal loss needs) works. The interpolation is piecewise multilinear, so ``d out / d x`` is piecewise constant
along each axis and jumps at cell faces.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fieldstudio import kernels

__all__ = ["MultiResGrid"]

_PRIMES = (1, 2654435761, 805459861)
_FUSED_MAX_FEATURES = 16  # per level: the fused kernels accumulate a level's features in a fixed array
_FUSED_MAX_LEVELS = 32    # the CUDA kernels take the layout by value (cuda/common.h kMaxLevels); 1-D grids: reference


class _GridFunction(torch.autograd.Function):
    """The fused grid encoding (``cpu`` or ``cuda`` extension); differentiable w.r.t. ``embeddings`` only."""

    @staticmethod
    def forward(ctx, x, embeddings, resolutions, offsets, mult, n_dense, log2_hashmap_size, path):
        out = kernels.ops(path).grid_forward(x, embeddings, resolutions, offsets, mult, n_dense, log2_hashmap_size,
                                             *kernels.stream_args(path, x.device))
        ctx.save_for_backward(x, resolutions, offsets, mult)
        ctx.meta = (embeddings.shape[0], n_dense, log2_hashmap_size, path)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, resolutions, offsets, mult = ctx.saved_tensors
        n_rows, n_dense, log2, path = ctx.meta
        gemb = None
        if ctx.needs_input_grad[1]:
            gemb = kernels.ops(path).grid_backward(grad.contiguous(), x, n_rows, resolutions, offsets, mult, n_dense,
                                                   log2, *kernels.stream_args(path, x.device))
        return None, gemb, None, None, None, None, None, None


def _level_layout(
    dim: int, n_levels: int, base_resolution: int, max_resolution: int, log2_hashmap_size: int
) -> list[tuple[int, int, bool]]:
    """Per-level ``(res, table_rows, hashed)``; validates the arguments.

    ``res`` is computed in float64 with a 1e-6 tolerance before the floor, so that resolutions that are exact in real
    arithmetic (e.g. ``16 * b**15 == 2048``) are not lost to rounding (``2047.99999...``).
    """
    if dim not in (1, 2, 3):
        raise ValueError(f"MultiResGrid supports dim 1, 2 or 3, got {dim}")
    if n_levels < 1:
        raise ValueError(f"n_levels must be >= 1, got {n_levels}")
    if base_resolution < 1 or max_resolution < base_resolution:
        raise ValueError(
            f"need 1 <= base_resolution <= max_resolution, got {base_resolution} and {max_resolution}"
        )
    if not 1 <= log2_hashmap_size <= 32:
        raise ValueError(f"log2_hashmap_size must be in [1, 32], got {log2_hashmap_size}")
    if n_levels == 1:
        growth = 1.0
    else:
        growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / (n_levels - 1))
    hash_rows = 2**log2_hashmap_size
    layout = []
    for level in range(n_levels):
        res = int(math.floor(base_resolution * growth**level + 1e-6))
        dense_rows = (res + 1) ** dim
        if dense_rows <= hash_rows:
            layout.append((res, dense_rows, False))
        else:
            layout.append((res, hash_rows, True))
    return layout


class MultiResGrid(nn.Module):
    """Multi-resolution dense/hashed feature grid with multilinear interpolation.

    Parameters
    ----------
    dim : int
        Input dimension (2 or 3; 1 also works).
    n_levels : int
        Number of levels ``L``.
    n_features : int
        Features per level ``F``; ``out_dim = L * F``.
    base_resolution, max_resolution : int
        Cells per axis of the coarsest and (up to rounding) finest level.
    log2_hashmap_size : int
        log2 of the largest table per level; larger levels are hashed into this many rows.
    init_scale : float
        Embeddings are drawn from ``U(-init_scale, init_scale)`` with ``generator`` (torch's global RNG if None).

    Attributes
    ----------
    out_dim : int
        ``n_levels * n_features``.
    embeddings : nn.Parameter, (sum of table rows, n_features) float
    resolutions : (L,) int64 buffer, cells per axis of each level.
    offsets : (L + 1,) int64 buffer, first table row of each level (last entry = total rows).
    """

    def __init__(
        self,
        dim: int,
        n_levels: int = 16,
        n_features: int = 2,
        base_resolution: int = 16,
        max_resolution: int = 2048,
        log2_hashmap_size: int = 19,
        init_scale: float = 1e-4,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        layout = _level_layout(dim, n_levels, base_resolution, max_resolution, log2_hashmap_size)
        self.dim = dim
        self.n_levels = n_levels
        self.n_features = n_features
        self.log2_hashmap_size = log2_hashmap_size
        self.out_dim = n_levels * n_features
        # Dense levels have the smallest resolutions, so they form a prefix of the level list.
        self.n_dense = sum(1 for _, _, hashed in layout if not hashed)

        rows = [r for _, r, _ in layout]
        offsets = [0]
        for r in rows:
            offsets.append(offsets[-1] + r)
        # Persistent so that a checkpoint from a different layout is refused on load (see _load_from_state_dict).
        self.register_buffer("resolutions", torch.tensor([res for res, _, _ in layout], dtype=torch.int64))
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.int64))
        # Derived, not saved: per-level, per-axis stride of dense levels (axis 0 fastest) or hash prime.
        mult = []
        for res, _, hashed in layout:
            if hashed:
                mult.append(list(_PRIMES[:dim]))
            else:
                mult.append([(res + 1) ** d for d in range(dim)])
        self.register_buffer("_axis_mult", torch.tensor(mult, dtype=torch.int64), persistent=False)

        self.embeddings = nn.Parameter(torch.empty(offsets[-1], n_features))
        with torch.no_grad():
            self.embeddings.uniform_(-init_scale, init_scale, generator=generator)

    # ------------------------------------------------------------------ sizes
    def param_count(self) -> int:
        """Number of trainable scalars (``embeddings.numel()``)."""
        return self.embeddings.numel()

    @staticmethod
    def count_params(
        dim: int,
        n_levels: int = 16,
        n_features: int = 2,
        base_resolution: int = 16,
        max_resolution: int = 2048,
        log2_hashmap_size: int = 19,
    ) -> int:
        """``param_count()`` of a grid built with these arguments, computed without allocating it."""
        layout = _level_layout(dim, n_levels, base_resolution, max_resolution, log2_hashmap_size)
        return sum(rows for _, rows, _ in layout) * n_features

    # ------------------------------------------------------------------ lookup
    def corner_indices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Table rows and multilinear weights of the ``2**dim`` cell corners around each point, at every level.

        Corner ``c`` is the vertex ``cell + (c_0, c_1, ...)`` with ``c = sum_d c_d * 2**d`` (axis 0 fastest).

        Parameters
        ----------
        x : (N, dim) float
            Points in the normalised box ``[-1, 1]^dim`` (clamped onto it).

        Returns
        -------
        rows : (L, N, 2**dim) int64
            Global rows of ``embeddings`` (level offsets included). Level-major, unlike ``forward``'s output.
        weights : (L, N, 2**dim) float, dtype of ``x`` (float32 for half-precision ``x``)
            Interpolation weights; they sum to 1 over the corners and carry gradients w.r.t. ``x``.
        """
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected x of shape (N, {self.dim}), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point x, got {x.dtype}")
        n_points, n_levels, dim, nd = x.shape[0], self.n_levels, self.dim, self.n_dense
        n_corners = 2**dim
        res = self.resolutions[:, None]  # (L, 1)

        # Per-axis layout (dim, L, N): slices by axis and by level are contiguous.
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()  # half precision cannot resolve 2048 cells
        u = ((x.clamp(-1.0, 1.0) + 1.0) * 0.5).t()  # (dim, N) in [0, 1]
        pos = u[:, None, :] * res.to(x.dtype)  # (dim, L, N) in [0, res_l]
        # Cell index; the upper face x = +1 belongs to the last cell (weight 1 on its upper vertex).
        cell = torch.minimum(pos.detach().floor().long(), res - 1)  # (dim, L, N) int64
        frac = pos - cell.to(x.dtype)  # (dim, L, N) in [0, 1]
        w1d = torch.stack((1.0 - frac, frac), dim=-1)  # (dim, L, N, 2): weight of lower / upper vertex

        # Per-axis index terms of the lower / upper vertex, int64: stride * v (dense) or prime * v (hashed).
        # Hashed terms are masked per axis, which equals masking the XOR since both are bitwise.
        mult = self._axis_mult.t()[:, :, None]  # (dim, L, 1)
        lo = cell * mult
        terms = torch.stack((lo, lo + mult), dim=-1)  # (dim, L, N, 2)
        terms[:, nd:] &= (1 << self.log2_hashmap_size) - 1
        terms[0, :nd] += self.offsets[:nd, None, None]  # dense levels: fold the level offset into axis 0

        # Combine the axes by broadcasting, new axes in front (slower); the last step writes into `rows`.
        rows = torch.empty((n_levels, n_points) + (2,) * dim, dtype=torch.int64, device=x.device)
        for levels, combine in ((slice(0, nd), torch.add), (slice(nd, n_levels), torch.bitwise_xor)):
            acc = terms[0, levels]  # (l, N, 2)
            if dim == 1:
                rows[levels] = acc
            for d in range(1, dim):
                t = terms[d, levels].reshape(acc.shape[0], n_points, 2, *(1,) * d)
                if d == dim - 1:
                    combine(t, acc.unsqueeze(2), out=rows[levels])
                else:
                    acc = combine(t, acc.unsqueeze(2))
        rows[nd:] += self.offsets[nd:-1].reshape(-1, 1, *(1,) * dim)

        weights = w1d[0]  # (L, N, 2)
        for d in range(1, dim):
            weights = w1d[d].reshape(n_levels, n_points, 2, *(1,) * d) * weights.unsqueeze(2)
        return rows.reshape(n_levels, n_points, n_corners), weights.reshape(n_levels, n_points, n_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode points: the fused kernels when ``fields.kernels.path_for_call`` picks them, else
        ``forward_reference``."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected x of shape (N, {self.dim}), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point x, got {x.dtype}")
        supported = self.n_features <= _FUSED_MAX_FEATURES and self.n_levels <= _FUSED_MAX_LEVELS and self.dim >= 2
        path = kernels.path_for_call(x, self.embeddings, supported=supported)
        if path == "reference":
            return self.forward_reference(x)
        return _GridFunction.apply(x.contiguous(), self.embeddings, *self.host_layout(), self.n_dense,
                                   self.log2_hashmap_size, path)

    def host_layout(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(resolutions, offsets, axis multipliers) as CPU int64 tensors, copied once: the fused kernels read the
        layout on the host, and a GPU module's buffers would otherwise cost three device-to-host copies per call."""
        if getattr(self, "_host_layout", None) is None:
            self._host_layout = tuple(t.detach().to("cpu", torch.int64).contiguous()
                                      for t in (self.resolutions, self.offsets, self._axis_mult))
        return self._host_layout

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Encode points in plain PyTorch: the oracle of the fused kernels.

        Parameters
        ----------
        x : (N, dim) float32 or float64
            Points in the normalised field box ``[-1, 1]^dim``; outside points are clamped onto the box.

        Returns
        -------
        (N, out_dim) float, dtype of ``x``
            Level-major features ``[level 0 (F), level 1 (F), ...]``, differentiable w.r.t. ``x`` and ``embeddings``
            (also twice: the gradient w.r.t. ``x`` is differentiable w.r.t. ``embeddings``).
        """
        rows, weights = self.corner_indices(x)
        n_levels, n_points, n_corners = rows.shape
        emb = self.embeddings
        dtype = torch.promote_types(x.dtype, emb.dtype)
        feats = emb.index_select(0, rows.reshape(-1)).view(n_levels * n_points, n_corners, self.n_features)
        out = torch.bmm(weights.to(dtype).view(n_levels * n_points, 1, n_corners), feats.to(dtype))
        out = out.view(n_levels, n_points, self.n_features).transpose(0, 1)  # (N, L, F)
        return out.reshape(n_points, self.out_dim).to(x.dtype)

    # ------------------------------------------------------------------ checkpoints
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for name in ("resolutions", "offsets"):
            key = prefix + name
            if key in state_dict:
                theirs, ours = state_dict[key], getattr(self, name)
                if theirs.shape != ours.shape or not torch.equal(theirs.to(ours.device, ours.dtype), ours):
                    error_msgs.append(
                        f"{key}: checkpoint grid layout {theirs.tolist()} differs from this module's {ours.tolist()}; "
                        "build the grid with the arguments it was trained with"
                    )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, n_levels={self.n_levels}, n_features={self.n_features}, "
            f"resolutions={self.resolutions.tolist()}, n_dense={self.n_dense}, "
            f"log2_hashmap_size={self.log2_hashmap_size}, params={self.param_count()}"
        )
