"""test_cells.py
=============
Tests of the cell-list k-nearest-neighbour structure (fields/encoders/cells.py) against scipy's exact cKDTree query:
uniform and sphere-shell centres in 2-D and 3-D, points on cell faces, box corners and outside the box, fixed and
automatic resolutions, the memory budget, clipping of k, bad inputs, and a broken table the checks must catch.
"""

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from fieldstudio.encoders.cells import RESOLUTIONS, CellNeighbours
from fieldstudio.encoders.rbf import AdaptiveRBF

TIE = 1e-6  # distances closer than this count as ties: either index order is right
BUDGET = 8 * 2**20  # keeps the automatic resolutions (and the test) small; the default 64 MiB is exercised below


def _uniform(n, dim, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (n, dim)).astype(np.float32))


def _shell(n, dim, seed=0, radius=0.5, thickness=0.01):
    """Centres on a thin sphere (circle) shell, as RBFs fitted to an object's surface: empty inside and outside."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return torch.from_numpy((v * (radius + thickness * rng.normal(size=(n, 1)))).astype(np.float32))


def _queries(n, dim, res, seed=1):
    """Random points in the box, points on cell faces / edges / vertices, box corners, and points outside the box."""
    rng = np.random.default_rng(seed)
    inside = rng.uniform(-1, 1, (n, dim))
    faces = -1 + 2 * rng.integers(0, res + 1, (2000, dim)) / res  # grid vertices: on faces of 2**dim cells
    on_face = rng.uniform(-1, 1, (2000, dim))
    on_face[np.arange(2000), rng.integers(0, dim, 2000)] = faces[:, 0]  # one coordinate on a face
    corners = np.array(np.meshgrid(*([[-1.0, 1.0]] * dim), indexing="ij")).reshape(dim, -1).T
    outside = rng.uniform(-1.6, 1.6, (3000, dim))
    pts = np.concatenate([inside, faces, on_face, corners, outside]).astype(np.float32)
    return torch.from_numpy(pts)


def _check_knn(cn, centers, x, min_untied=0.9):
    """Assert that cn.query(x) is the exact kNN of the clamped points: distances always, indices where untied."""
    k, n = cn.k, len(centers)
    got = cn.query(x, lists=True).numpy()
    assert got.shape == (len(x), k) and got.dtype == np.int64
    assert got.min() >= 0 and got.max() < n, "a padding entry (or garbage) was returned"
    c = centers.double().numpy()
    q = x.clamp(-1, 1).double().numpy()
    kk = min(k + 1, n)  # one more, to see ties at the k-th place
    d_ref, i_ref = cKDTree(c).query(q, k=kk)
    d_ref, i_ref = d_ref.reshape(len(q), kk), i_ref.reshape(len(q), kk)
    d_got = np.linalg.norm(c[got] - q[:, None, :], axis=-1)
    np.testing.assert_allclose(d_got, d_ref[:, :k], rtol=0, atol=TIE)
    # Rows whose k nearest (and the (k+1)-th) are separated by more than TIE have one right answer.
    untied = (np.diff(d_ref, axis=1) > TIE).all(1)
    assert untied.mean() >= min_untied, "too many ties: the index comparison would be vacuous"
    np.testing.assert_array_equal(got[untied], i_ref[untied, :k])
    return got


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("layout", ["uniform", "shell"])
@pytest.mark.parametrize("k", [1, 4, 8])
def test_matches_kdtree(dim, layout, k):
    if layout == "uniform":
        centers, budget = _uniform(5000, dim), BUDGET
    else:  # shells make long lists (see the module docstring): fewer centres, the default budget
        centers, budget = _shell(1500, dim), 64 * 2**20
    cn = CellNeighbours(centers, k, max_bytes=budget)
    x = _queries(20000, dim, cn.resolution)
    got = _check_knn(cn, centers, x)
    # Not vacuous: the lists are not just "the centres in my cell" - most answers reach into other cells.
    res = cn.resolution
    cell = lambda p: ((p.clamp(-1, 1) + 1) * res / 2).floor().long().clamp(0, res - 1)  # noqa: E731
    own = (cell(centers[torch.from_numpy(got[:, -1])]) == cell(x)).all(1)
    assert res > 1 and own.float().mean() < 0.5
    assert cn.counts.shape == (res ** dim,) and cn.lists.dtype == torch.int32


@pytest.mark.parametrize("dim", [2, 3])
def test_fixed_resolution_same_answer(dim):
    centers = _uniform(3000, dim, seed=2)
    auto = CellNeighbours(centers, 8, max_bytes=BUDGET)
    fixed = CellNeighbours(centers, 8, resolution=8)
    assert fixed.resolution == 8 and auto.resolution != 8
    x = _queries(5000, dim, 8, seed=3)
    a = _check_knn(auto, centers, x)
    f = _check_knn(fixed, centers, x)
    assert (a == f).all(1).mean() > 0.99  # identical except possibly at float32 near-ties


def test_odd_resolution_and_float64():
    centers = _uniform(2000, 3, seed=4).double() * 1.05  # ~14 % of them lie (slightly) outside the box
    assert (centers.abs() > 1).any(1).float().mean() > 0.05
    cn = CellNeighbours(centers, 6, resolution=7)
    assert cn.resolution == 7 and cn._dtype == torch.float64
    _check_knn(cn, centers, _queries(5000, 3, 7, seed=5).double())


def test_broken_table_is_caught():
    # Remove one centre from every list: queries that need it must now fail the comparison.
    centers = _uniform(2000, 3, seed=6)
    cn = CellNeighbours(centers, 4, max_bytes=BUDGET)
    x = _queries(5000, 3, cn.resolution)
    idx = _check_knn(cn, centers, x)
    victim = int(np.bincount(idx[:, 0]).argmax())
    cn.lists[cn.lists == victim] = cn.n  # the sentinel: never chosen
    with pytest.raises(AssertionError):
        _check_knn(cn, centers, x)


def test_matches_adaptive_rbf_neighbours():
    torch.manual_seed(0)
    m = AdaptiveRBF(3, 500, k=8)
    m.init_from_points(np.random.default_rng(0).uniform(-1, 1, (4000, 3)), n_iter=3)
    cn = CellNeighbours(m.centers, m.k, max_bytes=BUDGET)
    x = _uniform(5000, 3, seed=7)
    got, want = cn.query(x), m.neighbours(x)
    assert got.shape == want.shape
    assert (got == want).all(1).float().mean() > 0.99  # rows may differ only at ties
    _check_knn(cn, m.centers, x)


def test_max_bytes_respected():
    centers = _uniform(5000, 3, seed=8)
    budget = 2**20
    cn = CellNeighbours(centers, 8, max_bytes=budget)
    assert cn.nbytes <= budget
    res = RESOLUTIONS[3]
    assert 0 < res.index(cn.resolution) < len(res) - 1
    _check_knn(cn, centers, _queries(3000, 3, cn.resolution))
    # A budget nothing fits in falls back to one cell listing every centre (brute force), still exact.
    tiny = CellNeighbours(centers[:300], 3, max_bytes=1)
    assert tiny.resolution == 1 and tiny.counts.tolist() == [300]
    _check_knn(tiny, centers[:300], _queries(2000, 3, 1))


def test_shell_lists_short_and_cpu_path_equal():
    """Centres on a sphere (NeRF's RBFs sit on surfaces): points near it find short lists, cells far from every
    centre keep none, and the CPU path (the k-d tree) gives the same neighbours as the lists."""
    centers = _shell(5000, 3, seed=11, radius=0.6)
    cn = CellNeighbours(centers, 5)
    rng = np.random.default_rng(12)
    v = rng.normal(size=(5000, 3))
    x = torch.from_numpy((v / np.linalg.norm(v, axis=1, keepdims=True) * (0.6 + 0.01 * rng.normal(size=(5000, 1))))
                         .astype(np.float32))
    cell = cn._cells(x)
    assert (cn.counts[cell] > 0).float().mean() > 0.95 and cn.counts.max() <= 128
    assert (cn.counts == 0).float().mean() > 0.3  # the inside and the corners of the box: no lists
    _check_knn(cn, centers, torch.cat([x, _queries(3000, 3, cn.resolution)]))
    assert torch.equal(cn.query(x), cn.query(x, lists=True))


def test_k_clipped_and_single_centre():
    centers = _uniform(5, 3, seed=9)
    cn = CellNeighbours(centers, 8, resolution=3)
    assert cn.k == 5
    x = _queries(500, 3, cn.resolution)
    got = cn.query(x)
    assert got.shape == (len(x), 5)
    assert (got.sort(1).values == torch.arange(5)).all()  # every centre, each once
    _check_knn(cn, centers, x, min_untied=0.0)  # k = n: the (k+1)-th does not exist, ties are rare anyway

    one = CellNeighbours(torch.tensor([[0.3, -0.2]]), 4)
    assert one.k == 1
    assert torch.equal(one.query(_queries(100, 2, one.resolution)), torch.zeros(100 + 2000 + 2000 + 4 + 3000, 1,
                                                                               dtype=torch.int64))
    assert one.query(torch.empty(0, 2)).shape == (0, 1)


def test_bad_inputs():
    good = _uniform(50, 3)
    with pytest.raises(ValueError, match="shape"):
        CellNeighbours(good[:, 0], 4)
    with pytest.raises(ValueError, match="shape"):
        CellNeighbours(torch.zeros(10, 4), 4)
    with pytest.raises(ValueError, match="shape"):
        CellNeighbours(torch.zeros(0, 3), 4)
    with pytest.raises(ValueError, match="NaN"):
        CellNeighbours(torch.cat([good, torch.tensor([[float("nan"), 0.0, 0.0]])]), 4)
    with pytest.raises(ValueError, match="k must"):
        CellNeighbours(good, 0)
    with pytest.raises(ValueError, match="resolution"):
        CellNeighbours(good, 4, resolution=0)
    cn = CellNeighbours(good, 4, resolution=4)
    with pytest.raises(ValueError, match="shape"):
        cn.query(torch.zeros(10, 2))
    with pytest.raises(ValueError, match="shape"):
        cn.query(torch.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        cn.query(torch.tensor([[0.0, float("nan"), 0.0]]))
    assert cn.to("cpu") is cn


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    centers = _shell(5000, 3, seed=10)
    cpu = CellNeighbours(centers, 8)
    gpu = CellNeighbours(centers.cuda(), 8)
    assert gpu.lists.is_cuda and torch.equal(gpu.lists.cpu(), cpu.lists)
    x = _queries(20000, 3, cpu.resolution)
    got = gpu.query(x.cuda())
    assert got.is_cuda and got.dtype == torch.int64
    assert (got.cpu() == cpu.query(x)).all(1).float().mean() > 0.999
    moved = CellNeighbours(centers, 8).to("cuda")
    assert torch.equal(moved.query(x.cuda()), got)
    with pytest.raises(ValueError, match="tables are on"):
        moved.query(x)
