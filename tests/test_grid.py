"""Tests for fields/encoders/grid.py (MultiResGrid). Small configs only: the whole file runs in a few seconds."""

import math

import pytest
import torch
from torch.func import functional_call

from fieldstudio.encoders.grid import MultiResGrid

PRIMES = (1, 2654435761, 805459861)


def _grid(dim, **kw):
    torch.manual_seed(0)
    return MultiResGrid(dim, **kw)


def _vertex_coords(res, n_rows, dim):
    """(n_rows, dim) integer vertex coordinates of the rows of a dense level (axis 0 fastest)."""
    r = torch.arange(n_rows)
    return torch.stack([(r // (res + 1) ** d) % (res + 1) for d in range(dim)], dim=1)


def _pos_to_x(pos, res):
    """Grid position in [0, res] -> normalised coordinate in [-1, 1] (aligned corners)."""
    return pos / res * 2.0 - 1.0


# ---------------------------------------------------------------------------------------------- layout / shapes
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("hashed", [False, True])
def test_shapes_and_param_count(dim, hashed):
    kw = dict(n_levels=4, n_features=3, base_resolution=4, max_resolution=32, log2_hashmap_size=8 if hashed else 16)
    g = _grid(dim, **kw)
    assert g.out_dim == 12
    assert g.resolutions.tolist() == [4, 8, 16, 32]
    n_hashed = g.n_levels - g.n_dense
    if hashed:
        assert n_hashed >= 2  # (8+1)^2 = 81 <= 256 but (16+1)^2 > 256
    else:
        assert n_hashed == 0
    x = torch.rand(37, dim) * 2 - 1
    y = g(x)
    assert y.shape == (37, 12) and y.dtype == torch.float32
    assert g.param_count() == MultiResGrid.count_params(dim, **kw) == g.embeddings.numel()
    y64 = g.double()(x.double())
    assert y64.dtype == torch.float64 and torch.allclose(y64.float(), y, atol=1e-7)


def test_param_count_by_hand():
    # dim 2, res [4, 8]: level 0 dense (5^2 = 25 rows), level 1 hashed ((9^2 = 81 > 64) -> 64 rows)
    g = _grid(2, n_levels=2, n_features=2, base_resolution=4, max_resolution=8, log2_hashmap_size=6)
    assert g.n_dense == 1
    assert g.offsets.tolist() == [0, 25, 89]
    assert g.param_count() == MultiResGrid.count_params(2, 2, 2, 4, 8, 6) == 89 * 2
    # (7+1)^2 == 2^6 exactly: still dense
    g = _grid(2, n_levels=1, n_features=1, base_resolution=7, max_resolution=7, log2_hashmap_size=6)
    assert g.n_dense == 1 and g.param_count() == 64
    # default SDF-size config: 16 levels up to exactly 2048 (floor must not lose it to rounding)
    g = _grid(3, n_levels=16, n_features=1, log2_hashmap_size=15)
    assert g.resolutions[0].item() == 16 and g.resolutions[-1].item() == 2048
    assert g.n_dense == 3  # 17^3, 23^3, 31^3 <= 32768 < 43^3
    assert g.param_count() == 17**3 + 23**3 + 31**3 + 13 * 2**15


def test_single_level_and_bad_args():
    g = _grid(2, n_levels=1, base_resolution=8, max_resolution=8)
    assert g.resolutions.tolist() == [8]
    with pytest.raises(ValueError):
        MultiResGrid(4)
    with pytest.raises(ValueError):
        MultiResGrid(2, base_resolution=32, max_resolution=16)
    with pytest.raises(ValueError):
        g(torch.zeros(5, 3))


# ---------------------------------------------------------------------------------------------- values
@pytest.mark.parametrize("dim", [2, 3])
def test_dense_level_reproduces_linear_function(dim):
    g = _grid(dim, n_levels=2, n_features=2, base_resolution=3, max_resolution=7, log2_hashmap_size=12)
    assert g.n_dense == 2
    a = torch.tensor([0.3, -0.7, 0.45][:dim], dtype=torch.float64)
    g = g.double()
    with torch.no_grad():
        for level in range(2):
            res = int(g.resolutions[level])
            lo, hi = int(g.offsets[level]), int(g.offsets[level + 1])
            v = _vertex_coords(res, hi - lo, dim).double()
            g.embeddings[lo:hi, 0] = v @ a + 0.1  # linear in vertex units
            g.embeddings[lo:hi, 1] = _pos_to_x(v[:, 0], res)  # world x coordinate of the vertex
    torch.manual_seed(1)
    x = torch.rand(50, dim, dtype=torch.float64) * 2 - 1
    x[0] = -1.0
    x[1] = 1.0  # upper face: belongs to the last cell
    y = g(x)
    for level in range(2):
        res = int(g.resolutions[level])
        pos = (x + 1) / 2 * res
        torch.testing.assert_close(y[:, 2 * level], pos @ a + 0.1, rtol=0, atol=1e-12)
        torch.testing.assert_close(y[:, 2 * level + 1], x[:, 0], rtol=0, atol=1e-12)


def test_dense_bilinear_by_hand():
    g = _grid(2, n_levels=1, n_features=1, base_resolution=4, max_resolution=4, log2_hashmap_size=10).double()
    with torch.no_grad():
        g.embeddings.copy_(torch.randn(25, 1, dtype=torch.float64))
    e = g.embeddings[:, 0].detach()

    def vert(i, j):  # row of vertex (i along axis 0, j along axis 1)
        return e[i + 5 * j]

    for px, py in [(1.25, 2.5), (0.0, 0.0), (3.9, 0.1), (4.0, 4.0), (2.0, 3.75)]:
        i, j = min(int(px), 3), min(int(py), 3)
        fx, fy = px - i, py - j
        expected = (
            vert(i, j) * (1 - fx) * (1 - fy)
            + vert(i + 1, j) * fx * (1 - fy)
            + vert(i, j + 1) * (1 - fx) * fy
            + vert(i + 1, j + 1) * fx * fy
        )
        x = _pos_to_x(torch.tensor([[px, py]], dtype=torch.float64), 4)
        assert g(x)[0, 0].item() == pytest.approx(expected.item(), abs=1e-12)


def test_points_outside_box_are_clamped():
    g = _grid(3, n_levels=3, base_resolution=4, max_resolution=16, log2_hashmap_size=8, init_scale=1.0)
    x = torch.tensor([[1.5, -3.0, 0.2], [0.3, 0.4, 7.0]])
    torch.testing.assert_close(g(x), g(x.clamp(-1, 1)), rtol=0, atol=0)
    assert not torch.equal(g(x), g(x * 0.9))


@pytest.mark.parametrize("dim", [2, 3])
def test_continuity_across_cell_faces(dim):
    g = _grid(dim, n_levels=4, n_features=2, base_resolution=4, max_resolution=32, log2_hashmap_size=8,
              init_scale=1.0).double()
    eps = 1e-7
    torch.manual_seed(2)
    base = torch.rand(20, dim, dtype=torch.float64) * 1.6 - 0.8
    for res in g.resolutions.tolist():
        # move axis 0 onto a vertex plane of this level, then step across it
        x = base.clone()
        x[:, 0] = _pos_to_x(torch.round((x[:, 0] + 1) / 2 * res), res)
        step = torch.zeros(dim, dtype=torch.float64)
        step[0] = eps
        jump = (g(x + step) - g(x - step)).abs().max().item()
        # Lipschitz bound of a multilinear interpolant: res/2 per unit x, times the largest vertex difference (<= 2)
        assert jump <= 2 * eps * (32 / 2) * 2 * 1.01
        # ...while the features themselves are O(1), so a discontinuity would be caught
        assert (g(x + step) - g(x - step + 0.5)).abs().max().item() > 1e-2


# ---------------------------------------------------------------------------------------------- indices
def test_hashed_indices_match_formula_and_stay_in_table():
    g = _grid(3, n_levels=4, n_features=2, base_resolution=4, max_resolution=64, log2_hashmap_size=9)
    assert g.n_dense == 1 and g.n_levels - g.n_dense == 3
    torch.manual_seed(3)
    x = torch.rand(200, 3) * 2 - 1
    rows, weights = g.corner_indices(x)
    assert rows.shape == (4, 200, 8) and weights.shape == (4, 200, 8)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 200))
    for level in range(4):
        lo, hi = int(g.offsets[level]), int(g.offsets[level + 1])
        assert int(rows[level].min()) >= lo and int(rows[level].max()) < hi
    # formula check on a few points, in plain Python integers
    mask = 2**9 - 1
    for level in range(1, 4):
        res = int(g.resolutions[level])
        for n in range(5):
            cell = [min(math.floor((float(x[n, d]) + 1) / 2 * res), res - 1) for d in range(3)]
            for c in range(8):
                v = [cell[d] + ((c >> d) & 1) for d in range(3)]
                h = ((v[0] * PRIMES[0]) ^ (v[1] * PRIMES[1]) ^ (v[2] * PRIMES[2])) & mask
                assert int(rows[level, n, c]) == int(g.offsets[level]) + h
    # dense level: row-major, axis 0 fastest
    for n in range(5):
        cell = [min(math.floor((float(x[n, d]) + 1) / 2 * 4), 3) for d in range(3)]
        assert int(rows[0, n, 7]) == (cell[0] + 1) + 5 * (cell[1] + 1) + 25 * (cell[2] + 1)
    # two hashed levels address different rows and give different features
    assert not torch.equal(rows[2] - g.offsets[2], rows[3] - g.offsets[3])
    y = g(x)
    assert not torch.allclose(y[:, 4:6], y[:, 6:8])
    # hashing spreads points: many distinct rows are used
    assert rows[3].unique().numel() > 300


# ---------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("dim", [2, 3])
def test_gradcheck_x_and_embeddings(dim):
    g = _grid(dim, n_levels=3, n_features=2, base_resolution=2, max_resolution=8, log2_hashmap_size=5,
              init_scale=1.0).double()
    assert g.n_dense < 3  # at least one hashed level
    torch.manual_seed(4)
    x = (torch.rand(6, dim, dtype=torch.float64) * 1.8 - 0.9).requires_grad_(True)
    emb = g.embeddings.detach().clone().requires_grad_(True)

    def f(x, emb):
        return functional_call(g, {"embeddings": emb}, (x,))

    assert torch.autograd.gradcheck(f, (x, emb), eps=1e-6, atol=1e-6)
    # eikonal-style double backward: d/d(emb) of a loss on d(out)/dx
    assert torch.autograd.gradgradcheck(f, (x, emb), eps=1e-6, atol=1e-6)


def test_gradients_finite_float32():
    g = _grid(3, n_levels=6, n_features=2, base_resolution=4, max_resolution=128, log2_hashmap_size=12)
    x = (torch.rand(500, 3) * 2.2 - 1.1).requires_grad_(True)  # some points outside: zero grad there
    y = g(x)
    (dy_dx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    ((dy_dx.norm(dim=-1) - 1) ** 2).mean().backward()
    assert torch.isfinite(dy_dx).all() and dy_dx.abs().sum() > 0
    assert g.embeddings.grad is not None and torch.isfinite(g.embeddings.grad).all()
    assert g.embeddings.grad.abs().sum() > 0
    outside = (x.detach().abs() > 1).any(dim=1)
    assert outside.any()
    assert (dy_dx[x.detach() > 1] == 0).all() and (dy_dx[x.detach() < -1] == 0).all()


# ---------------------------------------------------------------------------------------------- checkpoints
def test_state_dict_round_trip_and_layout_check():
    kw = dict(n_levels=3, n_features=2, base_resolution=4, max_resolution=16, log2_hashmap_size=6)
    a = _grid(2, **kw)
    torch.manual_seed(5)
    b = MultiResGrid(2, **kw)
    x = torch.rand(10, 2) * 2 - 1
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    # all levels hashed with the same table size: same embeddings shape, different resolutions -> refused
    c = MultiResGrid(2, n_levels=2, base_resolution=16, max_resolution=32, log2_hashmap_size=6)
    d = MultiResGrid(2, n_levels=2, base_resolution=16, max_resolution=64, log2_hashmap_size=6)
    assert c.embeddings.shape == d.embeddings.shape
    with pytest.raises(RuntimeError, match="resolutions"):
        d.load_state_dict(c.state_dict())
