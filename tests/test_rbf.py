"""test_rbf.py
===========
Tests of the adaptive RBF encoder (fields/encoders/rbf.py): shapes, budget, weighted k-means, kNN index, kernels,
normalisation, gradients and a small fit.
"""

import math

import numpy as np
import pytest
import torch

from fieldstudio.encoders.rbf import (DEFAULT_MAX_WIDTH, DEFAULT_MIN_WIDTH, KERNEL_IDS, KERNELS, AdaptiveRBF,
                                     rbf_reference)


@pytest.fixture(autouse=True)
def _few_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def _layer(dim, n_rbf, kernel, seed=0, n_points=2000, max_width=None, **kw):
    torch.manual_seed(seed)
    m = AdaptiveRBF(dim, n_rbf, kernel=kernel, **kw)
    pts = np.random.default_rng(seed).uniform(-1, 1, (n_points, dim))
    m.init_from_points(pts, n_iter=3, seed=seed, max_width=max_width)
    return m


def _brute_knn(x, centers, k):
    return torch.cdist(x.double(), centers.double()).topk(k, dim=1, largest=False).indices


# ------------------------------------------------------------------------------------------------ shapes and budget
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("kernel", KERNELS)
def test_output_shapes_and_buffers(dim, kernel):
    m = _layer(dim, 50, kernel, n_features=6, k=5)
    x = torch.rand(33, dim) * 2 - 1
    out = m(x)
    assert out.shape == (33, 6) and out.dtype == torch.float32 and m.out_dim == 6
    assert m.centers.shape == (50, dim)
    assert m.shapes.shape == ((50, 1) if kernel == "nlin_s" else (50, dim, dim))
    assert m.neighbours(x).shape == (33, 5)
    # Buffers are persistent: a checkpoint carries centres, shapes and frequencies.
    assert {"centers", "shapes", "freqs", "features"} <= set(m.state_dict())
    # float64 end to end, and int32 neighbour tables are accepted.
    m64 = m.double()
    out64 = m64(x.double(), m64.neighbours(x).int())
    assert out64.dtype == torch.float64 and out64.shape == (33, 6)


def test_freqs_and_feature_init():
    torch.manual_seed(0)
    m = AdaptiveRBF(3, 100, n_features=4, freq_min=2.0, freq_max=16.0, init_scale=1e-3)
    assert torch.allclose(m.freqs, torch.tensor([2.0, 4.0, 8.0, 16.0]))
    assert m.features.abs().max() <= 1e-3 and m.features.abs().max() > 5e-4
    assert [n for n, _ in m.named_parameters()] == ["features"]


def test_param_count():
    assert AdaptiveRBF.params_per_rbf(3, 16, "nlin_s") == 16 + 3 + 1
    assert AdaptiveRBF.params_per_rbf(3, 16, "ivq_a") == 16 + 3 + 6
    assert AdaptiveRBF.params_per_rbf(2, 32, "gauss_a") == 32 + 2 + 3
    assert AdaptiveRBF(2, 7, n_features=32, kernel="ivq_a").param_count() == 7 * 37
    assert AdaptiveRBF(3, 11, n_features=16).param_count() == 11 * 20
    with pytest.raises(ValueError):
        AdaptiveRBF(3, 10, kernel="ivq_s")


# ------------------------------------------------------------------------------------------------ weighted k-means
def test_weights_pull_centres_into_heavy_blob():
    rng = np.random.default_rng(1)
    a = rng.normal((-0.5, 0.0), 0.1, (1500, 2))
    b = rng.normal((0.5, 0.0), 0.1, (1500, 2))
    far = rng.normal((0.0, 0.8), 0.05, (500, 2))  # zero weight: must attract no centre
    pts = np.concatenate([a, b, far])
    w = np.concatenate([np.full(1500, 10.0), np.ones(1500), np.zeros(500)])
    m = AdaptiveRBF(2, 40, kernel="ivq_a")
    m.init_from_points(pts, w, seed=3)
    c = m.centers.numpy()
    n_heavy, n_light = (c[:, 0] < 0).sum(), ((c[:, 0] > 0) & (c[:, 1] < 0.4)).sum()
    assert (c[:, 1] < 0.5).all(), "a centre landed in the zero-weight blob"
    # k-means puts centre density ~ weight^(d/(d+2)) = 10^0.5 ~ 3.2x; uniform weights would give ~1x.
    assert n_heavy + n_light == 40 and n_heavy >= 2 * n_light, (n_heavy, n_light)

    m.init_from_points(pts, None, seed=3)  # uniform weights now also cover the third blob
    assert (m.centers[:, 1] > 0.5).sum() >= 3


def test_single_centre_is_weighted_mean_and_seed_is_deterministic():
    rng = np.random.default_rng(2)
    pts, w = rng.uniform(-1, 1, (300, 3)), rng.uniform(0, 5, 300)
    m = AdaptiveRBF(3, 1, kernel="gauss_a")
    m.init_from_points(torch.from_numpy(pts), torch.from_numpy(w), n_iter=2)
    assert np.allclose(m.centers.numpy(), (pts * w[:, None]).sum(0) / w.sum(), atol=1e-6)
    assert not np.allclose(m.centers.numpy(), pts.mean(0), atol=1e-3)

    m1, m2 = AdaptiveRBF(3, 20), AdaptiveRBF(3, 20)
    m1.init_from_points(pts, w, seed=5)
    m2.init_from_points(pts, w, seed=5)
    assert torch.equal(m1.centers, m2.centers) and torch.equal(m1.shapes, m2.shapes)


def test_too_few_points_raises():
    m = AdaptiveRBF(2, 10)
    with pytest.raises(ValueError, match="at least n_rbf=10"):
        m.init_from_points(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="at least n_rbf=10"):  # zero weights are dropped before counting
        m.init_from_points(np.random.rand(20, 2), np.r_[np.ones(9), np.zeros(11)])
    with pytest.raises(ValueError):
        m.init_from_points(np.random.rand(20, 3))
    with pytest.raises(ValueError):
        m.init_from_points(np.random.rand(20, 2), -np.ones(20))


def test_shape_init_formulas_and_clamps():
    # One cluster of known spread: per-axis variance v -> nlin kw^2 = 4 * dim * v / alpha, s = 1 / kw.
    rng = np.random.default_rng(4)
    pts = rng.normal(0, 0.02, (4000, 2))
    m = AdaptiveRBF(2, 1, kernel="nlin_s")
    m.init_from_points(pts, alpha=0.5, n_iter=1)
    kw_sq = 4 * ((pts - pts.mean(0)) ** 2).sum(1).mean() / 0.5
    assert math.isclose(1 / m.shapes.item(), math.sqrt(kw_sq), rel_tol=1e-4)

    # Anisotropic, correlated cluster: S = inverse(cov / alpha).
    cov = np.array([[0.004, 0.003], [0.003, 0.004]])
    pts = rng.multivariate_normal([0, 0], cov, 4000)
    m = AdaptiveRBF(2, 1, kernel="ivq_a").double()
    m.init_from_points(pts, alpha=0.5, n_iter=1)
    emp = np.cov(pts.T, bias=True)
    assert np.allclose(m.shapes[0].numpy(), np.linalg.inv(emp / 0.5), rtol=1e-6)

    # A wide blob is clamped to max_width; a planar 3-D cluster still gives SPD S with widths >= min_width.
    m = AdaptiveRBF(2, 1, kernel="ivq_a")
    m.init_from_points(rng.uniform(-1, 1, (500, 2)), n_iter=1)
    assert np.allclose(np.diag(np.linalg.inv(m.shapes[0].double().numpy())), DEFAULT_MAX_WIDTH**2, rtol=1e-4)
    uv = rng.uniform(-1, 1, (3000, 2))
    plane = np.stack([uv[:, 0], uv[:, 1], 0.3 * uv[:, 0] - 0.5 * uv[:, 1]], 1) * 0.5
    for kernel in ("ivq_a", "gauss_a"):
        m = AdaptiveRBF(3, 30, kernel=kernel).double()
        m.init_from_points(plane, n_iter=3)
        S = m.shapes.numpy()
        assert np.allclose(S, S.transpose(0, 2, 1))
        ev = np.linalg.eigvalsh(S)
        assert ev.min() > 0 and ev.max() <= 1 / DEFAULT_MIN_WIDTH**2 * (1 + 1e-6)
        assert ev.max() > 1e3  # thin across the plane, as the cluster spread asks


def test_zero_spread_clusters_get_nearest_centre_width():
    # One point per RBF: every cluster has zero spread -> width = distance to the nearest other centre (clamped),
    # instead of a dead min-width kernel.
    locs = np.array([[-0.5, 0.0], [-0.4, 0.0], [0.0, 0.0], [0.15, 0.0], [0.5, 0.5], [0.9, 0.9], [0.9, 0.9005]])
    for kernel in KERNELS:
        m = AdaptiveRBF(2, 7, kernel=kernel).double()
        m.init_from_points(locs, n_iter=2)
        c = m.centers.numpy()
        assert sorted(map(tuple, c)) == sorted(map(tuple, locs))
        d = np.linalg.norm(c[:, None] - c[None], axis=-1) + np.eye(7) * 9
        width = np.clip(d.min(1), DEFAULT_MIN_WIDTH, DEFAULT_MAX_WIDTH)  # 0.1, 0.1, 0.15, 0.15, 0.2, 1e-3, 1e-3
        if kernel == "nlin_s":
            assert np.allclose(1 / m.shapes[:, 0].numpy(), width)
        else:
            assert np.allclose(m.shapes.numpy(), np.eye(2) / width[:, None, None] ** 2)


# ------------------------------------------------------------------------------------------------ kNN index
@pytest.mark.parametrize("dim,k", [(2, 1), (2, 6), (3, 8), (3, 1)])
def test_neighbours_match_brute_force(dim, k):
    m = _layer(dim, 300, "nlin_s", k=k).double()
    x = torch.rand(1000, dim, dtype=torch.float64) * 4 - 2  # half the queries lie outside [-1, 1]^dim
    idx = m.neighbours(x)
    assert idx.dtype == torch.int64 and idx.shape == (1000, k)
    assert torch.equal(idx, _brute_knn(x, m.centers, k))
    # float32 queries: same sets (ties are measure-zero with random data)
    assert torch.equal(m.float().neighbours(x.float()), _brute_knn(x.float(), m.centers, k))


def test_k_is_clipped_to_n_rbf():
    m = _layer(2, 3, "ivq_a", k=8)
    x = torch.rand(10, 2)
    assert m.neighbours(x).shape == (10, 3) and m(x).shape == (10, 16)


def test_index_follows_centres_and_state_dict():
    a, b = _layer(3, 200, "ivq_a", seed=0), _layer(3, 200, "ivq_a", seed=1)
    assert not torch.equal(a.centers, b.centers)
    x = torch.rand(500, 3) * 2 - 1
    b.neighbours(x)  # build b's cached index on its old centres
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.neighbours(x), a.neighbours(x))
    assert torch.equal(b(x), a(x))

    fresh = AdaptiveRBF(3, 200, kernel="ivq_a")
    fresh.neighbours(x)  # index over the placeholder grid
    fresh.load_state_dict(a.state_dict())
    assert torch.equal(fresh(x), a(x))

    for m in (b, b.double()):  # in-place edits are noticed too (float64 CPU centres alias their numpy view)
        xm = x.to(m.centers.dtype)
        m.neighbours(xm)
        with torch.no_grad():
            m.centers.mul_(0.5).add_(torch.rand_like(m.centers) * 0.1)
        assert torch.equal(m.neighbours(xm), _brute_knn(xm, m.centers, m.k))


# ------------------------------------------------------------------------------------------------ kernels, normalisation
def test_kernel_ids_name_every_kernel_and_match_the_config():
    from fieldstudio.config import RBF_KERNELS

    assert tuple(KERNEL_IDS) == KERNELS == RBF_KERNELS
    assert sorted(KERNEL_IDS.values()) == list(range(len(KERNELS)))  # the Kernel enum of cuda/common.h


def test_nlin_tent_values():
    m = AdaptiveRBF(3, 3, kernel="nlin_s", normalize=False).double()
    with torch.no_grad():
        m.centers.copy_(torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.9, 0.9], [-0.9, 0.5, 0.0]]))
        m.shapes.copy_(torch.tensor([[4.0], [1.0], [2.0]]))  # support radii 0.25, 1, 0.5
    x = torch.tensor([[0.0, 0.0, 0.0], [0.125, 0.0, 0.0], [0.1, 0.1, 0.0], [0.26, 0.0, 0.0], [0.0, -0.3, 0.0]],
                     dtype=torch.float64)
    idx = torch.zeros(5, 1, dtype=torch.long)
    phi = m.phi(x, idx)[:, 0]
    assert torch.allclose(phi, torch.tensor([1.0, 0.5, 0.6 * 0.6, 0.0, 0.0], dtype=torch.float64))
    assert m.phi(x[:1])[0, 0] == 1.0  # the query at a centre: its nearest neighbour has phi = 1


@pytest.mark.parametrize("kernel", ["ivq_a", "gauss_a"])
def test_anisotropic_kernel_values(kernel):
    m = AdaptiveRBF(2, 1, kernel=kernel, normalize=False).double()
    S = torch.tensor([[40.0, 10.0], [10.0, 20.0]], dtype=torch.float64)
    with torch.no_grad():
        m.centers.copy_(torch.tensor([[0.1, -0.2]]))
        m.shapes.copy_(S[None])
    x = torch.rand(20, 2, dtype=torch.float64)
    d = x - m.centers
    q = ((d @ S) * d).sum(1)
    want = 1 / (1 + q) if kernel == "ivq_a" else torch.exp(-0.5 * q)
    assert torch.allclose(m.phi(x)[:, 0], want)


@pytest.mark.parametrize("kernel", KERNELS)
def test_normalised_weights_sum_to_one(kernel):
    # 100 RBFs in a cube: spacing ~0.43, so lift the 0.2 width cap or the nlin tents leave gaps.
    m = _layer(3, 100, kernel, k=8, max_width=1.0).double()
    x = torch.rand(200, 3, dtype=torch.float64) * 1.6 - 0.8
    phi = m.phi(x)
    covered = phi.sum(1) > 0.5  # nlin tents can leave a query uncovered (all phi = 0)
    assert covered.float().mean() > 0.95
    assert torch.allclose(phi.sum(1)[covered], torch.ones(int(covered.sum()), dtype=torch.float64), atol=1e-6)
    # The output reveals it: one channel, constant features, tiny frequency -> out ~ freq * sum(phi) = freq.
    f = 1e-4
    m1 = AdaptiveRBF(3, 100, n_features=1, kernel=kernel, freq_min=f, freq_max=f).double()
    m1.load_state_dict({**m.state_dict(), "features": torch.ones(100, 1), "freqs": torch.tensor([f])})
    out = m1(x)[:, 0] / f
    assert torch.allclose(out[covered], torch.ones(int(covered.sum()), dtype=torch.float64), atol=1e-6)
    m.normalize = False
    assert not torch.allclose(m.phi(x).sum(1), torch.ones(200, dtype=torch.float64), atol=1e-2)


def test_normalisation_denominator_is_detached():
    # sum(phi) == 1 in value, so a non-detached denominator would give d(sum phi)/dx == 0; the detached one does not.
    m = _layer(2, 60, "gauss_a", k=6).double()
    x = (torch.rand(50, 2, dtype=torch.float64) - 0.5).requires_grad_(True)
    idx = m.neighbours(x)
    (g,) = torch.autograd.grad(m.phi(x, idx).sum(), x)
    m.normalize = False
    p_raw = m.phi(x, idx)
    (g_nodetach,) = torch.autograd.grad((p_raw / p_raw.sum(1, keepdim=True)).sum(), x, retain_graph=True)
    (g_detach,) = torch.autograd.grad((p_raw / p_raw.sum(1, keepdim=True).detach()).sum(), x)
    assert g_nodetach.abs().max() < 1e-10
    assert g.abs().max() > 1e-2
    assert torch.allclose(g, g_detach, atol=1e-8)


# ------------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("kernel", ["ivq_a", "gauss_a"])
@pytest.mark.parametrize("dim", [2, 3])
def test_gradcheck_features_and_x(kernel, dim):
    m = _layer(dim, 12, kernel, n_points=200, n_features=3, k=4).double()
    x = (torch.rand(6, dim, dtype=torch.float64) * 1.6 - 0.8).requires_grad_(True)
    idx = m.neighbours(x)
    w = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)

    def f(x_, w_, normalize):
        return rbf_reference(x_, idx, m.centers, m.shapes, w_, m.freqs, kernel, normalize)

    # Without normalisation the analytic gradient is the true one, w.r.t. x (twice, for eikonal terms) and features.
    assert torch.autograd.gradcheck(lambda a, b: f(a, b, False), (x, w))
    assert torch.autograd.gradgradcheck(lambda a, b: f(a, b, False), (x, w))
    # With it, the detached denominator is by design not differentiated: exact for features, not for x.
    assert torch.autograd.gradcheck(lambda b: f(x.detach(), b, True), (w,))
    assert not torch.autograd.gradcheck(lambda a: f(a, w.detach(), True), (x,), raise_exception=False)


def test_gradcheck_nlin_away_from_kinks():
    m = _layer(3, 20, "nlin_s", n_points=300, n_features=3, k=4, max_width=1.0).double()
    x = torch.rand(200, 3, dtype=torch.float64) * 1.6 - 0.8
    idx = m.neighbours(x)
    t = 1 - (x[:, None] - m.centers[idx]).abs() * m.shapes[idx]  # tent factors; kinks at 0 (support) and 1 (centre)
    ok = ((t.abs() > 1e-3) & ((t - 1).abs() > 1e-3)).all(-1).all(-1) & (t > 0).all(-1).any(-1)
    assert ok.sum() >= 5
    x, idx = x[ok][:8].clone().requires_grad_(True), idx[ok][:8]
    w = torch.randn(20, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x_, w_: rbf_reference(x_, idx, m.centers, m.shapes, w_, m.freqs, "nlin_s", False), (x, w))


def test_gradients_reach_features_and_x():
    m = _layer(3, 50, "nlin_s")
    x = (torch.rand(64, 3) * 1.6 - 0.8).requires_grad_(True)
    m(x).square().sum().backward()
    assert m.features.grad is not None and m.features.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert m.centers.grad is None and not m.centers.requires_grad


# ------------------------------------------------------------------------------------------------ fitting sanity
def test_fit_smooth_2d_function():
    torch.manual_seed(0)
    g = torch.linspace(-1, 1, 32)
    x = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    y = torch.sin(3 * x[:, 0]) * torch.cos(2 * x[:, 1]) + 0.5 * x[:, 0] ** 2
    m = AdaptiveRBF(2, 150, n_features=8, k=4, kernel="ivq_a")
    m.init_from_points(x, seed=0)
    head = torch.nn.Linear(8, 1)
    idx = m.neighbours(x)
    opt = torch.optim.Adam([*m.parameters(), *head.parameters()], lr=2e-2)

    def mse():
        return (head(m(x, idx))[:, 0] - y).square().mean()

    start = mse().item()
    for _ in range(120):  # ~150x lower MSE in practice; 10x leaves a wide margin
        opt.zero_grad()
        loss = mse()
        loss.backward()
        opt.step()
    end = mse().item()
    assert end < start / 10, (start, end)
