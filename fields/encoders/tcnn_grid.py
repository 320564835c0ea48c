"""tcnn_grid.py
============
The multires hash grid through NVIDIA's tiny-cuda-nn (``grid.backend = "tcnn"``), for users whose stack has it:
the same levels, features, resolutions and table size as :class:`fieldstudio.encoders.grid.MultiResGrid`, and the
same output layout (level-major features), so the decoder and the rest of the field do not change.

Install (needs a CUDA GPU and its toolkit)::

    pip install "git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch"

What differs from the built-in grid:

* tiny-cuda-nn takes positions in [0, 1]; the field box [-1, 1] is mapped onto it (outside points are clamped, as
  the built-in grid clamps them).
* Its level scale is a geometric series from ``base_resolution`` by ``per_level_scale``, computed here from
  ``max_resolution`` as the built-in grid computes its resolutions; its hash, its dense/hashed switch and its table
  layout (one flat parameter vector, its own padding) are its own.
* **Checkpoints do not convert** between the backends: a run trained with ``tcnn`` resumes and meshes only with
  ``tcnn``, and the built-in backend refuses its checkpoint (a parameter of another shape), and the other way
  round. Retrain to switch.
* Its outputs are half precision on most GPUs; they are returned as float32.

Not run on this project's machines (no GPU so far): ``tests/test_tcnn.py`` is marked ``gpu`` and skipped without
one, and its CPU test checks only the error a user without tiny-cuda-nn gets.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fieldstudio.errors import FieldStudioError

INSTALL = 'pip install "git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch"'


def available() -> str | None:
    """None when tiny-cuda-nn can run here, else why not (one line for the user)."""
    if not torch.cuda.is_available():
        return "grid.backend = \"tcnn\" needs a CUDA GPU (tiny-cuda-nn has no CPU path); use the default backend"
    try:
        import tinycudann  # noqa: F401
    except ImportError:
        return f"grid.backend = \"tcnn\" needs tiny-cuda-nn: {INSTALL}"
    return None


class TcnnHashGrid(nn.Module):
    """A tiny-cuda-nn ``HashGrid`` encoding with the built-in grid's interface: ``forward(x)`` for x (N, dim) in
    the field box, giving (N, n_levels * n_features) float32."""

    def __init__(self, dim: int, n_levels: int, n_features: int, base_resolution: int, max_resolution: int,
                 log2_hashmap_size: int, seed: int = 0):
        super().__init__()
        why = available()
        if why is not None:
            raise FieldStudioError(why)
        import tinycudann as tcnn

        self.dim, self.n_levels, self.n_features = dim, n_levels, n_features
        self.out_dim = n_levels * n_features
        scale = math.exp(math.log(max_resolution / base_resolution) / max(n_levels - 1, 1))
        self.encoding = tcnn.Encoding(dim, {"otype": "HashGrid", "n_levels": n_levels,
                                            "n_features_per_level": n_features,
                                            "log2_hashmap_size": log2_hashmap_size,
                                            "base_resolution": base_resolution, "per_level_scale": scale},
                                      seed=seed, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = ((x.clamp(-1.0, 1.0) + 1.0) * 0.5).contiguous()
        return self.encoding(u).float()
