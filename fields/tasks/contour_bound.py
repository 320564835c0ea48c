"""contour_bound.py
================
The slab prior's regions (tasks/slab_prior.py) as a hard bound on the mesh, not as labels the field may ignore.

Trained with the prior's labels, a field still closes an ear just above its last contour (bunny, 10 planes: the
surface stopped at 0.24 gap where the labels said half a gap), and Hausdorff measures exactly such misses. Here
the meshed function is the field's value combined with signed distances to the regions the contours decide:

* ``inside``: ``min(field, g_in)``. ``g_in`` is negative in the inside cones (within half a gap of a plane, inside
  its loops by at least ``CONE_SLOPE`` times the height) and where both neighbouring planes are inside by the
  margin. The mesh then reaches at least as far as those regions, so a part seen on a plane reaches at least a
  cone's height beyond it;
* ``cap_slope`` (below the cone's 2): over a loop that the plane across the gap no longer shows (a part ending
  between the planes) the inside cone is steeper, so the part reaches nearly half a gap at its rim, stacking's bet;
* ``both``: also ``max(., -g_out)`` with the outside cones and the outside agreement, so no surface bulges out where
  both neighbours, or the nearer one within its cone, say outside; only when every plane belongs to one parallel
  stack (planes in other directions may show what a stack's gaps hide).

Where the field already agrees nothing changes; where it does not, the surface has a crease on the region's
boundary. Each plane's 2-D signed distance is a raster (scanline even-odd fill, then Euclidean distance transforms)
in a frame shared by its stack, read bilinearly, so the bound is differentiable (the vertices' Newton refinement
works on it) and costs a few gathers per point. Coordinates are the field box's; values are distance-like (the mesh
plan's scaled field is). Off by default: on five parallel inputs it lowered Hausdorff by 15-18 % on two and raised
NAE by 0.5-1.9 degrees on all (docs/benchmarks.md, "Session 17: the prior's regions as a hard bound").
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from fieldstudio.config import CONTOUR_BOUNDS
from fieldstudio.data.cross_sections import CrossSections, plane_basis
from fieldstudio.tasks.slab_prior import CONE_SLOPE, ending_loops, parallel_stacks

_FAR = 1e3  # the signed distance of a plane with no loops: outside everywhere
_MAX_CELLS = 1 << 24  # raster cells per stack and kind (64 MiB of float32)


def _even_odd_raster(loops2d: list[np.ndarray], lo: np.ndarray, pixel: float, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: pixel centres inside the loops by the even-odd rule (a scanline fill per row)."""
    h, w = shape
    a = np.concatenate(loops2d)
    b = np.concatenate([np.roll(lp, -1, axis=0) for lp in loops2d])
    ys = lo[1] + (np.arange(h) + 0.5) * pixel
    xs = lo[0] + (np.arange(w) + 0.5) * pixel
    out = np.zeros(shape, dtype=bool)
    # an edge crosses row y when its ends lie on either side (half-open, so a vertex on the row counts once)
    spans = (a[None, :, 1] <= ys[:, None]) != (b[None, :, 1] <= ys[:, None])
    for r in np.nonzero(spans.any(axis=1))[0]:
        e = spans[r]
        ta = (ys[r] - a[e, 1]) / (b[e, 1] - a[e, 1])
        cross = np.sort(a[e, 0] + ta * (b[e, 0] - a[e, 0]))
        out[r] = np.searchsorted(cross, xs) % 2 == 1
    return out


def _signed_distance_raster(inside: np.ndarray, pixel: float) -> np.ndarray:
    """Signed distance (negative inside) between pixel centres and the mask's boundary, within half a pixel."""
    if not inside.any():
        return np.full(inside.shape, _FAR, dtype=np.float32)
    out = ndimage.distance_transform_edt(~inside) - 0.5
    into = ndimage.distance_transform_edt(inside) - 0.5
    return (np.where(inside, -into, out) * pixel).astype(np.float32)


class _Stack:
    """One stack of parallel planes: their offsets along the normal and their signed-distance rasters."""

    def __init__(self, normal: np.ndarray, planes, pixel: float, caps: bool):
        self.normal = normal
        self.e1, self.e2 = plane_basis(normal)
        self.offsets = np.array([normal @ p.origin for p in planes])
        steps = np.diff(self.offsets)
        self.typical = float(np.median(steps[steps > 0])) if (steps > 0).any() else 0.0
        frame = np.stack([self.e1, self.e2])
        loops = [[lp.points @ frame.T for lp in p.loops] for p in planes]
        verts = np.concatenate([np.concatenate(ls) for ls in loops if ls])
        # padded by a gap: the outside cones read distances up to CONE_SLOPE x half a gap
        pad = max(self.typical, 4 * pixel)
        self.lo = verts.min(axis=0) - pad
        hi = verts.max(axis=0) + pad
        # coarser pixels for long stacks (a label map's every slice): at most _MAX_CELLS raster cells per stack
        pixel = max(pixel, float(np.sqrt(np.prod(hi - self.lo) * len(planes) / _MAX_CELLS)))
        self.pixel = pixel
        self.shape = tuple(int(np.ceil(s)) for s in (hi - self.lo)[::-1] / pixel)  # (rows along e2, cols along e1)
        self.rasters = self._distances(loops, even_odd=True)
        self.has_loops = torch.tensor([bool(ls) for ls in loops])
        self.caps_up = self.caps_down = None
        if caps:  # the union of each plane's ending loops towards the next plane and towards the previous one
            def ending(a, b):
                return [lp.points @ frame.T for lp in ending_loops(a, b)]
            self.caps_up = self._distances([ending(a, b) for a, b in zip(planes, planes[1:])] + [[]], even_odd=False)
            self.caps_down = self._distances([[]] + [ending(b, a) for a, b in zip(planes, planes[1:])], even_odd=False)

    def _distances(self, loops: list[list[np.ndarray]], even_odd: bool) -> torch.Tensor:
        """(P, H * W) signed distances to each plane's loops (even-odd rule, or the union of the loops)."""
        out = []
        for ls in loops:
            if not ls:
                out.append(np.full(self.shape, _FAR, dtype=np.float32))
                continue
            if even_odd:
                inside = _even_odd_raster(ls, self.lo, self.pixel, self.shape)
            else:
                inside = np.logical_or.reduce([_even_odd_raster([lp], self.lo, self.pixel, self.shape) for lp in ls])
            out.append(_signed_distance_raster(inside, self.pixel))
        return torch.from_numpy(np.stack(out).reshape(len(loops), -1))

    def distance(self, plane: torch.Tensor, uv: torch.Tensor, rasters: torch.Tensor | None = None) -> torch.Tensor:
        """Bilinear read of plane ``plane[i]``'s raster (of ``rasters``, default the loops') at ``uv[i]`` (clamped
        to the raster's border)."""
        h, w = self.shape
        f = (uv - torch.as_tensor(self.lo, dtype=uv.dtype)) / self.pixel - 0.5
        fx, fy = f[:, 0].clamp(0, w - 1), f[:, 1].clamp(0, h - 1)
        x0, y0 = fx.detach().floor().clamp(max=w - 2).long(), fy.detach().floor().clamp(max=h - 2).long()
        tx, ty = fx - x0, fy - y0
        r = self.rasters if rasters is None else rasters

        def at(dy, dx):
            return r[plane, (y0 + dy) * w + x0 + dx]

        return ((at(0, 0) * (1 - tx) + at(0, 1) * tx) * (1 - ty) + (at(1, 0) * (1 - tx) + at(1, 1) * tx) * ty)


class ContourBound:
    """Signed distances to the regions that neighbouring parallel contours decide (see the module docstring)."""

    def __init__(self, cs: CrossSections, mode: str = "inside", margin: float = 0.2, cap_slope: float = CONE_SLOPE,
                 pixel: float = 1.0 / 256):
        if mode not in CONTOUR_BOUNDS[1:]:
            raise ValueError(f"mode must be one of {CONTOUR_BOUNDS[1:]}")
        self.mode, self.margin, self.cap_slope = mode, margin, cap_slope
        caps = cap_slope < CONE_SLOPE
        stacks = parallel_stacks(cs)
        self.stacks = [_Stack(n, planes, pixel, caps) for n, planes in stacks
                       if len(planes) > 1 and any(p.loops for p in planes)]
        # The outside regions speak for one stack only: with planes in other directions they would cut away what
        # those planes show (bunny, 10 orthogonal planes: a plane's contour IoU fell to 0 and Hausdorff doubled).
        self.outside = mode == "both" and len(stacks) == 1

    def __bool__(self) -> bool:
        return bool(self.stacks)

    def regions(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(g_in, g_out): each (n,), negative inside the forced-inside / forced-outside regions (+inf: none)."""
        g_in = torch.full((len(x),), float("inf"), dtype=x.dtype)
        g_out = g_in.clone()
        s = CONE_SLOPE
        norm = (1 + s * s) ** 0.5
        for st in self.stacks:
            off = torch.as_tensor(st.offsets, dtype=x.dtype)
            n, e = (torch.as_tensor(v, dtype=x.dtype) for v in (st.normal, np.stack([st.e1, st.e2])))
            height = x @ n
            uv = x @ e.T
            below = torch.searchsorted(off, height.contiguous(), right=True) - 1  # plane at or below, -1: none
            last = len(off) - 1
            a, b = below.clamp(0, last), (below + 1).clamp(0, last)
            has_a, has_b = below >= 0, below < last
            gap = torch.where(has_a & has_b, off[b] - off[a], torch.full_like(height, st.typical))
            h_a, h_b = height - off[a], off[b] - height
            d_a, d_b = st.distance(a, uv), st.distance(b, uv)
            big = torch.full_like(height, float("inf"))
            # inside cones, each on its own side of its plane, up to half a gap (beyond the end planes as well)
            cone_a = torch.where(has_a, torch.maximum(h_a - gap / 2, (d_a + s * h_a) / norm), big)
            cone_b = torch.where(has_b, torch.maximum(h_b - gap / 2, (d_b + s * h_b) / norm), big)
            both = has_a & has_b
            m = self.margin * gap
            agree = torch.where(both, torch.maximum(d_a, d_b) + m, big)
            g_in = torch.minimum(g_in, torch.minimum(torch.minimum(cone_a, cone_b), agree))
            if st.caps_up is not None:
                # caps: a steeper cone over the loops that the plane across the gap no longer shows
                c = self.cap_slope
                c_norm = (1 + c * c) ** 0.5
                e_a, e_b = st.distance(a, uv, st.caps_up), st.distance(b, uv, st.caps_down)
                cap_a = torch.where(both, torch.maximum(h_a - gap / 2, (e_a + c * h_a) / c_norm), big)
                cap_b = torch.where(both, torch.maximum(h_b - gap / 2, (e_b + c * h_b) / c_norm), big)
                g_in = torch.minimum(g_in, torch.minimum(cap_a, cap_b))
            if self.outside:
                # the mirror: outside cones, and outside both by the margin (two empty planes say nothing)
                seen = both & (st.has_loops[a] | st.has_loops[b])
                out_a = torch.where(seen, torch.maximum(h_a - gap / 2, (s * h_a - d_a) / norm), big)
                out_b = torch.where(seen, torch.maximum(h_b - gap / 2, (s * h_b - d_b) / norm), big)
                apart = torch.where(seen, m - torch.minimum(d_a, d_b), big)
                g_out = torch.minimum(g_out, torch.minimum(torch.minimum(out_a, out_b), apart))
        return g_in, g_out

    def bound(self, fn):
        """``fn`` (box points -> distance-like values, negative inside) with the regions imposed."""
        def bounded(x: torch.Tensor) -> torch.Tensor:
            value = fn(x)
            g_in, g_out = self.regions(x.to(value.device, value.dtype))
            value = torch.minimum(value, g_in)
            return torch.maximum(value, -g_out) if self.outside else value
        return bounded


__all__ = ["ContourBound"]
