"""Tests for fields/encoders/fourier.py (FourierFeatures)."""

import math

import pytest
import torch

from fieldstudio.encoders.fourier import FourierFeatures


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("include_input", [True, False])
def test_shapes_and_layout(dim, include_input):
    enc = FourierFeatures(dim, n_frequencies=16, sigma=3.0, include_input=include_input)
    assert enc.out_dim == 32 + (dim if include_input else 0)
    x = torch.rand(9, dim) * 2 - 1
    y = enc(x)
    assert y.shape == (9, enc.out_dim) and y.dtype == torch.float32
    k = dim if include_input else 0
    if include_input:
        torch.testing.assert_close(y[:, :dim], x, rtol=0, atol=0)
    proj = 2 * math.pi * x.double() @ enc.B.double()
    torch.testing.assert_close(y[:, k:k + 16].double(), torch.sin(proj), rtol=0, atol=1e-4)
    torch.testing.assert_close(y[:, k + 16:].double(), torch.cos(proj), rtol=0, atol=1e-4)
    assert enc(x.double()).dtype == torch.float64


def test_sin_cos_bounded():
    enc = FourierFeatures(3, n_frequencies=64, sigma=10.0)
    y = enc(torch.rand(200, 3) * 4 - 2)
    sc = y[:, 3:]
    assert sc.abs().max() <= 1.0
    torch.testing.assert_close(sc[:, :64] ** 2 + sc[:, 64:] ** 2, torch.ones(200, 64))
    assert sc.abs().max() > 0.9  # not degenerate


def test_seed_determinism_and_global_rng_untouched():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = FourierFeatures(2, n_frequencies=32, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)
    b = FourierFeatures(2, n_frequencies=32, seed=7)
    c = FourierFeatures(2, n_frequencies=32, seed=8)
    x = torch.rand(5, 2)
    assert torch.equal(a.B, b.B) and torch.equal(a(x), b(x))
    assert not torch.allclose(a.B, c.B) and not torch.allclose(a(x), c(x))


def test_B_statistics_and_params():
    enc = FourierFeatures(2, n_frequencies=4096, sigma=10.0)
    assert enc.B.shape == (2, 4096)
    assert abs(enc.B.std().item() - 10.0) < 0.5 and abs(enc.B.mean().item()) < 0.5
    assert enc.param_count() == FourierFeatures.count_params(2, 4096) == 0
    assert sum(p.numel() for p in enc.parameters()) == 0
    assert "B" in enc.state_dict()


def test_gradient_wrt_x():
    enc = FourierFeatures(3, n_frequencies=8, sigma=2.0).double()
    x = (torch.rand(4, 3, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    assert torch.autograd.gradcheck(enc, (x,))
