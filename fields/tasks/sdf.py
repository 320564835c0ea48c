"""sdf.py
======
Signed-distance fitting: samples, ground truth, loss (NeuRBF/torch-ngp protocol). ``SDFSamples`` trains a field on
a pool of points with known signed distances; ``SDFTask`` builds that pool from a mesh (SDF inputs, grids and
scattered samples, build theirs in ``fieldstudio.tasks.sdf_inputs``).

Frame: everything here is in the normalised box [-1, 1]^3 (``BoxFrame`` of the input).
Sign: negative inside, positive outside. Inside/outside of a mesh comes from ray-parity voting (open3d), never from
face winding, so inward-wound and open (scanned) meshes get a sensible sign.
"""

from __future__ import annotations

import numpy as np
import open3d as o3d
import torch
import trimesh

from fieldstudio.config import SDFTaskConfig
from fieldstudio.data.meshes import BoxFrame
from fieldstudio.errors import FieldStudioError
from fieldstudio.control import check_cancel
from fieldstudio.field import value_and_gradient

# A mesh encloses a volume when at least this share of the pool's off-surface samples is clearly inside it (at
# least CLEAR_VOTE of the rays from the sample cross the surface an odd number of times). Next to an open sheet
# about half of the rays cross it, so its samples are never clearly inside (and their 5-vote labels are coin flips).
# Measured (60k pool, 32 rays): open square or curved strips 0 %, a sphere's cap below its equator cut open 12 %,
# its lowest 30 % 0.75 %, a closed plate 1/1000 as thick as it is long 5.7 %, a closed sphere 49 %.
MIN_INSIDE_SHARE = 1e-3
ORACLE_CHUNK = 20_000  # points per raycasting call: each holds the GIL (~30 ms on 2 cores; a window stays live)
CLEAR_VOTE = 0.9


class MeshOracle:
    """Exact unsigned distance and robust occupancy of a mesh (open3d raycasting scene).

    points : (n, 3) float in the mesh's frame.
    """

    def __init__(self, mesh: trimesh.Trimesh, watertight: bool):
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, dtype=np.float32)),
                                 o3d.core.Tensor(np.asarray(mesh.faces, dtype=np.uint32)))
        # Open meshes: a majority vote over several ray directions survives rays that slip through holes.
        self.votes = 1 if watertight else 5

    def occupancy(self, points: np.ndarray) -> np.ndarray:
        q = o3d.core.Tensor(np.ascontiguousarray(points, dtype=np.float32))
        return self.scene.compute_occupancy(q, nsamples=self.votes).numpy() > 0.5

    def inside_votes(self, points: np.ndarray, n_rays: int = 32, seed: int = 0) -> np.ndarray:
        """(n,) share of ``n_rays`` random rays from each point that cross the surface an odd number of times.

        1 inside a closed surface and 0 outside it; about 0.5 or less next to an open sheet, on either side.
        """
        rng = np.random.default_rng(seed)
        dirs = rng.normal(size=(len(points), n_rays, 3))
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        origins = np.broadcast_to(np.asarray(points)[:, None, :], dirs.shape)
        rays = np.concatenate([origins, dirs], axis=-1).reshape(-1, 6).astype(np.float32)
        hits = np.empty(len(rays), np.int64)
        for s in range(0, len(rays), ORACLE_CHUNK):  # each call holds the GIL: short ones keep a window live
            hits[s:s + ORACLE_CHUNK] = self.scene.count_intersections(o3d.core.Tensor(rays[s:s + ORACLE_CHUNK])).numpy()
        return (hits.reshape(len(points), n_rays) % 2).mean(axis=1)

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """(n,) float32, negative inside. Computed in chunks, so that a job's cancel is felt within a second."""
        out = np.empty(len(points), dtype=np.float32)
        for s in range(0, len(points), ORACLE_CHUNK):
            check_cancel()
            part = points[s:s + ORACLE_CHUNK]
            q = o3d.core.Tensor(np.ascontiguousarray(part, dtype=np.float32))
            dist = self.scene.compute_distance(q).numpy()
            out[s:s + ORACLE_CHUNK] = np.where(self.occupancy(part), -dist, dist)
        return out


class SDFSamples:
    """Fit a field to signed distances known at a pool of points: ``points`` (n, 3) and ``sdf`` (n,), both in the
    box frame ``frame`` (box units, negative inside).

    Each step draws ``batch_size`` pool entries; their RBF neighbours are precomputed in ``attach``. RBFs are
    placed by weighted k-means on the pool (``init_field``).
    """

    name = "sdf"
    # MAPE's floor when config.SDFTaskConfig.mape_eps is left out: torch-ngp's for distances given as grids or samples
    default_mape_eps = 0.01

    def __init__(self, points, sdf, cfg: SDFTaskConfig, frame: BoxFrame):
        self.cfg, self.frame = cfg, frame
        self.points = torch.as_tensor(points, dtype=torch.float32)
        self.sdf = torch.as_tensor(sdf, dtype=torch.float32)
        self.neighbours = None
        self.mape_eps = self.default_mape_eps if cfg.mape_eps is None else cfg.mape_eps

    def init_field(self, field, seed: int) -> None:
        """Place RBFs by weighted k-means with NeuRBF's weights 1/(|sdf| + 1e-9) (surface samples dominate)."""
        if not field.needs_points:
            return
        g = torch.Generator().manual_seed(seed)
        m = min(self.cfg.kmeans_points, len(self.points))
        n_rbf = getattr(getattr(field, "rbf", None), "n_rbf", 0)
        if m < n_rbf:
            raise FieldStudioError(f"k-means would place {n_rbf} RBFs on only {m} samples; raise [sdf] "
                                   f"kmeans_points (and pool_size) to at least {n_rbf}, or give fewer RBFs")
        pick = torch.randperm(len(self.points), generator=g)[:m]
        weights = 1.0 / (self.sdf[pick].abs() + 1e-9)
        field.init_from_points(self.points[pick], weights, seed=seed)

    def attach(self, field) -> None:
        """Precompute the K nearest RBFs of every pool point once (centres are frozen)."""
        idx = field.neighbours(self.points)
        self.neighbours = None if idx is None else idx.to(torch.int32)

    def batch(self, step: int, batch_size: int, generator: torch.Generator, progress: float = 0.0) -> dict:
        pick = torch.randint(len(self.points), (batch_size,), generator=generator)
        batch = {"x": self.points[pick], "sdf": self.sdf[pick]}
        if self.neighbours is not None:
            batch["rbf_idx"] = self.neighbours[pick].long()
        return batch

    def loss(self, field, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        gt = batch["sdf"]
        eik = self.cfg.eikonal_weight > 0
        values, grad = value_and_gradient(field, batch["x"], batch.get("rbf_idx"), eik)
        pred = values[-1]
        err = (pred - gt).abs()
        if self.cfg.loss in ("mape", "auto"):  # fieldstudio.run.fit resolves "auto" per field kind
            data = (err / (gt.abs() + self.mape_eps)).mean()
        else:
            data = err.mean()
        scalars = {"l1": err.mean().item()}
        loss = data
        if eik:
            eikonal = ((grad.norm(dim=-1) - 1.0) ** 2).mean()
            loss = loss + self.cfg.eikonal_weight * eikonal
            scalars["eikonal"] = eikonal.item()
        return loss, scalars


class SDFTask(SDFSamples):
    """Fit a field to the SDF of ``mesh`` (given in its world frame).

    The sample pool is drawn once (seeded): 1/2 on the surface (SDF 0), 3/8 surface + N(0, noise^2), 1/8 uniform
    in the box (NeuRBF's mix; ``uniform_fraction`` moves the split between the last two).
    """

    default_mape_eps = 0.03  # meshes: see config.SDFTaskConfig.mape_eps

    def __init__(self, mesh: trimesh.Trimesh, watertight: bool, cfg: SDFTaskConfig, seed: int = 0,
                 progress=None):
        self.cfg = cfg
        self.frame = BoxFrame.fit(np.asarray(mesh.vertices), cfg.normalize_extent)
        self.mesh = trimesh.Trimesh(self.frame.to_box(np.asarray(mesh.vertices)), mesh.faces, process=False)
        self.oracle = MeshOracle(self.mesh, watertight)
        rng = np.random.default_rng(seed)
        n = cfg.pool_size
        n_unif = int(round(n * cfg.uniform_fraction))
        n_surf = n // 2
        n_near = n - n_surf - n_unif
        surf, _ = trimesh.sample.sample_surface(self.mesh, n_surf + n_near, seed=int(rng.integers(2**31)))
        near = surf[n_surf:] + rng.normal(0.0, cfg.surface_noise, size=(n_near, 3))
        unif = rng.uniform(-1.0, 1.0, size=(n_unif, 3))
        off = np.concatenate([near, unif]).astype(np.float32)
        self.inside_share = self._inside_share(off, seed)
        if self.inside_share < MIN_INSIDE_SHARE:
            name = mesh.metadata.get("file_name", "the mesh")
            raise FieldStudioError(
                f"{name} encloses no volume: {100 * self.inside_share:.2g} % of the samples around it are inside "
                "(it is an open sheet or relief, or its holes are too large); a signed distance field needs a "
                "closed or nearly closed surface, so close the mesh (fill its holes) or give a solid's surface")
        sdf_off = self.oracle.signed_distance(off)
        super().__init__(torch.from_numpy(np.concatenate([surf[:n_surf].astype(np.float32), off])),
                         torch.from_numpy(np.concatenate([np.zeros(n_surf, np.float32), sdf_off])), cfg, self.frame)
        self.n_surface = n_surf  # the pool's first n_surf entries lie on the surface
        self.triangles = torch.as_tensor(np.array(self.mesh.triangles, dtype=np.float32))  # (F, 3, 3), box frame
        area_cdf = np.cumsum(np.asarray(self.mesh.area_faces, dtype=np.float64))
        self.area_cdf = torch.from_numpy(area_cdf / area_cdf[-1])
        self.surface0 = self.points[:n_surf].clone()
        self.seed, self.surface_epoch, self.field = seed, 0, None

    def attach(self, field) -> None:
        super().attach(field)
        self.field = field  # redrawn surface points need their RBF neighbours

    def surface_points(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, 3) points drawn uniformly by area on the mesh's surface (box frame)."""
        u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
        face = torch.searchsorted(self.area_cdf, u[:, 0].contiguous()).clamp_(max=len(self.triangles) - 1)
        a, b = u[:, 1:2], u[:, 2:3]
        flip = (a + b) > 1.0  # fold the unit square onto the triangle a + b <= 1
        a, b = torch.where(flip, 1.0 - a, a).float(), torch.where(flip, 1.0 - b, b).float()
        t = self.triangles[face]
        return t[:, 0] + a * (t[:, 1] - t[:, 0]) + b * (t[:, 2] - t[:, 0])

    def batch(self, step: int, batch_size: int, generator: torch.Generator, progress: float = 0.0) -> dict:
        if self.cfg.surface_redraw > 0:
            epoch = int(step * batch_size // (self.cfg.surface_redraw * len(self.points)))
            if epoch != self.surface_epoch:
                self._redraw_surface(epoch)
        return super().batch(step, batch_size, generator, progress)

    def _redraw_surface(self, epoch: int) -> None:
        """Replace the pool's surface half with points drawn for ``epoch`` (epoch 0: the pool as built), and their
        RBF neighbours. A function of the seed and the epoch alone, so a resumed run trains on the same points."""
        if epoch == 0:
            pts = self.surface0
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            pts = self.surface_points(self.n_surface, g)
        self.points[:self.n_surface] = pts
        if self.neighbours is not None:
            self.neighbours[:self.n_surface] = self.field.neighbours(pts).to(torch.int32)
        self.surface_epoch = epoch

    def _inside_share(self, off: np.ndarray, seed: int, n_check: int = 20_000) -> float:
        """Share of (up to ``n_check`` of) the off-surface samples that are clearly inside the mesh."""
        rng = np.random.default_rng([seed, 1])  # its own stream: the pool does not depend on the check
        pick = rng.choice(len(off), size=min(n_check, len(off)), replace=False)
        return float((self.oracle.inside_votes(off[pick], seed=seed) >= CLEAR_VOTE).mean())
