"""field.py
========
A neural field = encoders (grid, adaptive RBF, Fourier features) -> concatenation (+ learned bias) -> MLP decoder.

``preset`` gives each field kind its task defaults, ``resolve_budget`` turns a parameter budget into concrete
sizes (``n_rbf="auto"`` as NeuRBF does it), and ``Field`` builds the modules from a resolved config.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn.utils import skip_init

from fieldstudio.config import FieldConfig
from fieldstudio.encoders.fourier import FourierFeatures, LearnedFrequencyPE
from fieldstudio.encoders.grid import MultiResGrid
from fieldstudio.encoders.rbf import AdaptiveRBF
from fieldstudio.errors import FieldStudioError


def preset(kind: str, task: str = "sdf", params: int | None = None, dim: int = 3, out_dim: int = 1) -> FieldConfig:
    """Default field config of ``kind`` for ``task`` (values from the NeuRBF paper/code where they exist)."""
    cfg = FieldConfig(kind=kind, dim=dim, out_dim=out_dim, params=params)
    if task == "sdf":
        # NeuRBF SDF: 16-level 1-channel hash grid, 16-d nlin_s RBF features, K=8, m 2^0..2^3, m0 30..300.
        cfg.grid.n_features = 1 if kind == "hybrid" else 2
        cfg.grid.log2_hashmap_size = 15
        cfg.rbf.kernel, cfg.rbf.n_features, cfg.rbf.k = "nlin_s", 16, 8
        cfg.rbf.freq_min, cfg.rbf.freq_max = 1.0, 8.0
        cfg.decoder.sine_freq_min, cfg.decoder.sine_freq_max = 30.0, 300.0
    if task == "slices":
        # Between sparse planes only smooth encoders interpolate: fine hash levels and narrow RBFs get no signal
        # there. On a 12-plane torus (600 steps, 40k parameters) a 4..2048 hybrid reached IoU 0.37; this 4..16 dense
        # grid with RBF widths up to 0.5 reaches 0.893 / 0.815 (layout seeds 0 / 1), the Fourier MLP 0.909 / 0.826.
        cfg.grid.n_features, cfg.grid.n_levels = 2, 4
        cfg.grid.base_resolution, cfg.grid.max_resolution = 4, 16
        cfg.rbf.max_width = 0.5
        # The MLP's Fourier bandwidth follows the plane spacing (fields/tasks/slices.py: fourier_sigma).
        cfg.fourier.sigma = "auto"
    if task == "image":
        # NeuRBF's image model (configs/img.py): a 2-level dense grid of 2 features (16 cells and max(H, W) / 2;
        # fieldstudio.tasks.image.tune_field sizes the fine level from the picture and the budget), ivq_a RBFs
        # with 32 features, K = 4, frequencies 2^-3..2^12, a 64-wide decoder with sine composition (m0 10..100 as
        # configs/img.py; the paper's 1..1000 left noise everywhere at CPU step counts: analytic 128 x 96 picture,
        # 600 steps, 43.2 dB against 46.8). The grid-only baseline is Instant-NGP's grid up to the picture's size.
        if kind == "hybrid":
            cfg.grid.n_levels, cfg.grid.n_features, cfg.grid.base_resolution = 2, 2, 16
            cfg.grid.log2_hashmap_size = 24
        cfg.rbf.kernel, cfg.rbf.n_features, cfg.rbf.k = "ivq_a", 32, 4
        cfg.rbf.freq_min, cfg.rbf.freq_max = 2.0**-3, 2.0**12
        cfg.decoder.sine_freq_min, cfg.decoder.sine_freq_max = 10.0, 100.0
    if task == "nerf":
        # Density and RGB from one decoder (out_dim 4), view-independent. The hybrid: a 16-level hash grid of 2
        # features as Instant-NGP's NeRF, RBFs as NeuRBF's NeRF-synthetic model (ivq_a, 32 features, K = 5, no sine
        # composition there: all frequencies 1, so sin(phi) ~ phi), placed from the density after a grid-only
        # warm-up (fieldstudio.tasks.nerf).
        cfg.grid.n_levels, cfg.grid.n_features, cfg.grid.base_resolution, cfg.grid.max_resolution = 16, 2, 16, 1024
        cfg.rbf.kernel, cfg.rbf.n_features, cfg.rbf.k = "ivq_a", 32, 5
        cfg.rbf.freq_min = cfg.rbf.freq_max = 1.0
        cfg.rbf.max_width = 0.2
        if kind in ("voxels", "hybrid"):
            # Plenoxels-like: density + RGB voxels at three resolutions, summed (no decoder). The hybrid adds
            # adaptive RBFs of out_dim features each to the sum (grid + RBF with a linear decoder): on a CPU an MLP
            # per sample costs what thousands of voxel steps gain (synthetic scene, 150 steps: voxels 31.6 dB,
            # hash grid + MLP 22.8, MLP hybrid 20.6).
            cfg.grid.n_levels, cfg.grid.n_features, cfg.grid.base_resolution = 3, out_dim, 32
            cfg.grid.max_resolution, cfg.grid.log2_hashmap_size = 128, 24
            cfg.rbf.n_features = out_dim
            cfg.decoder.kind = "sum"
            # Summed straight into density and colour, an RBF must fade out: Gaussians, not normalised (normalised
            # weights give the K nearest full weight even far from all of them: haze in empty space).
            cfg.rbf.kernel, cfg.rbf.normalize = "gauss_a", False
    # NeuRBF composes sin(h * m0) after the first decoder layer (Eq. 7) over 20k GPU steps. Shapes drop it: at CPU
    # budgets (~1.4k steps in 90 s) it costs (bunny, 450k params, 90 s: NAE 3.11 deg / Chamfer 5.0e-5 without,
    # 3.33 / 7.4e-5 with m0 3..30, 3.6-4.0 deg plus hundreds of floaters with 30..300; docs/benchmarks.md).
    # Cross-sections follow suit (not measured separately). The baselines keep their authors' ReLU MLPs.
    if task in ("sdf", "slices", "nerf") or kind in ("grid", "mlp"):
        cfg.decoder.sine = False
    if kind == "mlp":
        cfg.decoder.n_hidden_layers = 3
        cfg.decoder.hidden = 256
    return cfg


def tune_training(kind: str, train, task: str = "sdf") -> None:
    """Training settings a field kind needs for a task (OReX: Adam lr 1e-2 on everything, weight decay 1e-3;
    images: NeuRBF's lr 5e-3 for the encoders and 1e-2 for the decoder, cosine decay to a hundredth, smaller
    batches; the Fourier MLP at Adam's usual 1e-3)."""
    if task == "image":
        # Batches of 4,096 pixels: on a CPU more steps beat larger batches (kodim05, 20 s on one thread beside other
        # work: hybrid 24.8 dB at 16,384 against 26.6 at 4,096; grid-only 27.6 against 28.1).
        train.lr, train.lr_decoder, train.lr_final_ratio, train.batch_size = 5e-3, 1e-2, 0.01, 4096
        if kind == "mlp":
            train.lr = train.lr_decoder = 1e-3
    if task == "nerf":
        # Instant-NGP's NeRF: lr 1e-2 for the grid, rays in batches (fieldstudio.tasks.nerf caps the samples).
        train.lr, train.lr_decoder, train.lr_final_ratio, train.batch_size = 1e-2, 1e-2, 0.05, 4096
        if kind == "voxels":
            train.lr = 5e-2  # no decoder between the voxels and the colours: larger steps (measured on lego)
        if kind == "mlp":
            train.lr = train.lr_decoder = 1e-3
    if task == "sdf" and kind == "hybrid":
        # Half NeuRBF's batch, twice the steps in the same time on a CPU: lower NAE on all four benchmark meshes
        # (docs/benchmarks.md, session 16; given distances were not measured with it).
        train.batch_size = 8192
    if kind == "orex":
        train.lr = train.lr_decoder = 1e-2
        train.weight_decay = 1e-3


def decoder_params(in_dim: int, hidden: int, n_hidden_layers: int, out_dim: int) -> int:
    """Parameter count of the MLP decoder (weights + biases)."""
    n = in_dim * hidden + hidden
    n += (n_hidden_layers - 1) * (hidden * hidden + hidden)
    return n + hidden * out_dim + out_dim


def _grid_params(cfg: FieldConfig) -> int:
    g = cfg.grid
    return MultiResGrid.count_params(cfg.dim, g.n_levels, g.n_features, g.base_resolution,
                                     g.max_resolution, g.log2_hashmap_size)


def _encoder_width(cfg: FieldConfig) -> int:
    width = 0
    if cfg.kind in ("hybrid", "grid", "voxels"):
        width += cfg.grid.n_levels * cfg.grid.n_features
    if cfg.kind in ("hybrid", "neurbf"):
        width += cfg.rbf.n_features
    if cfg.kind == "mlp":
        width += 2 * cfg.fourier.n_frequencies + cfg.dim
    if cfg.kind == "orex":
        width += cfg.dim + 2 * cfg.dim * cfg.orex.n_frequencies
    return width


def count_params(cfg: FieldConfig) -> int:
    """Total parameters of a resolved config (frozen RBF centres and shapes included)."""
    if cfg.kind == "orex":
        o = cfg.orex
        n_in, n_out = _encoder_width(cfg) + 1 + o.state, 1 + o.state
        mlp = decoder_params(n_in, o.hidden, o.n_layers, n_out)
        return mlp + 2 * o.n_frequencies + 1 + o.state  # + learned frequencies, initial logit and state
    if cfg.kind == "voxels":
        return _grid_params(cfg)
    if cfg.decoder.kind == "sum":
        n = 0
    else:
        n = decoder_params(_encoder_width(cfg), cfg.decoder.hidden, cfg.decoder.n_hidden_layers, cfg.out_dim)
    if cfg.kind in ("hybrid", "grid"):
        n += _grid_params(cfg)
    if cfg.kind in ("hybrid", "neurbf"):
        n += _encoder_width(cfg)  # learned bias after concatenation
        n += cfg.rbf.n_rbf * AdaptiveRBF.params_per_rbf(cfg.dim, cfg.rbf.n_features, cfg.rbf.kernel)
    return n


def resolve_budget(cfg: FieldConfig) -> FieldConfig:
    """Return a copy with every size concrete, filling ``cfg.params`` when it is set.

    hybrid: the hash grid takes the largest table within 55 % of the budget and the RBFs fill the rest
    (NeuRBF's SDF models put 55 % in the grid: 245,640 of 448,489 and 472,040 of 856,009). grid: the largest (table size, levels) that fits. mlp: the hidden width
    that fits. neurbf: RBFs fill everything but the decoder.
    """
    cfg = copy.deepcopy(cfg)
    budget = cfg.params
    if cfg.kind == "orex":  # OReX's network has one published size (31,436 parameters)
        cfg.params = None
        return cfg
    if budget is None:
        if cfg.kind in ("hybrid", "neurbf") and cfg.rbf.n_rbf == "auto":
            raise FieldStudioError('rbf.n_rbf is "auto" but no parameter budget is set; give --params N')
        return cfg
    if cfg.kind in ("hybrid", "neurbf"):
        cfg.rbf.n_rbf = 0
    if cfg.kind in ("voxels", "hybrid") and cfg.decoder.kind == "sum":
        # Voxels: the finest resolution that fits, the coarser levels halving it (dense tables: log2 size 24). The
        # summed hybrid keeps RBF_SUM_SHARE of the budget for its RBFs.
        g = cfg.grid
        g.log2_hashmap_size = 24
        share = 1.0 if cfg.kind == "voxels" else 1.0 - RBF_SUM_SHARE
        for res in range(512, 3, -1):
            g.max_resolution, g.base_resolution = res, max(1, res >> (g.n_levels - 1))
            if _grid_params(cfg) <= share * budget:
                break
    elif cfg.kind == "hybrid":
        for log2 in range(24, 7, -1):
            cfg.grid.log2_hashmap_size = log2
            if _grid_params(cfg) <= 0.55 * budget:
                break
    elif cfg.kind == "grid":
        # Instant-NGP's channel count stays; table sizes come in powers of two, so the level count (same finest
        # resolution) fills the gap between them.
        best = None
        for log2 in range(8, 25):
            for n_levels in range(4, 17):
                cfg.grid.log2_hashmap_size, cfg.grid.n_levels = log2, n_levels
                n = count_params(cfg)
                if n <= budget and (best is None or n > best[0]):
                    best = (n, log2, n_levels)
        if best is None:
            raise FieldStudioError(f"a grid field needs more than {budget} parameters; raise --params")
        _, cfg.grid.log2_hashmap_size, cfg.grid.n_levels = best
    elif cfg.kind == "mlp":
        # in*W + W + (L-1)(W^2 + W) + W*out + out = budget, solved for W.
        d = cfg.decoder
        a = d.n_hidden_layers - 1
        b = _encoder_width(cfg) + 1 + a + cfg.out_dim
        c = cfg.out_dim - budget
        width = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a) if a else -c / b
        d.hidden = max(8, int(width))
    if cfg.kind in ("hybrid", "neurbf"):
        rest = budget - count_params(cfg)
        per = AdaptiveRBF.params_per_rbf(cfg.dim, cfg.rbf.n_features, cfg.rbf.kernel)
        cfg.rbf.n_rbf = rest // per
        if cfg.rbf.n_rbf < 16:
            raise FieldStudioError(
                f"a budget of {budget} parameters leaves room for only {max(cfg.rbf.n_rbf, 0)} RBFs; raise --params"
            )
    return cfg


RBF_SUM_SHARE = 0.1  # of a summed hybrid's budget (NeRF): ~60k RBFs of 4 features in 10M parameters

ENCODER_INIT_SCALE = 1e-4  # grid embeddings and RBF features start at U(-1e-4, 1e-4) (Instant-NGP, NeuRBF)


def _seeded_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """torch's default Linear initialisation (U(+-1/sqrt(fan_in)) for weight and bias), from ``generator``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)


class Decoder(nn.Module):
    """MLP: Linear -> (h + sin(h*m0) | ReLU) -> [Linear -> ReLU]* -> Linear (no output activation)."""

    def __init__(self, in_dim: int, hidden: int, n_hidden_layers: int, out_dim: int,
                 sine: bool, sine_freq_min: float, sine_freq_max: float, generator: torch.Generator | None = None):
        super().__init__()
        dims = [in_dim] + [hidden] * n_hidden_layers + [out_dim]
        # skip_init + our own generator: torch's default Linear init, without drawing from its global RNG.
        self.layers = nn.ModuleList(skip_init(nn.Linear, a, b) for a, b in zip(dims[:-1], dims[1:]))
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        for layer in self.layers:
            _seeded_linear(layer, generator)
        self.sine = sine
        m0 = torch.exp2(torch.linspace(math.log2(sine_freq_min), math.log2(sine_freq_max), hidden))
        self.register_buffer("m0", m0, persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.layers[0](h)
        # NeuRBF Eq. 7: sinusoidal composition on the first layer's output, no ReLU there.
        h = h + torch.sin(h * self.m0) if self.sine else torch.relu(h)
        for layer in self.layers[1:-1]:
            h = torch.relu(layer(h))
        return self.layers[-1](h)


class BlockSum(nn.Module):
    """The "decoder" of voxel fields and summed hybrids: the sum of the encoders' blocks of ``out_dim`` features
    (grid levels: coarse levels carry what fine ones have not learnt yet, as coarse-to-fine voxel training does;
    RBFs: detail on top). No parameters."""

    def __init__(self, out_dim: int):
        super().__init__()
        self.out_dim = out_dim

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.view(len(h), -1, self.out_dim).sum(1)


class IterativeDecoder(nn.Module):
    """OReX's weight-tied recurrence: ``l_{i+1} = l_i + r_i`` with ``(r_i, h_{i+1}) = MLP([gamma(x), l_i, h_i + e_i])``.

    ``e_i`` is a fixed sin/cos code of the iteration index (16 octaves). Returns every iteration's logit, so the
    loss can supervise all of them (deep supervision); inference uses the last.
    """

    def __init__(self, in_dim: int, hidden: int, n_layers: int, state: int, iterations: int,
                 generator: torch.Generator | None = None):
        super().__init__()
        dims = [in_dim + 1 + state] + [hidden] * n_layers + [1 + state]
        self.layers = nn.ModuleList(skip_init(nn.Linear, a, b) for a, b in zip(dims[:-1], dims[1:]))
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        with torch.no_grad():
            for layer in self.layers:  # OReX: Xavier-uniform weights, biases U(0, 1)
                nn.init.xavier_uniform_(layer.weight, generator=generator)
                layer.bias.uniform_(0.0, 1.0, generator=generator)
        self.logit0 = nn.Parameter(torch.rand(1, generator=generator))
        self.state0 = nn.Parameter(torch.rand(state, generator=generator))
        octaves = torch.exp2(torch.arange(state // 2, dtype=torch.float32))
        steps = torch.arange(iterations, dtype=torch.float32)[:, None] * octaves
        self.register_buffer("iteration_code", torch.cat([torch.sin(steps), torch.cos(steps)], 1), persistent=False)

    def forward_all(self, enc: torch.Tensor) -> list[torch.Tensor]:
        n = enc.shape[0]
        logit = self.logit0.expand(n, 1)
        state = self.state0.expand(n, -1)
        outs = []
        for code in self.iteration_code:
            h = torch.cat([enc, logit, state + code], dim=1)
            for layer in self.layers[:-1]:
                h = torch.nn.functional.leaky_relu(layer(h), 0.01)
            out = self.layers[-1](h)
            logit, state = logit + out[:, :1], out[:, 1:]
            outs.append(logit)
        return outs


class Field(nn.Module):
    """A neural field over the normalised box [-1, 1]^dim.

    forward(x: (N, dim) float, rbf_idx: (N, K) long | None) -> (N, out_dim)

    Every random initial value is drawn from a generator seeded with ``seed`` (torch's global RNG is never used),
    so two fields built with one seed are equal whatever else runs in the process.
    """

    def __init__(self, cfg: FieldConfig, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        if cfg.kind in ("hybrid", "neurbf") and not isinstance(cfg.rbf.n_rbf, int):
            raise ValueError("Field needs a resolved config; call resolve_budget first")
        self.cfg = cfg
        self.grid = self.rbf = self.fourier = None
        if cfg.kind in ("hybrid", "grid", "voxels"):
            g = cfg.grid
            if g.backend == "tcnn":  # tiny-cuda-nn's hash grid (GPU only; FieldStudioError when unavailable)
                from fieldstudio.encoders.tcnn_grid import TcnnHashGrid

                self.grid = TcnnHashGrid(cfg.dim, g.n_levels, g.n_features, g.base_resolution, g.max_resolution,
                                         g.log2_hashmap_size, seed=seed)
            else:
                self.grid = MultiResGrid(cfg.dim, g.n_levels, g.n_features, g.base_resolution,
                                         g.max_resolution, g.log2_hashmap_size, init_scale=ENCODER_INIT_SCALE,
                                         generator=generator)
        if cfg.kind in ("hybrid", "neurbf"):
            r = cfg.rbf
            self.rbf = AdaptiveRBF(cfg.dim, r.n_rbf, r.n_features, r.k, r.kernel,
                                   r.freq_min, r.freq_max, r.normalize, init_scale=ENCODER_INIT_SCALE,
                                   generator=generator)
        if cfg.kind == "mlp":
            if cfg.fourier.sigma == "auto":
                raise FieldStudioError('fourier.sigma is "auto": a run sets it from its data (fieldstudio.run); give a '
                                       "number to build a field directly")
            self.fourier = FourierFeatures(cfg.dim, cfg.fourier.n_frequencies, cfg.fourier.sigma, seed=seed)
        if cfg.kind == "orex":
            self.fourier = LearnedFrequencyPE(cfg.dim, cfg.orex.n_frequencies)
        width = _encoder_width(cfg)
        # NeuRBF's learnable bias (lcb0) on the concatenated features; there is no bias inside the RBF sine.
        self.bias = None
        if self.rbf is not None:
            self.bias = nn.Parameter(torch.empty(width).uniform_(-1e-4, 1e-4, generator=generator))
        d, o = cfg.decoder, cfg.orex
        # False: the RBF branch gives zeros (NeRF trains grid-only until its RBFs are placed from the density).
        self.rbf_active = True
        if cfg.kind == "voxels" or cfg.decoder.kind == "sum":
            blocks = ([cfg.grid.n_features] if self.grid is not None else []) + \
                ([cfg.rbf.n_features] if self.rbf is not None else [])
            if self.fourier is not None or any(b != cfg.out_dim for b in blocks):
                raise FieldStudioError(f"decoder.kind = \"sum\" adds the encoders' features: grid.n_features and "
                                       f"rbf.n_features must equal out_dim ({cfg.out_dim}), and no Fourier features")
            self.decoder = BlockSum(cfg.out_dim)
        elif cfg.kind == "orex":
            self.decoder = IterativeDecoder(width, o.hidden, o.n_layers, o.state, o.iterations, generator)
        else:
            self.decoder = Decoder(width, d.hidden, d.n_hidden_layers, cfg.out_dim,
                                   d.sine, d.sine_freq_min, d.sine_freq_max, generator)

    @property
    def needs_points(self) -> bool:
        """True when the field must be initialised from task points (RBF placement) before training."""
        return self.rbf is not None

    def init_from_points(self, points: torch.Tensor, weights: torch.Tensor | None, seed: int = 0) -> None:
        if self.rbf is not None:
            self.rbf.init_from_points(points, weights, n_iter=self.cfg.rbf.kmeans_iters, seed=seed,
                                      max_width=self.cfg.rbf.max_width)

    def neighbours(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.rbf.neighbours(x) if self.rbf is not None else None

    def param_count(self) -> int:
        n = sum(p.numel() for p in self.parameters())
        if self.rbf is not None:  # frozen centres and shapes count in the budget, as in NeuRBF
            n += self.rbf.param_count() - self.rbf.features.numel()
        return n

    def param_groups(self, lr: float, lr_decoder: float) -> list[dict]:
        """Adam groups: encoders (and bias) at ``lr``, decoder at ``lr_decoder``."""
        enc = [p for name, p in self.named_parameters() if not name.startswith("decoder.")]
        groups = [{"params": enc, "lr": lr, "name": "encoders"},
                  {"params": list(self.decoder.parameters()), "lr": lr_decoder, "name": "decoder"}]
        return [g for g in groups if g["params"]]  # voxel fields have no decoder parameters

    def forward(self, x: torch.Tensor, rbf_idx: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_all(x, rbf_idx)[-1]

    def forward_all(self, x: torch.Tensor, rbf_idx: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every refinement iteration's output, (N, out_dim) each; one entry for non-iterative fields."""
        feats = []
        if self.grid is not None:
            feats.append(self.grid(x))
        if self.rbf is not None:
            feats.append(self.rbf(x, rbf_idx) if self.rbf_active else x.new_zeros(len(x), self.rbf.n_features))
        if self.fourier is not None:
            feats.append(self.fourier(x))
        h = feats[0] if len(feats) == 1 else torch.cat(feats, dim=-1)
        if self.bias is not None:
            h = h + self.bias
        if isinstance(self.decoder, IterativeDecoder):
            return self.decoder.forward_all(h)
        return [self.decoder(h)]


def value_and_gradient(field_: Field, x: torch.Tensor, rbf_idx: torch.Tensor | None,
                       with_gradient: bool) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """First output (N,) of every refinement iteration of ``field_`` at x (N, dim), and, if asked, the spatial
    gradient (N, dim) of the last one, kept in the graph so that a penalty on it trains the field (eikonal,
    OReX's gradient hinge)."""
    if with_gradient:
        x = x.clone().requires_grad_(True)
    values = [v[:, 0] for v in field_.forward_all(x, rbf_idx)]
    if not with_gradient:
        return values, None
    (grad,) = torch.autograd.grad(values[-1].sum(), x, create_graph=True)
    return values, grad
