"""cells.py
========
Exact k-nearest-neighbour queries against a FROZEN set of RBF centres, in plain PyTorch on the centres' device, so
that a training step with fresh random points (NeRF: 1e5-5e5 per step) needs no CPU k-d tree query.

:class:`CellNeighbours` lays a uniform grid of ``R**dim`` cells over the field box ``[-1, 1]^dim`` and stores, per
cell, a candidate list that provably contains the k nearest centres of every point of the cell (proof in the class
docstring). The lists are built once on the CPU with scipy's ``cKDTree`` in float64 and kept flat (one int32 array
with an offset and a length per cell). A query is a gather, squared distances and a ``torch.topk``, all on the
device. Its result equals ``cKDTree.query(x, k)`` (``AdaptiveRBF.neighbours``) up to the order of equidistant
centres.

Cost: work per query ~ the length of its own cell's list (queries are grouped by list length, so a few long lists
do not slow every query down). A cell whose list would be longer than ``max_list``, or that lies far from every
centre, keeps none: its queries are answered exactly by other means (brute force over all centres on a GPU, the k-d
tree on the CPU). That keeps centres on a closed surface (RBFs placed on an
object's shell, as NeRF places them) cheap: from a cell deep inside the shell every centre is nearly equidistant and
its list would hold most of them, but the samples that need neighbours lie near the shell, in cells with short lists.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy.spatial import cKDTree

from fieldstudio.control import check_cancel

__all__ = ["CellNeighbours", "RESOLUTIONS"]

# Candidate cells per axis for resolution=None, finest first; the first whose tables fit max_bytes is taken.
RESOLUTIONS = {3: (128, 96, 64, 48, 32, 24, 16, 12, 8, 4, 2, 1),
               2: (1024, 512, 256, 192, 128, 96, 64, 48, 32, 16, 8, 1)}
MAX_LIST = 128  # longest stored candidate list; longer ones are answered by brute force
# The automatic resolution stays under this many cells per centre (small sets: small grids). Measured with 20k
# centres on a sphere, k = 5, 200k queries near it: R = 48 left 98 % of the cells over MAX_LIST (20 s a query
# batch), R = 96 ... (see CellNeighbours' report in docs/benchmarks.md).
CELLS_PER_CENTRE = 16

# Slack (field-box units) added to every list radius. It covers the rounding of the cell assignment of a query
# (float32: a point may be filed under a neighbouring cell it misses by ~1e-7) and float64 rounding in the build.
_EPS = 1e-5
_QUERY_CHUNK_BYTES = 256 * 2**20  # bound on the per-chunk temporaries of query()
_BUILD_CHUNK_ENTRIES = 2**21  # list entries converted per build chunk (bounds the Python-list memory)
_PROBE_CELLS = 4096  # cells sampled to reject a too-fine resolution before building its lists


class CellNeighbours:
    """Exact k nearest centres of arbitrary query points, by a uniform grid of precomputed candidate lists.

    Method and proof. The grid has ``R`` cells per axis over ``[-1, 1]^dim``; a cell has centre ``c`` and
    half-diagonal ``r = sqrt(dim) / R``. Let ``d_k(y)`` be the distance from ``y`` to its k-th nearest centre; it is
    1-Lipschitz, so ``d_k(x) <= d_k(c) + r`` for every ``x`` in the (closed) cell. The cell's list holds every
    centre ``p`` whose distance to the cell (the nearest point of the cell) is at most ``d_k(c) + r + eps``. Claim:
    for every ``x`` in the cell, all centres at distance ``<= d_k(x)`` from ``x``, hence its k nearest, are in the
    list. Proof: such a ``p`` has ``dist(p, cell) <= |p - x| <= d_k(x) <= d_k(c) + r``. Every list holds at least
    the k nearest of ``c`` (their distance to the cell is at most ``d_k(c)``). ``eps`` only absorbs rounding.
    The lists come from a ball query of radius ``d_k(c) + 2 r`` around ``c`` (which contains them), then the exact
    distance-to-cell test.

    Queries are clamped onto the box first: a point outside ``[-1, 1]^dim`` gets the neighbours of its projection
    onto the box (its nearest point of the box), which are not in general its own nearest centres. Inside the box
    the answer is exact; distances are evaluated in the centres' dtype (float32 usually), so centres that are
    equidistant to within ~1e-7 may come in either order, or swap at the k-th place.

    Args:
        centers: (n, dim) float tensor, dim 2 or 3, field-box frame (centres may lie outside the box). Copied; later
            changes to the tensor are not seen. The tables live on ``centers.device``.
        k: neighbours per query, clipped to n.
        max_bytes: budget of :attr:`nbytes` for the automatic resolution: the finest of :data:`RESOLUTIONS` with at
            most ``CELLS_PER_CENTRE`` cells per centre whose per-cell arrays and lists (at most ``max_list`` each)
            could fit it.
        resolution: cells per axis (None: automatic, as above).
        max_list: longest stored list; cells whose list would be longer store none and are answered by brute force.

    Attributes:
        k, dim, n: as above (k clipped).
        resolution: R, cells per axis.
        lists: (L + 1,) int32, the lists one after another (a final entry ``n``, the index of a sentinel centre at
            infinity, never among the k nearest). Cell ``(i_0, .., i_{dim-1})``, ``i_j = floor((x_j + 1) * R / 2)``
            clipped to ``[0, R - 1]``, is number ``sum_j i_j * R**(dim - 1 - j)``.
        offsets, counts: (R**dim,) int64 / int32, where each cell's list starts and its length (0: brute force).
        nbytes: bytes of all device tables.
    """

    def __init__(self, centers: torch.Tensor, k: int, max_bytes: int = 64 * 2**20, resolution: int | None = None,
                 max_list: int = MAX_LIST):
        if not isinstance(centers, torch.Tensor):
            raise ValueError(f"centers must be a torch.Tensor, got {type(centers).__name__}")
        if centers.ndim != 2 or centers.shape[1] not in (2, 3) or centers.shape[0] < 1:
            raise ValueError(f"centers must have shape (n >= 1, 2 or 3), got {tuple(centers.shape)}")
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if resolution is not None and int(resolution) < 1:
            raise ValueError(f"resolution must be >= 1 or None, got {resolution}")
        c64 = centers.detach().to("cpu", torch.float64).numpy()
        if not np.isfinite(c64).all():
            raise ValueError("centers contains NaN or inf")
        self.n, self.dim = c64.shape
        self.k = min(int(k), self.n)
        dtype = centers.dtype if centers.dtype in (torch.float32, torch.float64) else torch.float32
        itemsize = torch.empty((), dtype=dtype).element_size()
        m_cap = max(int(max_list), self.k)
        if resolution is not None:
            res = int(resolution)
        else:
            fixed = (self.n + 1) * self.dim * itemsize  # the centres copy, sentinel included
            fits = [r for r in RESOLUTIONS[self.dim] if r ** self.dim <= max(1, CELLS_PER_CENTRE * self.n)
                    and fixed + r ** self.dim * 13 + min(r ** self.dim, 4 * self.n) * m_cap * 4 <= max_bytes]
            res = fits[0] if fits else 1
        self.resolution = res
        self._tree = cKDTree(c64)  # also answers the cells without a list when the tables are on the CPU
        self._c64, self._m_cap, self._dtype = c64, (None if res == 1 else m_cap), dtype
        self._device = centers.device
        self._built = False
        if self._device.type != "cpu":
            self._build_tables()

    def _build_tables(self) -> None:
        """The candidate lists (built on first use: on the CPU queries go to the k-d tree unless lists are asked
        for)."""
        if self._built:
            return
        c64, dtype, device = self._c64, self._dtype, self._device
        lists, counts = self._build(self._tree, c64, self.resolution, self._m_cap)

        # Queries are grouped by the length of their cell's list, rounded up to a power of two; cells without a
        # list (brute force) form the group of width 0.
        pow2 = np.left_shift(1, np.ceil(np.log2(np.maximum(counts, 1))).astype(np.int64))
        width_of_cell = np.where(counts > 0, pow2, 0)
        widths, level = np.unique(width_of_cell, return_inverse=True)
        self._widths = [int(w) for w in widths]

        coords = np.concatenate([c64, np.full((1, self.dim), np.inf)], 0).T  # (dim, n + 1); row n: the sentinel
        self._built = True
        self._coords = torch.from_numpy(np.ascontiguousarray(coords)).to(device, dtype)
        self._lists = torch.from_numpy(np.concatenate([lists, [self.n]]).astype(np.int32)).to(device)
        self._counts = torch.from_numpy(counts.astype(np.int32)).to(device)
        self._offsets = torch.from_numpy(np.cumsum(counts) - counts).to(device)
        self._level = torch.from_numpy(level.reshape(-1).astype(np.uint8)).to(device)

    # ------------------------------------------------------------------------------------------------------ build
    def _build(self, tree: cKDTree, c64: np.ndarray, res: int, m_max: int | None):
        """The lists of every cell at resolution ``res`` (flat, in cell order) and their lengths; a cell whose list
        would exceed ``m_max`` entries keeps none (length 0). Cells are visited by increasing radius, and once a
        whole chunk of cells overflows, the rest (wider balls) is not queried at all."""
        dim, k = self.dim, self.k
        half = 1.0 / res  # half the side of a cell
        g = -1.0 + (2.0 * np.arange(res) + 1.0) / res
        cells = np.stack(np.meshgrid(*([g] * dim), indexing="ij"), -1).reshape(-1, dim)  # row order = cell index
        n_cells = len(cells)
        r = math.sqrt(dim) * half
        reach = tree.query(cells, k=[k], workers=-1)[0][:, 0] + r + _EPS  # distance-to-cell bound of the lists
        # Lists only where queries are expected: cells up to 1.5 times the widest reach of a cell holding a centre.
        # The others (far from every centre, whose balls would hold thousands) get none: brute force.
        own = np.unique(np.clip(((c64 + 1.0) * (res / 2.0)).astype(np.int64), 0, res - 1) @ res ** np.arange(dim)[::-1])
        cut = 1.5 * reach[own].max()
        order = np.flatnonzero(reach <= cut)
        lengths = np.zeros(n_cells, dtype=np.int64)
        kept_cells, kept_lists = [], []
        for s in range(0, len(order), 4096):
            check_cancel()
            sel = order[s:s + 4096]
            balls = tree.query_ball_point(cells[sel], reach[sel] + r, workers=-1, return_sorted=False)
            sizes = np.fromiter(map(len, balls), dtype=np.int64, count=len(balls))
            owner = np.repeat(np.arange(len(sel)), sizes)  # entry -> position in sel
            ids = np.fromiter(itertools.chain.from_iterable(balls), dtype=np.int64, count=int(sizes.sum()))
            gap = np.clip(np.abs(c64[ids] - cells[sel][owner]) - half, 0.0, None)  # per axis, outside the cell
            keep = (gap * gap).sum(1) <= reach[sel][owner] ** 2
            owner, ids = owner[keep], ids[keep]
            count = np.bincount(owner, minlength=len(sel))
            fits = count <= (m_max if m_max is not None else np.inf)
            keep = fits[owner]
            lengths[sel[fits]] = count[fits]
            kept_cells.append(sel[owner[keep]])
            kept_lists.append(ids[keep])
        if not kept_cells:
            return np.zeros(0, np.int64), lengths
        cell_of, ids = np.concatenate(kept_cells), np.concatenate(kept_lists)
        return ids[np.argsort(cell_of, kind="stable")], lengths  # in cell order

    # ------------------------------------------------------------------------------------------------------ query
    @property
    def lists(self) -> torch.Tensor:
        self._build_tables()
        return self._lists

    @property
    def counts(self) -> torch.Tensor:
        self._build_tables()
        return self._counts

    @property
    def offsets(self) -> torch.Tensor:
        self._build_tables()
        return self._offsets

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def nbytes(self) -> int:
        self._build_tables()
        return sum(t.numel() * t.element_size()
                   for t in (self._lists, self._counts, self._offsets, self._level, self._coords))

    def to(self, device) -> "CellNeighbours":
        """Move the tables to ``device``; returns self."""
        self._device = torch.device(device)
        if self._built:
            for name in ("_coords", "_lists", "_counts", "_offsets", "_level"):
                setattr(self, name, getattr(self, name).to(device))
        elif self._device.type != "cpu":
            self._build_tables()
        return self

    def _cells(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) int64 number of the cell of each point of the box (x already clamped)."""
        res = self.resolution
        ijk = ((x + 1.0) * (res / 2.0)).floor_().long().clamp_(0, res - 1)  # x = +1 belongs to the last cell
        flat = ijk[:, 0]
        for j in range(1, self.dim):
            flat = flat * res + ijk[:, j]
        return flat

    def query(self, x: torch.Tensor, lists: bool | None = None) -> torch.Tensor:
        """Exact k nearest centres (Euclidean) of each query point.

        On the CPU the k-d tree answers unless ``lists`` is True: it is faster there (20k centres on a sphere,
        200k points near it: 0.29 s against 1.3 s through the lists, 2 threads); the lists are for the GPU, where
        they run beside the samples (and are tested on the CPU with ``lists=True``).

        Args:
            x: (N, dim) float on :attr:`device`, field-box frame, converted to the centres' dtype. Points outside
                ``[-1, 1]^dim`` are clamped onto the box first, so they get the neighbours of their projection onto it.

        Returns:
            (N, k) int64 on x.device: centre indices, ordered by increasing distance.
        """
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (N, {self.dim}), got {shape}")
        if x.device != self.device:
            raise ValueError(f"x is on {x.device} but the neighbour tables are on {self.device}; call .to() first")
        x = x.detach().to(self._dtype)
        k = self.k
        out = torch.empty((x.shape[0], k), dtype=torch.int64, device=x.device)
        if x.shape[0] == 0:
            return out
        if not bool(torch.isfinite(x).all()):
            raise ValueError("query: x contains NaN or inf")
        x = x.clamp(-1.0, 1.0)
        if not (lists or (lists is None and x.device.type != "cpu")):
            self._brute_force(x, None, out)  # the k-d tree, on the CPU
            return out
        self._build_tables()
        cell = self._cells(x)

        # Queries are grouped by their cell's bucket width; one boolean mask per bucket is cheaper than sorting them.
        if len(self._widths) == 1:
            groups = [(self._widths[0], None)]
        else:
            level = self._level[cell]
            groups = [(w, torch.nonzero(level == b).squeeze(1)) for b, w in enumerate(self._widths)]

        per_entry = 12 + (self.dim + 2) * self._coords.element_size()  # positions, ids, coords, distances
        last = len(self._lists) - 1  # the sentinel
        for width, group in groups:
            if width == 0:  # cells without a list: all centres
                self._brute_force(x, group, out)
                continue
            size = x.shape[0] if group is None else group.numel()
            if size == 0:
                continue
            columns = torch.arange(width, device=x.device)
            chunk = max(1, _QUERY_CHUNK_BYTES // (width * per_entry))
            for s in range(0, size, chunk):
                rows = None if group is None else group[s:s + chunk]
                xs = x[s:s + chunk] if rows is None else x.index_select(0, rows)
                cs = cell[s:s + chunk] if rows is None else cell.index_select(0, rows)
                pos = self._offsets[cs][:, None] + columns  # (B, width) positions in `lists`
                pos = torch.where(columns < self._counts[cs][:, None].long(), pos, last)
                ids = self._lists[pos]  # (B, width) int32, the sentinel past each list's end
                flat = ids.reshape(-1)
                d2 = None
                for j in range(self.dim):  # one axis at a time: (B, width) temporaries instead of (B, width, dim)
                    dj = self._coords[j].index_select(0, flat).view_as(ids) - xs[:, j:j + 1]
                    d2 = dj * dj if d2 is None else d2.addcmul_(dj, dj)
                best = torch.topk(d2, k, dim=1, largest=False, sorted=True).indices
                nn_ids = ids.gather(1, best).long()
                if rows is None:
                    out[s:s + chunk] = nn_ids
                else:
                    out.index_copy_(0, rows, nn_ids)
        return out

    def _brute_force(self, x: torch.Tensor, rows: torch.Tensor | None, out: torch.Tensor) -> None:
        """Points in cells without a list: the k-d tree on the CPU (20k centres: 14k points in 20 ms where brute force
        took 3 s), all centres on a GPU (a plain (points x centres) distance matrix is what a GPU does fastest)."""
        rows = torch.arange(len(x), device=x.device) if rows is None else rows
        if x.device.type == "cpu":
            q = x.index_select(0, rows).double().numpy()
            idx = self._tree.query(q, k=self.k, workers=-1)[1].reshape(len(q), self.k)
            out.index_copy_(0, rows, torch.from_numpy(idx.astype(np.int64)))
            return
        self._build_tables()
        coords = self._coords[:, :self.n].T  # (n, dim), without the sentinel
        chunk = max(1, 2**24 // self.n)
        for s in range(0, len(rows), chunk):
            part = rows[s:s + chunk]
            d2 = torch.cdist(x.index_select(0, part), coords, compute_mode="donot_use_mm_for_euclid_dist").square_()
            out.index_copy_(0, part, torch.topk(d2, self.k, dim=1, largest=False, sorted=True).indices)

    def __repr__(self) -> str:
        self._build_tables()
        return (f"CellNeighbours(n={self.n}, dim={self.dim}, k={self.k}, resolution={self.resolution}, "
                f"longest list={int(self._counts.max())}, brute-force cells={int((self._counts == 0).sum())}, "
                f"nbytes={self.nbytes}, device={self.device})")
