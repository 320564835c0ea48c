"""fourier.py
==========
Random Fourier-feature encoder (Tancik et al. 2020), the baseline input encoding for a plain MLP field.

``gamma(x) = [x, sin(2 pi x B), cos(2 pi x B)]`` with a fixed Gaussian matrix ``B ~ N(0, sigma^2)`` of shape
``(dim, n_frequencies)``. ``x`` is in the normalised field box ``[-1, 1]^dim`` (nothing is clamped; the encoding is
defined everywhere). ``B`` is drawn from its own ``torch.Generator`` seeded with ``seed``, so the encoding depends
only on the constructor arguments, never on the global RNG. It is a saved buffer, not a parameter: a checkpoint
restores the exact ``B`` it was trained with.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FourierFeatures", "LearnedFrequencyPE"]


class FourierFeatures(nn.Module):
    """Fixed random Fourier features ``[x, sin(2 pi x B), cos(2 pi x B)]``.

    Parameters
    ----------
    dim : int
        Input dimension (2 for images, 3 for SDFs).
    n_frequencies : int
        Number of random frequencies (columns of ``B``).
    sigma : float
        Standard deviation of the entries of ``B``, in cycles per unit of ``x`` (the box ``[-1, 1]`` spans 2 units).
    include_input : bool
        Prepend ``x`` itself to the features.
    seed : int
        Seed of the generator that draws ``B``.

    Attributes
    ----------
    out_dim : int
        ``2 * n_frequencies + (dim if include_input else 0)``.
    B : (dim, n_frequencies) float32 buffer
    """

    def __init__(
        self, dim: int, n_frequencies: int = 128, sigma: float = 10.0, include_input: bool = True, seed: int = 0
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if n_frequencies < 1:
            raise ValueError(f"n_frequencies must be >= 1, got {n_frequencies}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.dim = dim
        self.n_frequencies = n_frequencies
        self.sigma = float(sigma)
        self.include_input = include_input
        self.seed = seed
        self.out_dim = 2 * n_frequencies + (dim if include_input else 0)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.register_buffer("B", torch.randn(dim, n_frequencies, generator=gen) * self.sigma)

    def param_count(self) -> int:
        """Trainable scalars: 0 (``B`` is fixed)."""
        return 0

    @staticmethod
    def count_params(
        dim: int, n_frequencies: int = 128, sigma: float = 10.0, include_input: bool = True, seed: int = 0
    ) -> int:
        """``param_count()`` of an encoder built with these arguments: always 0."""
        return 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode points.

        Parameters
        ----------
        x : (N, dim) float
            Points in the normalised field box.

        Returns
        -------
        (N, out_dim) float, dtype of ``x``
            ``[x (dim, if include_input), sin(2 pi x B) (n_frequencies), cos(2 pi x B) (n_frequencies)]``.
        """
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected x of shape (N, {self.dim}), got {tuple(x.shape)}")
        proj = (2.0 * math.pi) * (x @ self.B.to(x.dtype))  # (N, n_frequencies)
        parts = [x] if self.include_input else []
        parts += [torch.sin(proj), torch.cos(proj)]
        return torch.cat(parts, dim=-1)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, n_frequencies={self.n_frequencies}, sigma={self.sigma}, "
            f"include_input={self.include_input}, seed={self.seed}"
        )


class LearnedFrequencyPE(nn.Module):
    """OReX's positional encoding ``[x, cos(x * f_c), sin(x * f_s)]`` with trainable frequency vectors.

    ``f_c`` and ``f_s`` start at 2^0 .. 2^(n-1) (no pi factor, as in OReX) and are learned; each multiplies every
    coordinate, so ``out_dim = dim + 2 * dim * n_frequencies`` (33 for 3-D and 5 frequencies).
    """

    def __init__(self, dim: int, n_frequencies: int = 5) -> None:
        super().__init__()
        start = torch.exp2(torch.arange(n_frequencies, dtype=torch.float32))
        self.f_cos = nn.Parameter(start.clone())
        self.f_sin = nn.Parameter(start.clone())
        self.dim = dim
        self.out_dim = dim + 2 * dim * n_frequencies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, dim) -> (N, out_dim)."""
        xc = x[:, :, None] * self.f_cos.to(x.dtype)
        xs = x[:, :, None] * self.f_sin.to(x.dtype)
        return torch.cat([x, torch.cos(xc).flatten(1), torch.sin(xs).flatten(1)], dim=1)

    def param_count(self) -> int:
        return self.f_cos.numel() + self.f_sin.numel()
