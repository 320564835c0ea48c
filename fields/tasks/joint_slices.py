"""joint_slices.py
===============
Several labels of one cross-section input in one field, trained once: the field has an output per class
(background first, then one per label) and is trained with softmax cross-entropy, so every point belongs to exactly
one label and neighbouring labels share their boundary (label maps tile the plane; Abdomen.csl's organs touch).

Sampling is the single-label task's (tasks/slices.py, OReX's hierarchy) over every label's loops at once: points
offset across each contour edge and on circles around each vertex take the class of the label whose loops hold them
(even-odd rule per label), the edge points half the class on either side, plane noise its class, and points on the
convex hull of all contours are background. Each label also gets points on and beyond its own padded hull that are
"not this label" (-log(1 - p_label)): the single-label task's bound, which keeps a label from growing far from its
contours and lets each label be meshed in a box around its own contours.

Labels that overlap (RTSTRUCT: a body outline around the organs, a target inside an organ) cannot be one class per
point: ``OverlappingLabels`` says so, and the run fits them one after another instead (fieldstudio.run).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fieldstudio.config import SlicesTaskConfig
from fieldstudio.control import check_cancel
from fieldstudio.data.cross_sections import CrossSections, Plane, box_frame, inside_by_label_2d
from fieldstudio.errors import FieldStudioError
from fieldstudio.tasks.slices import PaddedHull, SlicesTask, loop_samples, plane_noise, to_box

OVERLAP_TOL = 0.01  # share of the labelled plane samples inside two labels at once beyond which labels overlap


class OverlappingLabels(FieldStudioError):
    """The labels' contours overlap, so one class per point cannot describe them."""


@dataclass
class LabelBox:
    """Where label ``channel`` (1..L) lives in the field box: the cube its mesh is extracted in."""

    label: int
    channel: int
    lo: np.ndarray   # (3,) box coordinates of the cube's low corner
    side: float      # the cube's side, box units


def _plane_samples(plane: Plane, labels: list[int], radius: float, n: int, n_noise: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(m, 3) box points on ``plane``, their (m, 2) class pairs (0 background, i + 1 for ``labels[i]``; the two
    differ only on contour edges, which are half one class, half the other), and how many labelled samples fall
    inside two labels at once, out of how many inside any."""
    edges, plus, minus, free = [], [], [], []
    for on_edge, up, down, circle in loop_samples(plane, radius, n, rng):
        edges.append(on_edge)
        plus.append(up)
        minus.append(down)
        free.append(circle)
    free.append(plane_noise(plane, n_noise, rng))
    # Noise around each label's own loops too, as a fit of that label alone draws it (in its own box): a small
    # label would otherwise get a sliver of the plane's noise (a box beside a sphere: 2 % of the samples).
    for label in {lp.label for lp in plane.loops}:
        q = plane.to_2d(np.concatenate([lp.points for lp in plane.loops if lp.label == label]))
        lo, hi = q.min(axis=0), q.max(axis=0)
        half = 0.75 * (hi - lo).max()
        free.append((lo + hi) / 2 + rng.uniform(-half, half, size=(n_noise // 2, 2)))
    pts2d = np.concatenate(plus + minus + free)  # the edges' +r points, their -r points in the same order, the rest
    inside = inside_by_label_2d(plane, pts2d, labels)
    hits = inside.sum(axis=1)
    cls = np.where(hits > 0, inside.argmax(axis=1) + 1, 0)
    n_edge = sum(len(e) for e in edges)
    pair_free = np.stack([cls, cls], axis=1)
    pair_edge = np.stack([cls[:n_edge], cls[n_edge:2 * n_edge]], axis=1)
    edge2d = np.concatenate(edges) if edges else np.zeros((0, 2))
    pts = np.concatenate([plane.to_3d(pts2d), plane.to_3d(edge2d)])
    pairs = np.concatenate([pair_free, pair_edge])
    keep = np.abs(pts).max(axis=1) <= 1.0
    return pts[keep], pairs[keep], int((hits > 1).sum()), int((hits > 0).sum())


class JointSlicesTask(SlicesTask):
    """Fit L + 1 class logits (background, then ``labels`` in order) to multi-label cross-sections given in their
    world frame. ``batch`` is the single-label task's; ``y`` holds (a, b, not_k) per point: the two classes of the
    target (equal off edges), or a = b = -1 and the class the point is NOT in (padded-hull points of one label)."""

    def __init__(self, cs: CrossSections, labels: list[int], cfg: SlicesTaskConfig, seed: int = 0,
                 names: dict[int, str] | None = None):
        if len(labels) < 2:
            raise FieldStudioError("a joint fit needs two or more labels")
        self.cfg = cfg
        self.labels = list(labels)
        cs = cs.select(self.labels)
        self.frame = box_frame(cs, extent=0.9)
        self.cs = to_box(cs, self.frame)
        rng = np.random.default_rng(seed)
        padded_hull = PaddedHull(self.cs, cfg.hull_margin)
        label_hulls = [PaddedHull(self.cs.select(lab), cfg.hull_margin) for lab in self.labels]
        self.boxes = [self._label_box(h, lab, i + 1) for i, (h, lab) in enumerate(zip(label_hulls, self.labels))]
        self.levels = []
        for exp, n in zip(cfg.radius_exponents, cfg.samples_per_edge):
            check_cancel()
            parts = [_plane_samples(p, self.labels, 0.5**exp, n, cfg.white_noise, rng) for p in self.cs.planes]
            both, inside = sum(p[2] for p in parts), sum(p[3] for p in parts)
            if both > OVERLAP_TOL * max(inside, 1):
                raise OverlappingLabels(self._overlap_message(names or {}))
            hull = padded_hull.samples(cfg.hull_points, rng)
            xs = [p[0] for p in parts] + [hull]
            ys = [np.concatenate([p[1], np.full((len(p[1]), 1), -1)], axis=1) for p in parts]
            ys.append(np.tile([0, 0, -1], (len(hull), 1)))
            per_label = max(cfg.hull_points // len(self.labels), 1024)
            for i, h in enumerate(label_hulls):
                not_k = h.samples(per_label, rng)
                xs.append(not_k)
                ys.append(np.tile([-1, -1, i + 1], (len(not_k), 1)))
            x = np.concatenate(xs).astype(np.float32)
            self.levels.append((torch.from_numpy(x), torch.from_numpy(np.concatenate(ys).astype(np.int64))))
        self.strata = [_strata(y) for _, y in self.levels]
        self.prior = (torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64))  # no slab prior here
        weights = np.asarray(cfg.level_weights, dtype=np.float64)
        self.level_ends = np.cumsum(weights) / weights.sum()
        self.neighbours = None

    def _label_box(self, hull: PaddedHull, label: int, channel: int) -> LabelBox:
        lo, hi = hull.mesh.bounds
        lo = hull.centre + (1.0 + hull.margin) * (lo - hull.centre)
        hi = hull.centre + (1.0 + hull.margin) * (hi - hull.centre)
        side = float(min((hi - lo).max() * 1.1, 2.0))  # a cube, with room for the mesher's outer cells
        lo = np.clip((lo + hi) / 2 - side / 2, -1.0, 1.0 - side)
        return LabelBox(label, channel, lo, side)

    def _overlap_message(self, names: dict[int, str]) -> str:
        counts = np.zeros((len(self.labels), len(self.labels)), dtype=np.int64)
        rng = np.random.default_rng(0)
        for p in self.cs.planes:
            if p.loops:
                pts = np.concatenate([p.to_2d(lp.points).mean(axis=0, keepdims=True) for lp in p.loops]
                                     + [p.to_2d(p.vertices()[rng.integers(len(p.vertices()), size=256)])])
                inside = inside_by_label_2d(p, pts, self.labels).astype(np.int64)
                counts += inside.T @ inside
        np.fill_diagonal(counts, 0)
        i, j = np.unravel_index(int(np.argmax(counts)), counts.shape)
        a, b = (names.get(self.labels[k], f"label {self.labels[k]}") for k in (i, j))
        return (f"{a} and {b} overlap (a point can be in one label only in a joint fit); fitting the labels one by "
                "one instead")

    def batch(self, step: int, batch_size: int, generator: torch.Generator, progress: float = 0.0) -> dict:
        """Half the single-label task's batch (uniform over the window's points), half drawn class by class:
        a class picked uniformly, then one of its points, so that a small label gets as many points per step as
        the largest (a 4 mm organ beside a 40 mm one got none in 250 steps otherwise)."""
        n_even = batch_size // 2
        batch = super().batch(step, batch_size - n_even, generator, progress)
        _, used = self.window(progress)
        which = torch.randint(len(used), (n_even,), generator=generator)
        xs, ys, idx = [batch["x"]], [batch["y"]], [batch["rbf_idx"]] if "rbf_idx" in batch else []
        for k, lvl in enumerate(used):
            m = int((which == k).sum())
            order, starts, counts = self.strata[lvl]
            cls = torch.randint(len(counts), (m,), generator=generator)
            pos = starts[cls] + (torch.rand(m, generator=generator) * counts[cls]).long().clamp_max(counts[cls] - 1)
            pick = order[pos]
            xs.append(self.levels[lvl][0][pick])
            ys.append(self.levels[lvl][1][pick])
            if self.neighbours is not None:
                idx.append(self.neighbours[lvl][pick].long())
        batch.update(x=torch.cat(xs), y=torch.cat(ys))
        if idx:
            batch["rbf_idx"] = torch.cat(idx)
        return batch

    def init_field(self, field, seed: int) -> None:
        """RBF centres by k-means over the samples, edge points weighted most (as the single-label task)."""
        if not field.needs_points:
            return
        x, y = self.levels[-1]
        weights = torch.where(y[:, 0] != y[:, 1], 4.0, 1.0)
        field.init_from_points(x, weights, seed=seed)

    def loss(self, field, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        y = batch["y"]
        labelled = y[:, 0] >= 0
        a, b, not_k = y[:, 0].clamp_min(0), y[:, 1].clamp_min(0), y[:, 2].clamp_min(0)
        outs = field.forward_all(batch["x"], batch.get("rbf_idx"))
        total = 0.0
        for z in outs:  # deep supervision, as the single-label task
            logp = torch.log_softmax(z, dim=-1)
            ce = -0.5 * (logp.gather(1, a[:, None]) + logp.gather(1, b[:, None]))[:, 0]
            # -log(1 - p_k), stable for p_k near 0 and 1
            p_k = logp.gather(1, not_k[:, None])[:, 0].clamp_max(-1e-6)
            away = -torch.log(-torch.expm1(p_k))
            total = total + torch.where(labelled, ce, away).mean()
        loss = total / len(outs)
        return loss, {"ce": loss.item(), "level": batch["level"]}


def _strata(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A level's points grouped by the class they are about (the larger of a point's two classes, or the class it
    is not in): (point indices sorted by class, each present class's first position, its count)."""
    about = torch.where(y[:, 0] >= 0, torch.maximum(y[:, 0], y[:, 1]), y[:, 2])
    order = torch.argsort(about, stable=True)
    _, counts = torch.unique_consecutive(about[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    return order, starts, counts


def object_value(out: torch.Tensor, channel: int | None) -> torch.Tensor:
    """A joint field's outputs (N, L + 1) as one object's value, negative inside as every shape field:
    max over the other classes minus its own logit (``channel`` 1..L), or for ``None`` the union of all labels
    (background logit minus the best label's), which the live previews show."""
    if channel is None:
        return out[:, 0] - out[:, 1:].max(dim=1).values
    others = torch.cat([out[:, :channel], out[:, channel + 1:]], dim=1)
    return others.max(dim=1).values - out[:, channel]


__all__ = ["JointSlicesTask", "LabelBox", "OverlappingLabels", "object_value"]
