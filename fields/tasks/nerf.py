"""nerf.py
=======
Radiance fields from posed pictures: a field maps a box position to density and colour (out_dim 4: log-density
offset, RGB logits; view-independent), trained by volume rendering random pixels' rays against their colours.

Frame (``NeRFFrame``): the scene's world frame mapped into the field box by the box the cameras see
(``Scene.box``): ``box = (world - centre) / half``. Rays march in box units; depths are reported in world units.

Rendering: samples every ``dt`` along each ray inside the box (``dt`` = box diagonal / ``steps_per_diagonal``),
those in empty cells of an occupancy grid skipped; ``alpha_i = 1 - exp(-sigma_i dt)``, transmittance
``T_i = prod_{j<i} (1 - alpha_j)`` (an exclusive cumulative sum per ray, in float64: one packed array holds many
rays), colour ``sum_i T_i alpha_i c_i + T_n * background``. Views are rendered in depth chunks so that rays whose
transmittance fell below ``1e-4`` stop (early ray termination). Training caps the field evaluations per step
(``samples_per_step``): rays beyond it are dropped, so a step costs the same early (everything occupied) and late.

Background: RGBA pictures are trained on a random colour per ray (composited on both sides), so the opacity must
be right and no faint haze can stand in for the background; scores and renders use ``[nerf] background``.
Pictures without alpha are trained on that colour.

Hybrid fields train grid-only for ``rbf_warmup_steps``, then place their RBFs by weighted k-means on the density
(NeuRBF's NeRF initialisation: weights ``alpha * |grad colour|`` on a grid over the box) and look up neighbours with a
cell list of the frozen centres on the field's device (``fieldstudio.encoders.cells``).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fieldstudio.config import background_colour
from fieldstudio.control import check_cancel, report
from fieldstudio.data.meshes import BoxFrame
from fieldstudio.data.nerf_scenes import Camera, Scene, load_picture, read_scene
from fieldstudio.errors import FieldStudioError

SQRT3 = math.sqrt(3.0)
INIT_ALPHA = 1e-2  # opacity of one sample at the start (1e-4 and less: 20-23 dB where 1e-2 reached 30, see issue 13)
MAX_LOG_DENSITY = 15.0
TERMINATE_T = 1e-4  # rendering stops a ray once this little light is left
OCCUPANCY_ALPHA = 5e-3  # a cell is occupied while one sample's opacity there may exceed this
OCCUPANCY_DECAY = 0.95
RENDER_RAYS = 2**13  # rays per block while rendering views
RENDER_DEPTH_CHUNK = 32  # samples per ray per pass while rendering
RENDER_PROBES = 8  # random points per occupancy cell when a loaded field's occupancy is rebuilt
BLOCK = 4  # samples per block in the first pass of marching (a block is shorter than an occupancy cell)


@dataclass
class NeRFFrame(BoxFrame):
    """World <-> field box of a scene (``box = (world - center) * scale``), with what the pictures were trained at."""

    downscale: int = 1
    background: tuple = (1.0, 1.0, 1.0)

    def to_dict(self) -> dict:
        return {"kind": "nerf", "center": list(self.center), "scale": self.scale, "downscale": self.downscale,
                "background": list(self.background)}

    @classmethod
    def from_dict(cls, d: dict) -> "NeRFFrame":
        return cls(tuple(d["center"]), float(d["scale"]), int(d.get("downscale", 1)),
                   tuple(d.get("background", (1.0, 1.0, 1.0))))


def step_size(cfg) -> float:
    """Sample spacing along rays, box units."""
    return 2.0 * SQRT3 / cfg.nerf.steps_per_diagonal


def density_bias(cfg) -> float:
    """Added to the field's first output before exp: an untrained field (output ~0) gives each sample an opacity of
    ``INIT_ALPHA``."""
    return math.log(-math.log(1.0 - INIT_ALPHA) / step_size(cfg))


def density_and_colour(raw: torch.Tensor, bias: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) density per box unit and (N, 3) RGB in [0, 1] from the field's (N, 4) output."""
    sigma = torch.exp((raw[:, 0] + bias).clamp(max=MAX_LOG_DENSITY))
    return sigma, torch.sigmoid(raw[:, 1:4])


def box_interval(o: torch.Tensor, d: torch.Tensor, lo=-1.0, hi=1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays (box frame, unit directions) through the box [lo, hi] (default the field's
    [-1, 1]^3; slab method); rays that miss get t_far <= t_near."""
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t0, t1 = (lo - o) * inv, (hi - o) * inv
    t_near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far


def evaluate(field, x: torch.Tensor, cells) -> torch.Tensor:
    """The field's (N, 4) output at box points, its RBF neighbours from ``cells`` (a ``CellNeighbours``) while its
    RBFs are in use."""
    idx = None
    if getattr(field, "rbf", None) is not None and field.rbf_active and cells is not None and len(x):
        idx = cells.query(x)
    return field(x, idx)


class Occupancy:
    """Which cells of an R^3 grid over the box may hold density: a running maximum of the density at a random point
    of every cell (decayed at each update), thresholded at a small per-sample opacity."""

    def __init__(self, resolution: int, dt: float, device: torch.device):
        self.resolution, self.dt = resolution, dt
        self.density = torch.full((resolution,) * 3, float("inf"), device=device)  # everything occupied at first
        self.mask = torch.ones((resolution,) * 3, dtype=torch.bool, device=device)
        self.lo, self.hi = -1.0, 1.0  # bounds of the occupied cells: rays are marched only there
        self.near = self.mask  # occupied cells and their 26 neighbours: where a block of samples may hit one

    def cells(self, x: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        c = ((x + 1.0) * (0.5 * r)).floor_().clamp_(0, r - 1)  # float arithmetic: exact for r^3 < 2^24
        return ((c[..., 0] * r + c[..., 1]) * r + c[..., 2]).long()

    def lookup(self, x: torch.Tensor, near: bool = False) -> torch.Tensor:
        return (self.near if near else self.mask).view(-1)[self.cells(x)]

    @torch.no_grad()
    def update(self, density_fn, generator: torch.Generator, decay: float = OCCUPANCY_DECAY) -> None:
        r = self.resolution
        device = self.density.device
        idx = torch.arange(r**3)
        cell = torch.stack([idx // (r * r), (idx // r) % r, idx % r], -1).float()
        x = (cell + torch.rand(cell.shape, generator=generator)) * (2.0 / r) - 1.0
        new = torch.cat([density_fn(part.to(device)) for part in x.split(2**16)]).view(r, r, r)
        old = torch.where(torch.isinf(self.density), torch.zeros_like(new), self.density)
        self.density = torch.maximum(old * decay, new)
        threshold = min(-math.log(1.0 - OCCUPANCY_ALPHA) / self.dt, float(self.density.mean()))
        self.mask = self.density > threshold
        self.near = torch.nn.functional.max_pool3d(self.mask[None, None].float(), 3, 1, 1)[0, 0] > 0
        occupied = self.mask.nonzero()
        if len(occupied):
            self.lo = (occupied.amin(0).float() * (2.0 / r) - 1.0).to(device)
            self.hi = ((occupied.amax(0).float() + 1.0) * (2.0 / r) - 1.0).to(device)
        else:
            self.lo = self.hi = torch.zeros(3, device=device)

    def share(self) -> float:
        return float(self.mask.float().mean())


def march(o: torch.Tensor, d: torch.Tensor, dt: float, occupancy: Occupancy | None, jitter: torch.Tensor,
          first: int = 0, count: int | None = None):
    """Sample positions of rays ``o``, ``d`` (box frame): steps ``first .. first + count`` (all when None) at
    ``t_near + (i + jitter) dt``, inside the box (the occupied cells' bounds) and in occupied cells. Returns
    (points (M, 3), ray of each (M,), t (M,)), ordered by ray then depth, and whether any ray has steps beyond
    ``first + count``. Samples are generated ray by ray without padding (rays differ in length by a lot)."""
    t_near, t_far = box_interval(o, d) if occupancy is None else box_interval(o, d, occupancy.lo, occupancy.hi)
    n = torch.ceil((t_far - t_near).clamp_min(0.0) / dt - jitter).clamp_min(0.0).long()  # steps inside
    more = False
    if count is not None:
        more = bool((n > first + count).any())
        n = (n - first).clamp(0, count)
    if occupancy is not None and 0.5 * (BLOCK - 1) * dt <= 2.0 / occupancy.resolution:
        # Blocks of BLOCK samples first: a block whose middle is not in or next to an occupied cell holds no sample
        # in one (its samples are within a cell of its middle), so only the samples of the other blocks are made
        # and looked up: the same samples, fewer lookups.
        nb = torch.div(n + BLOCK - 1, BLOCK, rounding_mode="floor")
        bray = torch.repeat_interleave(torch.arange(len(o), device=o.device), nb)
        block = torch.arange(len(bray), device=o.device) - (torch.cumsum(nb, 0) - nb)[bray]
        size = torch.minimum(n[bray] - block * BLOCK, torch.full_like(block, BLOCK))
        tb = t_near[bray] + ((block * BLOCK + first).to(o.dtype) + 0.5 * (size - 1).to(o.dtype)
                             + jitter[bray]) * dt
        hit = occupancy.lookup(o[bray] + tb[:, None] * d[bray], near=True)
        bray, block, size = bray[hit], block[hit], size[hit]
        ray = torch.repeat_interleave(bray, size)
        start = torch.cumsum(size, 0) - size
        step = torch.repeat_interleave(block * BLOCK, size) + torch.arange(len(ray), device=o.device) \
            - torch.repeat_interleave(start, size) + first
    else:
        ray = torch.repeat_interleave(torch.arange(len(o), device=o.device), n)
        start = torch.cumsum(n, 0) - n
        step = torch.arange(len(ray), device=o.device) - start[ray] + first
    t = t_near[ray] + (step.to(o.dtype) + jitter[ray]) * dt
    pts = o[ray] + t[:, None] * d[ray]
    if occupancy is not None:
        keep = occupancy.lookup(pts)
        pts, ray, t = pts[keep], ray[keep], t[keep]
    return pts, ray, t, more


def composite(sigma: torch.Tensor, rgb: torch.Tensor, ray: torch.Tensor, t: torch.Tensor, n_rays: int, dt: float,
              t_start: torch.Tensor | None = None):
    """Volume rendering of packed samples (sorted by ray, then depth). Returns per ray: colour (n, 3) without
    background, opacity (n,), depth-weighted sum (n,), and the transmittance left (n,). ``t_start``: the
    transmittance each ray had before these samples (depth-chunked rendering)."""
    sd = (sigma * dt).double()
    total = torch.zeros(n_rays, dtype=torch.float64, device=sd.device).index_add_(0, ray, sd)
    # Exclusive cumulative sum within each ray: the global cumulative sum minus its value before the ray's first
    # sample (float64: one array holds thousands of rays, float32 would lose the small sums after large ones).
    cs = torch.cumsum(sd, 0)
    ray_start = torch.cumsum(total, 0) - total
    excl = (cs - sd - ray_start[ray]).clamp_min(0.0)
    trans = torch.exp(-excl).float()
    if t_start is not None:
        trans = trans * t_start[ray]
    w = trans * (1.0 - torch.exp(-sigma * dt))
    colour = torch.zeros(n_rays, 3, dtype=rgb.dtype, device=rgb.device).index_add_(0, ray, w[:, None] * rgb)
    opacity = torch.zeros(n_rays, dtype=w.dtype, device=w.device).index_add_(0, ray, w)
    depth = torch.zeros(n_rays, dtype=w.dtype, device=w.device).index_add_(0, ray, w * t)
    left = torch.exp(-total).float()
    if t_start is not None:
        left = left * t_start
    return colour, opacity, depth, left


@dataclass
class RayBank:
    """Every training pixel: (P, 4) premultiplied RGB + alpha, flat over the cameras, and per camera its first
    pixel, width, intrinsics and pose, to make rays for any pixel on the fly."""

    pixels: torch.Tensor
    starts: torch.Tensor
    widths: torch.Tensor
    intrinsics: torch.Tensor  # (n, 4) fx, fy, cx, cy
    c2w: torch.Tensor  # (n, 3, 4) box frame
    has_alpha: bool

    @property
    def n_pixels(self) -> int:
        return len(self.pixels)

    def rays(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = torch.searchsorted(self.starts, flat, right=True) - 1
        local = flat - self.starts[cam]
        w = self.widths[cam]
        v = torch.div(local, w, rounding_mode="floor")
        u = local - v * w
        k = self.intrinsics[cam]
        d_cam = torch.stack([(u + 0.5 - k[:, 2]) / k[:, 0], -(v + 0.5 - k[:, 3]) / k[:, 1],
                             -torch.ones_like(k[:, 0])], -1)
        m = self.c2w[cam]
        d = torch.einsum("nij,nj->ni", m[:, :, :3], d_cam)
        return m[:, :, 3], d / d.norm(dim=-1, keepdim=True)


def box_cameras(cams: list[Camera], frame: NeRFFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 4) intrinsics and (n, 3, 4) camera-to-box matrices (rotation kept, position mapped into the box)."""
    k = torch.tensor([[c.fx, c.fy, c.cx, c.cy] for c in cams], dtype=torch.float32)
    m = np.stack([c.c2w[:3, :4] for c in cams]).astype(np.float64)
    m[:, :, 3] = (m[:, :, 3] - np.asarray(frame.center)) * frame.scale
    return k, torch.from_numpy(m).float()


def camera_rays_box(cam: Camera, frame: NeRFFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """(H*W, 3) origins and directions (box frame) through the pixel centres of ``cam``, row-major."""
    k, m = box_cameras([cam], frame)
    flat = torch.arange(cam.width * cam.height)
    bank = RayBank(torch.empty(0, 4), torch.zeros(1, dtype=torch.long), torch.tensor([cam.width]), k, m, False)
    return bank.rays(flat)


class NeRFTask:
    """Fit a radiance field to the training pictures of ``scene`` (see the module docstring)."""

    name = "nerf"

    def __init__(self, scene: Scene, cfg, frame: NeRFFrame, bank: RayBank):
        self.scene, self.cfg, self.frame, self.bank = scene, cfg, frame, bank
        self.dt = step_size(cfg)
        self.bias = density_bias(cfg)
        self.background = background_colour(cfg.nerf.background)
        self.occupancy: Occupancy | None = None
        self.cells = None
        self.field = None
        self.rbf_placed = True

    # -------------------------------------------------------------------------------------------- set-up
    def init_field(self, field, seed: int) -> None:
        """Nothing at the start: RBFs are placed from the density after the warm-up (``batch``)."""

    def attach(self, field) -> None:
        self.field = field
        device = next(field.parameters()).device
        self.occupancy = Occupancy(self.cfg.nerf.occupancy_resolution, self.dt, device)
        self.rbf_placed = getattr(field, "rbf", None) is None
        if not self.rbf_placed:
            field.rbf_active = False  # until placed (or found placed in a checkpoint, see batch)

    def warmup_steps(self) -> int:
        w = self.cfg.nerf.rbf_warmup_steps
        steps = self.cfg.train.steps
        return min(w, steps // 5) if steps else w

    def place_rbfs(self, field, seed: int) -> None:
        """Weighted k-means of the RBF centres on random points of the occupied cells (4 per RBF, at least 2^18),
        weighted by each point's opacity times the gradient of the colour there (NeuRBF's NeRF weights; central
        differences at a tenth of a cell), points without opacity left out."""
        device = next(field.parameters()).device
        g = torch.Generator().manual_seed(seed)
        occ = self.occupancy
        cells = occ.mask.view(-1).nonzero().squeeze(1).cpu()
        n_rbf = field.rbf.n_rbf
        n = max(4 * n_rbf, 2**18)
        pick = cells[torch.randint(len(cells), (n,), generator=g)] if len(cells) else torch.zeros(n, dtype=torch.long)
        r = occ.resolution
        ijk = torch.stack([pick // (r * r), (pick // r) % r, pick % r], -1).float()
        x = (ijk + torch.rand(n, 3, generator=g)) * (2.0 / r) - 1.0
        h = 0.1 * 2.0 / r
        sigma, detail = [], []
        with torch.no_grad():
            for part in x.split(2**16):
                part = part.to(device)
                s, c = density_and_colour(self.evaluate(field, part), self.bias)
                grad2 = torch.zeros(len(part), device=device)
                for axis in range(3):
                    step = torch.zeros(3, device=device)
                    step[axis] = h
                    cp = density_and_colour(self.evaluate(field, part + step), self.bias)[1]
                    cm = density_and_colour(self.evaluate(field, part - step), self.bias)[1]
                    grad2 += (((cp - cm) / (2 * h)) ** 2).sum(-1)
                sigma.append(s.cpu())
                detail.append(grad2.sqrt().cpu())
                check_cancel()
        sigma, detail = torch.cat(sigma), torch.cat(detail)
        alpha = -torch.expm1(-sigma * self.dt)
        weights = alpha.clamp_min(1e-9) * (detail + 0.1 * detail.mean() + 1e-6)
        keep = alpha > OCCUPANCY_ALPHA
        if int(keep.sum()) < n_rbf:  # little is dense yet: the most opaque points
            keep = torch.zeros_like(keep)
            keep[torch.argsort(alpha, descending=True)[:n_rbf]] = True
        field.init_from_points(x[keep], weights[keep], seed=seed)
        self._build_cells(field)
        field.rbf_active = True
        self.rbf_placed = True

    def _build_cells(self, field) -> None:
        from fieldstudio.encoders.cells import CellNeighbours

        self.cells = CellNeighbours(field.rbf.centers.detach(), field.rbf.k)

    # -------------------------------------------------------------------------------------------- training
    def batch(self, step: int, batch_size: int, generator: torch.Generator, progress: float = 0.0) -> dict:
        field = self.field
        if not self.rbf_placed:
            if step >= self.warmup_steps():
                if step == self.warmup_steps():
                    self.place_rbfs(field, self.cfg.train.seed)
                else:  # resumed after the placement: the checkpoint holds the placed centres
                    self._build_cells(field)
                    field.rbf_active = True
                    self.rbf_placed = True
        every = self.cfg.nerf.occupancy_every
        if step < 8 * every:  # early on the field empties fast and every step pays for the samples not yet skipped
            every = max(1, every // 4)
        if step % every == 0 and (step > 0 or self.occupancy.mask.all()):
            self.occupancy.update(self.density, generator)
        flat = torch.randint(self.bank.n_pixels, (batch_size,), generator=generator)
        o, d = self.bank.rays(flat)
        target = self.bank.pixels[flat]
        if self.bank.has_alpha:  # RGBA: a random colour behind each ray (the module docstring says why)
            bg = torch.rand(batch_size, 3, generator=generator)
        else:
            bg = torch.tensor(self.background or (1.0, 1.0, 1.0)).expand(batch_size, 3)
        rgb = target[:, :3] + (1.0 - target[:, 3:4]) * bg
        return {"o": o, "d": d, "rgb": rgb, "bg": bg, "jitter": torch.rand(batch_size, generator=generator)}

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Density (per box unit) of the current field at box points (no gradient)."""
        with torch.no_grad():
            return density_and_colour(self.evaluate(self.field, x), self.bias)[0]

    def evaluate(self, field, x: torch.Tensor) -> torch.Tensor:
        return evaluate(field, x, self.cells)

    def loss(self, field, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        o, d = batch["o"], batch["d"]
        pts, ray, t, _ = march(o, d, self.dt, self.occupancy, batch["jitter"])
        cap = self.cfg.nerf.samples_per_step
        n_rays = len(o)
        if len(pts) > cap:  # keep the first rays whose samples fit (rays are in random order)
            n_rays = max(1, int(ray[cap - 1].item()))
            keep = ray < n_rays
            pts, ray, t = pts[keep], ray[keep], t[keep]
        sigma, rgb = density_and_colour(self.evaluate(field, pts), self.bias)
        colour, opacity, _, _ = composite(sigma, rgb, ray, t, n_rays, self.dt)
        pred = colour + (1.0 - opacity)[:, None] * batch["bg"][:n_rays]
        mse = torch.mean((pred - batch["rgb"][:n_rays]) ** 2)
        value = mse.item()
        return mse, {"mse": value, "psnr": 10 * math.log10(1.0 / max(value, 1e-20)), "rays": n_rays,
                     "samples_per_ray": len(pts) / max(n_rays, 1), "occupied": self.occupancy.share()}


# ------------------------------------------------------------------------------------------------ rendering

class Renderer:
    """Renders views of a trained field: its own occupancy grid (from the field's density, once) and RBF cell list."""

    def __init__(self, model, cfg, frame: NeRFFrame, occupancy: Occupancy | None = None, cells=None):
        self.model, self.cfg, self.frame = model, cfg, frame
        self.dt, self.bias = step_size(cfg), density_bias(cfg)
        self.device = next(model.parameters()).device
        self.cells = cells
        if cells is None and getattr(model, "rbf", None) is not None and model.rbf_active:
            from fieldstudio.encoders.cells import CellNeighbours

            self.cells = CellNeighbours(model.rbf.centers.detach(), model.rbf.k)
        if occupancy is None:
            # A loaded field has no training history: the densest of RENDER_PROBES random points per cell (one
            # point missed thin parts: a hash grid's 25 test views of lego scored 27.5 dB against 30.3 through the
            # occupancy it trained with).
            occupancy = Occupancy(cfg.nerf.occupancy_resolution, self.dt, self.device)
            density = lambda x: density_and_colour(self._eval(x), self.bias)[0]  # noqa: E731
            g = torch.Generator().manual_seed(0)
            for _ in range(RENDER_PROBES):
                occupancy.update(density, g, decay=1.0)
        self.occupancy = occupancy

    def _eval(self, x: torch.Tensor) -> torch.Tensor:
        return evaluate(self.model, x, self.cells)

    @torch.no_grad()
    def rays(self, o: torch.Tensor, d: torch.Tensor, background=(1.0, 1.0, 1.0)) -> dict:
        """Colour (n, 3) on ``background``, opacity (n,) and depth (n,, box units along the ray, 0 where nothing)
        of rays in the box frame, marched in depth chunks with early termination."""
        n = len(o)
        out_rgb = torch.zeros(n, 3)
        out_opacity, out_depth = torch.zeros(n), torch.zeros(n)
        bg = torch.tensor(background, dtype=torch.float32)
        for s in range(0, n, RENDER_RAYS):
            ob, db = o[s:s + RENDER_RAYS].to(self.device), d[s:s + RENDER_RAYS].to(self.device)
            m = len(ob)
            alive = torch.arange(m, device=self.device)
            trans = torch.ones(m, device=self.device)
            colour = torch.zeros(m, 3, device=self.device)
            opacity, depth = torch.zeros(m, device=self.device), torch.zeros(m, device=self.device)
            first = 0
            while len(alive):
                pts, ray, t, more = march(ob[alive], db[alive], self.dt, self.occupancy,
                                          torch.full((len(alive),), 0.5, device=self.device), first,
                                          RENDER_DEPTH_CHUNK)
                if len(pts):
                    sigma, rgb = density_and_colour(self._eval(pts), self.bias)
                    c, a, dep, left = composite(sigma, rgb, ray, t, len(alive), self.dt, trans[alive])
                    colour[alive] += c
                    opacity[alive] += a
                    depth[alive] += dep
                    trans[alive] = left
                first += RENDER_DEPTH_CHUNK
                if not more:
                    break
                alive = alive[trans[alive] > TERMINATE_T]
                check_cancel()
            out_rgb[s:s + m] = (colour + (1.0 - opacity)[:, None] * bg.to(self.device)).cpu()
            out_opacity[s:s + m], out_depth[s:s + m] = opacity.cpu(), depth.cpu()
        return {"rgb": out_rgb, "opacity": out_opacity,
                "depth": torch.where(out_opacity > 1e-6, out_depth / out_opacity.clamp_min(1e-6),
                                     torch.zeros_like(out_depth))}

    def view(self, cam: Camera, background=None, progress: bool = False) -> dict:
        """A camera's picture: "rgb" (H, W, 3) float32, "opacity" (H, W), "depth" (H, W) in world units along
        the ray (0 where nothing was hit)."""
        background = self.frame.background if background is None else background
        o, d = camera_rays_box(cam, self.frame)
        parts = {"rgb": [], "opacity": [], "depth": []}
        rows = max(1, RENDER_RAYS // cam.width)
        for r0 in range(0, cam.height, rows):
            sl = slice(r0 * cam.width, min(cam.height, r0 + rows) * cam.width)
            out = self.rays(o[sl], d[sl], background)
            for k in parts:
                parts[k].append(out[k])
            if progress:
                report(min(cam.height, r0 + rows), cam.height)
        h, w = cam.height, cam.width
        return {"rgb": torch.cat(parts["rgb"]).view(h, w, 3).numpy(),
                "opacity": torch.cat(parts["opacity"]).view(h, w).numpy(),
                "depth": (torch.cat(parts["depth"]) / self.frame.scale).view(h, w).numpy()}


def scene_cameras(cfg) -> dict[str, list[Camera]]:
    """The run's cameras by split (as stored, before any downscale), for faces that show or pick them; read once
    per scene file version (previews ask for them every few seconds, inside the training lock)."""
    folder = Path(cfg.input)
    stamp = tuple(p.stat().st_mtime_ns for p in sorted(folder.glob("transforms*.json"))) if folder.is_dir() else ()
    return _scene_cameras(str(folder), stamp)


@functools.lru_cache(maxsize=4)
def _scene_cameras(folder: str, stamp: tuple) -> dict[str, list[Camera]]:
    return read_scene(folder).splits


def preview_camera(cfg, camera: Camera | None, split: str, index: int, max_side: int) -> tuple[Camera, int]:
    """The camera a preview renders (``camera``, or the ``index``-th of ``split``) shrunk so that its longer side is
    at most ``max_side``, and the whole shrink factor from the stored picture (for its reference)."""
    if camera is None:
        cams = scene_cameras(cfg).get(split) or []
        if not cams:
            raise FieldStudioError(f"the scene has no {split} cameras")
        camera = cams[max(0, min(index, len(cams) - 1))]
    factor = max(1, math.ceil(max(camera.width, camera.height) / max_side))
    return (camera.scaled(factor) if factor > 1 else camera), factor


# ------------------------------------------------------------------------------------------------ the task's end

def eval_cameras(scene: Scene, cfg, split: str = "test") -> list[Camera]:
    """The cameras of ``split`` at the trained resolution (``eval_views`` of them, evenly spread, when set)."""
    cams = scene.splits.get(split, [])
    n = cfg.nerf.eval_views
    if n and len(cams) > n:
        cams = [cams[round(i * (len(cams) - 1) / max(n - 1, 1))] for i in range(n)]
    return [c.scaled(cfg.nerf.downscale) if cfg.nerf.downscale > 1 else c for c in cams]


def view_name(cam: Camera) -> str:
    return Path(cam.name).name


def render_views(renderer: Renderer, cams: list[Camera], out_dir: Path | None, cfg, depth: bool = False) -> dict:
    """Render ``cams``; score each against its picture when it exists; write ``<name>.png`` (and depth) into
    ``out_dir``. Returns metrics: per view and means."""
    from fieldstudio.data.images import write_image
    from fieldstudio.metrics import image_metrics

    per_view, files = [], []
    for i, cam in enumerate(cams):
        check_cancel()
        out = renderer.view(cam)
        entry = {"view": view_name(cam)}
        if cam.path is not None and Path(cam.path).exists():
            gt = load_picture(cam, cfg.nerf.downscale, renderer.frame.background)
            m = image_metrics(np.clip(out["rgb"], 0, 1), gt, 1.0)
            entry.update({"psnr": m["psnr"], "ssim": m["ssim"]})
        if out_dir is not None:
            files.append(write_image(out_dir / f"{view_name(cam)}.png", _to_png(out["rgb"])))
            if depth:
                files.append(write_image(out_dir / f"{view_name(cam)}_depth.png", depth_picture(out)))
        per_view.append(entry)
        report(i + 1, len(cams))
    scored = [v for v in per_view if "psnr" in v]
    metrics = {"views": per_view}
    if scored:
        metrics["psnr"] = float(np.mean([v["psnr"] for v in scored]))
        metrics["ssim"] = float(np.mean([v["ssim"] for v in scored]))
        metrics["psnr_min"] = float(np.min([v["psnr"] for v in scored]))
    return metrics


def _to_png(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def depth_picture(out: dict) -> np.ndarray:
    """A 16-bit grey picture of the depth: near white, far dark, nothing black (for looking, not measuring)."""
    depth, hit = out["depth"], out["opacity"] > 0.5
    pic = np.zeros(depth.shape, np.uint16)
    if hit.any():
        lo, hi = float(depth[hit].min()), float(depth[hit].max())
        pic[hit] = (65535 * (1.0 - 0.8 * (depth[hit] - lo) / max(hi - lo, 1e-9))).astype(np.uint16)
    return pic[:, :, None]


def finish(cfg, model, prepared, run_dir: Path) -> tuple[dict, dict]:
    """After training: render the held-out views, score them (PSNR, SSIM per view and their means) and write the
    renders into ``run_dir/test``."""
    from fieldstudio.control import current

    task = prepared.task
    control = current()
    if control is not None:
        control.enter("render")
    t0 = time.perf_counter()
    renderer = Renderer(model, cfg, prepared.frame, occupancy=task.occupancy, cells=task.cells)
    split = "test" if "test" in task.scene.splits else "train"
    cams = eval_cameras(task.scene, cfg, split)
    metrics = render_views(renderer, cams, run_dir / split, cfg)
    metrics.update({"split": split, "render_seconds": round(time.perf_counter() - t0, 2),
                    "occupied": renderer.occupancy.share()})
    return metrics, {"renders": run_dir / split}


# ------------------------------------------------------------------------------------------------ registry glue

DEFAULT_PARAMS = 2_000_000


def field_shape(path) -> tuple[int, int]:
    return 3, 4


def claims(path) -> bool:
    from fieldstudio.data.nerf_scenes import is_scene

    return is_scene(path)


def frame_for(scene: Scene, cfg) -> NeRFFrame:
    centre, half = scene.box()
    bg = background_colour(cfg.nerf.background) or (1.0, 1.0, 1.0)
    return NeRFFrame(tuple(float(c) for c in centre), 1.0 / half, cfg.nerf.downscale, tuple(bg))


def build(cfg):
    """The task for the scene ``cfg.input``: cameras read and checked, training pictures decoded and downscaled."""
    from fieldstudio.tasks.spec import Prepared

    if cfg.field.dim != 3 or cfg.field.out_dim != 4:
        raise FieldStudioError("a NeRF scene needs a field with dim 3 and out_dim 4 (density and RGB); leave the "
                               "[field] table out of the config or set them")
    scene = read_scene(cfg.input)
    frame = frame_for(scene, cfg)
    cams = [c.scaled(cfg.nerf.downscale) if cfg.nerf.downscale > 1 else c for c in scene.splits["train"]]
    if min(min(c.width, c.height) for c in cams) < 4:
        raise FieldStudioError(f"--downscale {cfg.nerf.downscale} leaves pictures under 4 pixels; use a smaller one")
    pictures, starts = [], [0]
    for i, cam in enumerate(scene.splits["train"]):
        check_cancel()
        pic = load_picture(cam, cfg.nerf.downscale, None)
        pictures.append(torch.from_numpy(pic.reshape(-1, 4)))
        starts.append(starts[-1] + len(pictures[-1]))
        report(i + 1, len(cams))
    pixels = torch.cat(pictures)
    has_alpha = bool((pixels[:, 3] < 1.0).any())
    k, m = box_cameras(cams, frame)
    bank = RayBank(pixels, torch.tensor(starts[:-1]), torch.tensor([c.width for c in cams]), k, m, has_alpha)
    task = NeRFTask(scene, cfg, frame, bank)
    report_ = {"kind": "nerf_scene", "format": scene.format, "train_views": len(cams),
               "test_views": len(scene.splits.get("test", [])), "size": [cams[0].width, cams[0].height],
               "downscale": cfg.nerf.downscale, "alpha": has_alpha, "box_center": list(frame.center),
               "box_half": 1.0 / frame.scale, "notes": scene.notes}
    return Prepared(task, frame, report=report_)


def finish_points(cfg, prepared) -> int:
    """Field evaluations of the end's renders: test pixels times the samples a ray takes (~32 measured on lego)."""
    cams = eval_cameras(prepared.task.scene, cfg, "test" if "test" in prepared.task.scene.splits else "train")
    return sum(c.width * c.height for c in cams) * 32


# ------------------------------------------------------------------------------------------------ fieldstudio render

def _trained_camera(scene: Scene, cfg) -> Camera:
    cam = scene.splits["train"][0]
    return cam.scaled(cfg.nerf.downscale) if cfg.nerf.downscale > 1 else cam


def orbit_cameras(scene: Scene, cfg, n: int) -> list[Camera]:
    """``n`` cameras on a circle around the scene's box centre, at the training cameras' mean distance and
    elevation, with the intrinsics of the first training camera (at the trained resolution). "Up" is the mean of
    the training cameras' up axes (Blender scenes: +z)."""
    train = scene.splits["train"]
    centre, _ = scene.box()
    ups = np.array([c.c2w[:3, 1] for c in train])
    up = ups.mean(0)
    up /= max(np.linalg.norm(up), 1e-12)
    offsets = np.array([c.c2w[:3, 3] for c in train]) - centre
    radius = float(np.linalg.norm(offsets, axis=1).mean())
    height = float(np.clip((offsets @ up / np.linalg.norm(offsets, axis=1)).mean(), -0.95, 0.95))
    a = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    base = _trained_camera(scene, cfg)
    cams = []
    for i in range(n):
        phi = 2 * math.pi * i / n
        pos = centre + radius * (math.sqrt(1 - height**2) * (math.cos(phi) * a + math.sin(phi) * b) + height * up)
        cams.append(Camera(f"orbit_{i:04d}", None, look_at(pos, centre, up), base.width, base.height,
                           base.fx, base.fy, base.cx, base.cy))
    return cams


def look_at(position: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(4, 4) camera-to-world of a camera at ``position`` looking at ``target`` (OpenGL axes: it looks along -z)."""
    z = position - target
    z = z / np.linalg.norm(z)
    x = np.cross(up, z)
    x = x / max(np.linalg.norm(x), 1e-12)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, position
    return m


def pose_cameras(path: Path, scene: Scene | None, cfg) -> list[Camera]:
    """Cameras from a json file: one ``transform_matrix`` (4 x 4 camera-to-world, OpenGL axes) or a ``frames``
    list of them, with ``camera_angle_x`` or ``fl_x``/``fl_y``/``cx``/``cy`` and ``w``/``h`` (default: the
    training camera at the trained resolution)."""
    import json

    try:
        meta = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise FieldStudioError(f"--pose {path}: cannot read it as json ({err})") from None
    frames = meta.get("frames", [meta]) if isinstance(meta, dict) else None
    if not frames or not all(isinstance(f, dict) and "transform_matrix" in f for f in frames):
        raise FieldStudioError(f"--pose {path}: give a transform_matrix (4 x 4 camera-to-world) or a frames list "
                               "of them")
    base = _trained_camera(scene, cfg) if scene is not None else None
    cams = []
    for i, f in enumerate(frames):
        m = np.asarray(f["transform_matrix"], dtype=np.float64)
        if m.shape != (4, 4) or not np.isfinite(m).all():
            raise FieldStudioError(f"--pose {path}: frame {i}'s transform_matrix is not a finite 4 x 4 matrix")
        get = lambda key: f.get(key, meta.get(key))  # noqa: E731  (per frame, else shared)
        w = int(get("w") or (base.width if base else 0))
        h = int(get("h") or (base.height if base else 0))
        if w < 1 or h < 1:
            raise FieldStudioError(f"--pose {path}: give w and h (the scene's pictures are not there to copy)")
        if get("fl_x"):
            fx = float(get("fl_x"))
            fy = float(get("fl_y") or fx)
        elif get("camera_angle_x"):
            fx = fy = 0.5 * w / math.tan(0.5 * float(get("camera_angle_x")))
        elif base is not None:
            fx, fy = base.fx * w / base.width, base.fy * w / base.width
        else:
            raise FieldStudioError(f"--pose {path}: give camera_angle_x or fl_x")
        cx, cy = float(get("cx") or w / 2), float(get("cy") or h / 2)
        name = Path(str(f.get("file_path", f"pose_{i:04d}"))).stem
        cams.append(Camera(name, None, m, w, h, fx, fy, cx, cy))
    return cams


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """An H.264 .mp4 (or .gif) of uint8 frames, written to a temporary name and renamed."""
    import os

    import imageio.v2 as imageio

    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise FieldStudioError(f"--orbit writes .mp4 or .gif, not {path.suffix or 'a file without suffix'}")
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    if path.suffix.lower() == ".gif":
        imageio.mimsave(tmp, frames, duration=1.0 / fps, loop=0)
    else:
        h, w = frames[0].shape[:2]
        pad = ((0, h % 2), (0, w % 2), (0, 0))  # yuv420p needs even sides
        try:
            import imageio_ffmpeg  # noqa: F401  (the plugin's binary; without it imageio picks another writer)
        except ImportError:
            raise FieldStudioError("writing .mp4 needs imageio-ffmpeg (pip install imageio-ffmpeg); or give a .gif "
                                   "name") from None
        with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8, macro_block_size=1,
                                ffmpeg_log_level="error") as writer:
            for f in frames:
                writer.append_data(np.pad(f, pad, mode="edge"))
    os.replace(tmp, path)
    return path


def resized(cam: Camera, size: str | None) -> Camera:
    """``cam`` rendered at ``size`` ("WxH" pixels; None: as it is), its field of view kept."""
    if size is None:
        return cam
    try:
        w, h = (int(t) for t in size.lower().split("x"))
    except ValueError:
        raise FieldStudioError(f"--size {size!r}: give WIDTHxHEIGHT in pixels, e.g. 400x400") from None
    if not (1 <= w <= 8192 and 1 <= h <= 8192):
        raise FieldStudioError(f"--size {size}: each side must be 1..8192 pixels")
    sx, sy = w / cam.width, h / cam.height
    return Camera(cam.name, None, cam.c2w, w, h, cam.fx * sx, cam.fy * sy, cam.cx * sx, cam.cy * sy)


def render_run(run_dir, out_path, views: str | None = None, orbit: int | None = None, pose: str | None = None,
               depth: bool = False, size: str | None = None, fps: int = 30) -> dict:
    """``fieldstudio render`` for a NeRF run: the ``views`` split's cameras into the folder ``out_path`` (PNGs named
    after their pictures, PSNR/SSIM per view and means in ``out_path/metrics.json``), an ``orbit`` of N frames as
    a video, or the cameras of a ``pose`` json (one: ``out_path`` is the picture; several: a folder). ``depth``
    adds ``<name>_depth.png`` beside each picture; ``size`` ("WxH") renders orbits and poses at another size (views
    are scored at the trained one)."""
    from fieldstudio.control import current
    from fieldstudio.io import atomic_write_json, json_ready
    from fieldstudio.run import load_run

    cfg, model, frame = load_run(run_dir)
    if sum(x is not None for x in (views, orbit, pose)) > 1:
        raise FieldStudioError("give one of --views, --orbit and --pose")
    if views is None and orbit is None and pose is None:
        views = "test"
    scene = read_scene(cfg.input) if Path(cfg.input).exists() else None
    if scene is None and pose is None:
        raise FieldStudioError(f"the run's scene {cfg.input} is no longer there: its cameras are needed for "
                               "--views and --orbit (--pose FILE works without it)")
    out_path = Path(out_path)
    control = current()
    if control is not None:
        control.enter("render")
    renderer = Renderer(model, cfg, frame)
    if views is not None:
        if size is not None:
            raise FieldStudioError("--views renders at the trained resolution, to score against the pictures; "
                                   "--size is for --orbit and --pose")
        if views not in ("train", "val", "test"):
            raise FieldStudioError(f"--views {views!r}: give train, val or test")
        if views not in scene.splits:
            raise FieldStudioError(f"the scene has no {views} views (it has {', '.join(scene.splits)})")
        cfg.nerf.eval_views = 0
        out_path.mkdir(parents=True, exist_ok=True)
        metrics = render_views(renderer, eval_cameras(scene, cfg, views), out_path, cfg, depth)
        metrics["split"] = views
        atomic_write_json(out_path / "metrics.json", json_ready(metrics))
        return {"folder": out_path, "views": len(metrics["views"]), "psnr": metrics.get("psnr"),
                "ssim": metrics.get("ssim"), "metrics": out_path / "metrics.json"}
    if orbit is not None:
        if orbit < 2:
            raise FieldStudioError(f"--orbit needs at least 2 frames, got {orbit}")
        cams = [resized(c, size) for c in orbit_cameras(scene, cfg, orbit)]
        pictures = []
        for i, cam in enumerate(cams):
            pictures.append(_to_png(renderer.view(cam)["rgb"]))
            report(i + 1, len(cams))
        return {"video": write_video(out_path, pictures, fps), "frames": len(cams),
                "width": cams[0].width, "height": cams[0].height}
    from fieldstudio.data.images import write_image

    cams = [resized(c, size) for c in pose_cameras(Path(pose), scene, cfg)]
    written = []
    for i, cam in enumerate(cams):
        out = renderer.view(cam)
        target = out_path if len(cams) == 1 else out_path / f"{cam.name}.png"
        if len(cams) > 1:
            out_path.mkdir(parents=True, exist_ok=True)
        written.append(write_image(target, _to_png(out["rgb"])))
        if depth:
            written.append(write_image(target.with_name(target.stem + "_depth.png"), depth_picture(out)))
        report(i + 1, len(cams))
    return {"files": written, "views": len(cams)}
