"""rbf.py
======
Adaptive radial-basis-function encoder (NeuRBF): K nearest RBFs per query, sinusoidal feature composition.

Frame: every position (queries ``x``, ``centers``, widths) is in the field box ``[-1, 1]^dim``; queries outside the box
are allowed and simply see fewer (or no) RBFs with support there.

The layer maps ``x : (N, dim)`` to ``(N, n_features)``::

    idx     = indices of the k nearest centres of x                 (N, k)
    d       = x - centers[idx]                                      (N, k, dim)
    phi     = kernel(d, shapes[idx])                                (N, k)
    phi     = phi / ((sum_k phi).detach() + 1e-8)                   (if normalize; the sum is DETACHED, as in NeuRBF)
    out     = sum_k features[idx] * sin(phi[..., None] * freqs)     (N, n_features)

Centres and shapes are buffers (frozen, as in every released NeuRBF config) set by :meth:`AdaptiveRBF.init_from_points`
(weighted k-means); only ``features`` is trained. :func:`rbf_reference` (with :func:`rbf_phi`) is the plain-PyTorch
oracle that fused kernels must match; :func:`rbf_layer` runs the fused kernels or the reference, whichever
``fieldstudio.kernels.path_for_call`` answers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn

from fieldstudio import kernels
from fieldstudio.control import check_cancel

NEIGHBOUR_CHUNK = 200_000

__all__ = ["KERNELS", "KERNEL_IDS", "AdaptiveRBF", "rbf_layer", "rbf_phi", "rbf_reference", "DEFAULT_MIN_WIDTH",
           "DEFAULT_MAX_WIDTH"]

KERNELS = ("nlin_s", "ivq_a", "gauss_a")
KERNEL_IDS = {"nlin_s": 0, "ivq_a": 1, "gauss_a": 2}  # the `Kernel` enum of cuda/common.h
FUSED_MAX_K = 64  # neighbours per query in the fused kernels (cuda/common.h kMaxK)

# Width clamps in field-box units (the box [-1, 1] has extent 2).
# NeuRBF clamps std-like widths to [max(cell/200, 1e-3), extent/10]; in its SDF set-up (1024 cells over [-1, 1],
# cell/200 ~ 1e-5) the 1e-3 floor is what binds, so we use it directly. It only keeps S finite and well conditioned (S_ii <= 1e6); kernels
# that would otherwise collapse (empty or zero-spread clusters) get a data-driven width instead, see init_from_points.
DEFAULT_MIN_WIDTH = 1e-3
DEFAULT_MAX_WIDTH = 0.2  # = extent / 10


def _triu_pairs(dim: int) -> tuple[list[int], list[int]]:
    """Row and column indices of the upper triangle (diagonal included) of a dim x dim matrix."""
    rows, cols = [], []
    for i in range(dim):
        for j in range(i, dim):
            rows.append(i)
            cols.append(j)
    return rows, cols


def rbf_phi(x: torch.Tensor, idx: torch.Tensor, centers: torch.Tensor, shapes: torch.Tensor, kernel: str,
            normalize: bool) -> torch.Tensor:
    """Kernel values of each query's neighbours (plain PyTorch, differentiable w.r.t. x, twice).

    Args:
        x: (N, dim) float, query positions in the field box.
        idx: (N, k) int64, indices into the RBF tables (any k >= 1, e.g. from ``AdaptiveRBF.neighbours``).
        centers: (n_rbf, dim) float.
        shapes: (n_rbf, 1) inverse tent width s for ``nlin_s``; (n_rbf, dim, dim) SPD inverse covariance S for ``*_a``.
        kernel: one of :data:`KERNELS`.
        normalize: divide by the (detached) sum over the k neighbours, so each row sums to 1 in value.

    Returns:
        (N, k) float, column j belongs to RBF ``idx[:, j]``.
    """
    n, k = idx.shape
    dim = centers.shape[1]
    flat = idx.reshape(-1)
    d = x.unsqueeze(1) - centers.index_select(0, flat).view(n, k, dim)  # (N, k, dim)
    if kernel == "nlin_s":
        s = shapes.index_select(0, flat).view(n, k, 1)
        t = (1.0 - d.abs() * s).clamp_min(0.0)  # 1 - |d| s <= 1 always, so only the lower clamp matters
        # An explicit product instead of prod(-1): prod's backward takes a slow path whenever a factor is 0,
        # which is the common case here (queries outside a tent's support).
        phi = t[..., 0]
        for j in range(1, dim):
            phi = phi * t[..., j]
    elif kernel in ("ivq_a", "gauss_a"):
        # d^T S d from the upper triangle of S only: gathers (N, k, dim(dim+1)/2) instead of (N, k, dim, dim).
        # Columns are picked with unbind/select, not list indexing: list indexing's backward is a slow index_put.
        rows, cols = _triu_pairs(dim)
        sym = shapes.reshape(shapes.shape[0], dim * dim)
        packed = torch.stack([sym[:, i * dim + j] * (1.0 if i == j else 2.0) for i, j in zip(rows, cols)], -1)
        sp = packed.index_select(0, flat).view(n, k, len(rows))
        dj = d.unbind(-1)
        dd = torch.stack([dj[i] * dj[j] for i, j in zip(rows, cols)], -1)  # (N, k, P)
        q = (sp * dd).sum(-1)  # (N, k)
        phi = 1.0 / (1.0 + q) if kernel == "ivq_a" else torch.exp(-0.5 * q)
    else:
        raise ValueError(f"unknown RBF kernel {kernel!r}; choose one of {KERNELS}")
    if normalize:
        # Detached denominator, as in NeuRBF: the sum only rescales, gradients see phi_k / const.
        phi = phi / (phi.sum(-1, keepdim=True).detach() + 1e-8)
    return phi


def rbf_reference(x: torch.Tensor, idx: torch.Tensor, centers: torch.Tensor, shapes: torch.Tensor,
                  features: torch.Tensor, freqs: torch.Tensor, kernel: str, normalize: bool) -> torch.Tensor:
    """Plain-PyTorch adaptive-RBF forward; differentiable w.r.t. ``features`` and ``x`` (twice, for eikonal terms).

    Args:
        x, idx, centers, shapes, kernel, normalize: as in :func:`rbf_phi`.
        features: (n_rbf, F) float, per-RBF feature vectors.
        freqs: (F,) float, one sine frequency per feature channel.

    Returns:
        (N, F) float, ``sum_k features[idx_k] * sin(phi_k * freqs)``.
    """
    n, k = idx.shape
    phi = rbf_phi(x, idx, centers, shapes, kernel, normalize)
    w = features.index_select(0, idx.reshape(-1)).view(n, k, features.shape[1])  # (N, k, F)
    return (w * torch.sin(phi.unsqueeze(-1) * freqs)).sum(1)


class _RBFFunction(torch.autograd.Function):
    """The fused RBF layer (``cpu`` or ``cuda`` extension); differentiable w.r.t. ``features`` only."""

    @staticmethod
    def forward(ctx, x, idx, centers, shapes, features, freqs, kernel_id, normalize, path):
        stream = kernels.stream_args(path, x.device)
        out = kernels.ops(path).rbf_forward(x, idx, centers, shapes, features, freqs, kernel_id, normalize, *stream)
        ctx.save_for_backward(x, idx, centers, shapes, freqs)
        ctx.meta = (features.shape[0], kernel_id, normalize, path)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, idx, centers, shapes, freqs = ctx.saved_tensors
        n_rbf, kernel_id, normalize, path = ctx.meta
        gfeat = None
        if ctx.needs_input_grad[4]:
            gfeat = kernels.ops(path).rbf_backward(grad.contiguous(), x, idx, centers, shapes, freqs, n_rbf, kernel_id,
                                                   normalize, *kernels.stream_args(path, x.device))
        return None, None, None, None, gfeat, None, None, None, None


def rbf_layer(x: torch.Tensor, idx: torch.Tensor, centers: torch.Tensor, shapes: torch.Tensor, features: torch.Tensor,
              freqs: torch.Tensor, kernel: str, normalize: bool) -> torch.Tensor:
    """The RBF layer ``sum_k features[idx] * sin(phi_k * freqs)``; arguments as ``rbf_reference``.

    Runs the fused kernels when ``kernels.path_for_call`` picks them (only ``features`` may need a gradient there),
    else :func:`rbf_reference`.
    """
    # Beyond the fused kernels (cuda/common.h kMaxK, dim 2-3): the reference, which also raises on bad indices.
    supported = idx.shape[1] <= FUSED_MAX_K and x.shape[-1] in (2, 3)
    path = kernels.path_for_call(x, features, centers, shapes, freqs, supported=supported)
    if path == "reference":
        return rbf_reference(x, idx, centers, shapes, features, freqs, kernel, normalize)
    return _RBFFunction.apply(x.contiguous(), idx.long().contiguous(), centers.contiguous(),
                              shapes.reshape(shapes.shape[0], -1).contiguous(), features.contiguous(),
                              freqs.contiguous(), KERNEL_IDS[kernel], bool(normalize), path)


class AdaptiveRBF(nn.Module):
    """Adaptive RBF layer with K-nearest-neighbour evaluation and multi-frequency sine composition.

    Args:
        dim: input dimension (2 for images / slices, 3 for SDF / NeRF).
        n_rbf: number of RBFs.
        n_features: F, width of each RBF's feature vector and of the output.
        k: neighbours evaluated per query (clipped to n_rbf).
        kernel: ``"nlin_s"`` (isotropic tent, NeuRBF's SDF choice), ``"ivq_a"`` (anisotropic inverse quadric) or
            ``"gauss_a"`` (anisotropic Gaussian).
        freq_min, freq_max: ends of the log2-spaced sine frequencies, ``freqs = exp2(linspace(log2 lo, log2 hi, F))``.
        normalize: divide the k kernel values of a query by their detached sum.
        init_scale: ``features ~ U(-init_scale, init_scale)`` from ``generator`` (torch's global RNG if None).

    Attributes:
        out_dim: = n_features.
        centers: buffer (n_rbf, dim), field-box frame. Until :meth:`init_from_points` (or ``load_state_dict``) they
            are a deterministic placeholder: the first n_rbf nodes of a regular grid over the box (all of the box only
            when n_rbf is a perfect power), with widths of two grid cells.
        shapes: buffer, (n_rbf, 1) inverse tent width s (``nlin_s``) or (n_rbf, dim, dim) SPD inverse covariance S.
        freqs: buffer (n_features,).
        features: parameter (n_rbf, n_features), the only trained tensor.
    """

    out_dim: int

    def __init__(self, dim: int, n_rbf: int, n_features: int = 16, k: int = 8, kernel: str = "nlin_s",
                 freq_min: float = 1.0, freq_max: float = 8.0, normalize: bool = True, init_scale: float = 1e-4,
                 generator: torch.Generator | None = None):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"unknown RBF kernel {kernel!r}; choose one of {KERNELS}")
        if dim < 1 or n_rbf < 1 or n_features < 1 or k < 1:
            raise ValueError(f"dim, n_rbf, n_features and k must be >= 1, got {dim}, {n_rbf}, {n_features}, {k}")
        if not (0 < freq_min <= freq_max):
            raise ValueError(f"need 0 < freq_min <= freq_max, got {freq_min}, {freq_max}")
        self.dim = dim
        self.n_rbf = n_rbf
        self.n_features = n_features
        self.k = min(k, n_rbf)
        self.kernel = kernel
        self.normalize = normalize
        self.out_dim = n_features

        centers, width = self._grid_layout(dim, n_rbf)
        self.register_buffer("centers", centers)
        if kernel.endswith("_s"):
            shapes = torch.full((n_rbf, 1), 1.0 / width)
        else:
            shapes = torch.eye(dim).expand(n_rbf, dim, dim) / width**2
        self.register_buffer("shapes", shapes.contiguous())
        self.register_buffer("freqs", torch.exp2(torch.linspace(math.log2(freq_min), math.log2(freq_max), n_features)))
        self.features = nn.Parameter(torch.empty(n_rbf, n_features).uniform_(-init_scale, init_scale,
                                                                                generator=generator))

        self._tree: cKDTree | None = None  # neighbour index over `centers`, rebuilt lazily (see neighbours)

    @staticmethod
    def _grid_layout(dim: int, n_rbf: int) -> tuple[torch.Tensor, float]:
        """Placeholder centres before k-means: the first n_rbf nodes of a regular grid over [-1, 1]^dim, and a width
        (std / tent support radius) of two grid cells so neighbouring kernels overlap."""
        side = max(2, math.ceil(n_rbf ** (1.0 / dim)))
        axis = torch.linspace(-1.0, 1.0, side)
        grid = torch.stack(torch.meshgrid(*([axis] * dim), indexing="ij"), -1).reshape(-1, dim)
        return grid[:n_rbf].contiguous(), 2.0 * (2.0 / (side - 1))

    # ---------------------------------------------------------------------------------------------------- budget
    @staticmethod
    def params_per_rbf(dim: int, n_features: int, kernel: str) -> int:
        """Budgeted numbers per RBF: features + centre + shape (1 for ``*_s``, dim(dim+1)/2 for symmetric ``*_a``)."""
        if kernel not in KERNELS:
            raise ValueError(f"unknown RBF kernel {kernel!r}; choose one of {KERNELS}")
        shape = 1 if kernel.endswith("_s") else dim * (dim + 1) // 2
        return n_features + dim + shape

    def param_count(self) -> int:
        """Budget of the layer: n_rbf * params_per_rbf (frozen centres and shapes included, freqs excluded)."""
        return self.n_rbf * self.params_per_rbf(self.dim, self.n_features, self.kernel)

    # ---------------------------------------------------------------------------------------------------- init
    @torch.no_grad()
    def init_from_points(self, points, weights=None, n_iter: int = 10, alpha: float = 0.5, seed: int = 0,
                         min_width: float | None = None, max_width: float | None = None) -> None:
        """Place centres by weighted k-means on ``points`` and set shapes from each cluster's spread (NeuRBF Eq. 9).

        Args:
            points: (P, dim) float array or tensor, field-box frame.
            weights: (P,) float >= 0 or None (uniform). Normalised by their mean; points with weight <= 0 are dropped.
            n_iter: Lloyd iterations.
            alpha: spread divisor (NeuRBF: 0.5 for images / SDF); larger alpha -> narrower kernels.
            seed: seed of the numpy Generator that draws the initial centres.
            min_width, max_width: clamps of every std-like width (defaults :data:`DEFAULT_MIN_WIDTH` = 1e-3,
                :data:`DEFAULT_MAX_WIDTH` = 0.2 = box extent / 10).

        Algorithm:
            1. Initial centres: n_rbf points drawn with probability proportional to weight, without replacement.
            2. n_iter Lloyd iterations: assign each point to its nearest centre (cKDTree); move each centre to the
               weighted mean of its points (float64); a centre with no points keeps its position.
            3. Assign points to the final centres, and per cluster c with weights w_i:
               ``*_a``:   K = sum_i w_i (x_i - c)(x_i - c)^T / sum_i w_i / alpha                       (dim x dim)
                          diag K_jj clamped to [min_width^2, max_width^2]; off-diagonals to
                          +-0.999 sqrt(K_ii K_jj); eigenvalues floored at min_width^2 (the pairwise clamp alone
                          does not make a 3x3 matrix positive definite, e.g. for planar clusters); S = K^-1.
               ``nlin_s``: kw^2 = 4 * sum_i w_i |x_i - c|^2 / sum_i w_i / alpha  (sum over all dim axes; the x4 puts
                          the tent at 0.5 at the cluster width sqrt(kw^2)/2), clamped to [min_width^2, max_width^2];
                          s = 1 / sqrt(kw^2), i.e. the tent's support radius per axis is sqrt(kw^2).
               Empty clusters (no weight) and zero-spread clusters (trace K < min_width^2, e.g. a single point)
               would get a dead, min-width kernel in NeuRBF; here they get an isotropic width equal to the distance
               to the nearest other centre (clamped as above), so the kernel covers its Voronoi cell like a grid
               tent would. With n_rbf = 1 that fallback is max_width; centres that coincide (possible when points
               repeat) get min_width.

        Raises:
            ValueError: bad shapes, non-finite values, negative weights, or fewer usable points than n_rbf.
        """
        dim, n = self.dim, self.n_rbf
        min_w = DEFAULT_MIN_WIDTH if min_width is None else float(min_width)
        max_w = DEFAULT_MAX_WIDTH if max_width is None else float(max_width)
        if not (0 < min_w <= max_w):
            raise ValueError(f"need 0 < min_width <= max_width, got {min_w}, {max_w}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")

        pts = _as_float64(points)
        if pts.ndim != 2 or pts.shape[1] != dim:
            raise ValueError(f"points must have shape (P, {dim}), got {tuple(pts.shape)}")
        if weights is None:
            w = np.ones(len(pts))
        else:
            w = _as_float64(weights).reshape(-1)
            if w.shape[0] != pts.shape[0]:
                raise ValueError(f"weights must have shape ({pts.shape[0]},), got {tuple(w.shape)}")
            if not np.isfinite(w).all() or (w < 0).any():
                raise ValueError("weights must be finite and >= 0")
        if not np.isfinite(pts).all():
            raise ValueError("points must be finite")
        if len(w) and w.mean() > 0:
            w = w / w.mean()
        keep = w > 0
        pts, w = pts[keep], w[keep]
        if len(pts) < n:
            raise ValueError(f"init_from_points needs at least n_rbf={n} points with weight > 0, got {len(pts)}; "
                             "pass more points or build the layer with fewer RBFs")

        rng = np.random.default_rng(seed)
        centers = pts[rng.choice(len(pts), size=n, replace=False, p=w / w.sum())].copy()
        for _ in range(n_iter):
            check_cancel()  # each iteration is a kNN pass over every point: seconds on large pools
            labels = _nearest(centers, pts)
            wsum = np.bincount(labels, weights=w, minlength=n)
            filled = wsum > 0  # empty clusters keep their old centre
            for j in range(dim):  # bincount = float64 segment sum, much faster than np.add.at
                sums = np.bincount(labels, weights=w * pts[:, j], minlength=n)
                centers[filled, j] = sums[filled] / wsum[filled]

        labels = _nearest(centers, pts)
        wsum = np.bincount(labels, weights=w, minlength=n)
        safe = np.where(wsum > 0, wsum, 1.0)
        off = pts - centers[labels]  # (P, dim)
        # Fallback width for empty / zero-spread clusters: distance to the nearest other centre.
        if n > 1:
            nn_dist = cKDTree(centers).query(centers, k=2, workers=-1)[0][:, 1]
        else:
            nn_dist = np.full(1, max_w)
        fallback_sq = np.clip(nn_dist, min_w, max_w) ** 2

        if self.kernel.endswith("_s"):
            kw_sq = np.bincount(labels, weights=w * (off**2).sum(1), minlength=n) / safe / alpha * 4.0
            dead = (wsum <= 0) | (kw_sq < min_w**2)
            kw_sq = np.where(dead, fallback_sq, np.clip(kw_sq, min_w**2, max_w**2))
            shapes = (1.0 / np.sqrt(kw_sq))[:, None]
        else:
            cov = np.zeros((n, dim, dim))
            for i in range(dim):
                for j in range(i, dim):
                    cov[:, i, j] = np.bincount(labels, weights=w * off[:, i] * off[:, j], minlength=n) / safe / alpha
                    cov[:, j, i] = cov[:, i, j]
            dead = (wsum <= 0) | (np.trace(cov, axis1=1, axis2=2) < min_w**2)
            cov[dead] = fallback_sq[dead, None, None] * np.eye(dim)
            diag_idx = np.arange(dim)
            diag = np.clip(cov[:, diag_idx, diag_idx], min_w**2, max_w**2)
            bound = 0.999 * np.sqrt(diag[:, :, None] * diag[:, None, :])
            cov = np.clip(cov, -bound, bound)
            cov[:, diag_idx, diag_idx] = diag
            evals, evecs = np.linalg.eigh(cov)
            evals = np.maximum(evals, min_w**2)
            shapes = (evecs / evals[:, None, :]) @ evecs.transpose(0, 2, 1)  # S = V diag(1/lambda) V^T = K^-1
            shapes = 0.5 * (shapes + shapes.transpose(0, 2, 1))

        self.centers.copy_(torch.from_numpy(centers))
        self.shapes.copy_(torch.from_numpy(shapes))
        self.rebuild_index()

    # ---------------------------------------------------------------------------------------------------- kNN
    def rebuild_index(self) -> None:
        """Rebuild the neighbour index from the current ``centers`` (neighbours() also does this when needed)."""
        c = self.centers.detach().to("cpu", torch.float64).numpy()
        self._tree = cKDTree(c, copy_data=True)  # own copy: for float64 CPU centres `c` aliases the buffer

    def _index(self) -> cKDTree:
        # Exact staleness check: compare the tree's own copy of the centres with the buffer. O(n_rbf * dim), tiny next
        # to a kNN query, and it catches every way centres change (load_state_dict, copy_, .data writes, .to()).
        c = self.centers.detach().to("cpu", torch.float64).numpy()
        tree = self._tree
        if tree is None or tree.data.shape != c.shape or not np.array_equal(tree.data, c):
            self._tree = tree = cKDTree(c, copy_data=True)
        return tree

    def neighbours(self, x: torch.Tensor) -> torch.Tensor:
        """Exact k nearest centres (Euclidean) of each query.

        Args:
            x: (N, dim) float, any device, field-box frame (points outside the box are fine).

        Returns:
            (N, k) int64 on x.device, ordered by increasing distance; k = min(k, n_rbf).
        """
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got {tuple(x.shape)}")
        q = x.detach().to("cpu", torch.float64).numpy()
        if not np.isfinite(q).all():
            raise ValueError("neighbours: x contains NaN or inf")
        tree = self._index()
        idx = np.empty((len(q), self.k), dtype=np.int64)
        for s in range(0, len(q), NEIGHBOUR_CHUNK):  # chunks keep a cancel within a second on 2M-point pools
            check_cancel()
            _, part = tree.query(q[s:s + NEIGHBOUR_CHUNK], k=self.k, workers=-1)
            idx[s:s + NEIGHBOUR_CHUNK] = np.asarray(part, dtype=np.int64).reshape(-1, self.k)  # (N,) when k == 1
        return torch.from_numpy(idx).to(x.device)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._tree = None  # belt and braces; _index() would notice the new centres anyway

    # ---------------------------------------------------------------------------------------------------- forward
    def _check(self, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got {tuple(x.shape)}")
        if idx is None:
            return self.neighbours(x)
        if idx.ndim != 2 or idx.shape[0] != x.shape[0]:
            raise ValueError(f"idx must have shape ({x.shape[0]}, k), got {tuple(idx.shape)}")
        return idx.long()

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Encode positions.

        Args:
            x: (N, dim) float, field-box frame.
            idx: (N, k') int64 precomputed neighbour indices (e.g. a training pool's table from :meth:`neighbours`);
                None computes them here.

        Returns:
            (N, n_features) float.
        """
        idx = self._check(x, idx)
        return rbf_layer(x, idx, self.centers, self.shapes, self.features, self.freqs, self.kernel, self.normalize)

    def phi(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(N, k') kernel values (normalised if ``normalize``) of the neighbours ``idx`` (default: neighbours(x)),
        for inspection and tests; forward() uses the same function."""
        idx = self._check(x, idx)
        return rbf_phi(x, idx, self.centers, self.shapes, self.kernel, self.normalize)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, n_rbf={self.n_rbf}, n_features={self.n_features}, k={self.k}, "
                f"kernel={self.kernel!r}, normalize={self.normalize}")


def _as_float64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def _nearest(centers: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(P,) index of the nearest centre of each point."""
    return cKDTree(centers).query(pts, k=1, workers=-1)[1].astype(np.int64)
