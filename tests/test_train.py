"""The training loop: determinism, resume after interruption, cancel, divergence."""

import pytest
import torch

from fieldstudio.config import TrainConfig
from fieldstudio.errors import FieldStudioError
from fieldstudio.field import Field, preset, resolve_budget
from fieldstudio.train import Callback, train


class QuadraticTask:
    """Fit f(x) = x0^2 - x1 on random 2-D points: cheap, deterministic, uses RBF init and neighbour tables."""

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.points = torch.rand(4000, 2, generator=g) * 2 - 1
        self.neighbours = None

    def init_field(self, field, seed):
        field.init_from_points(self.points, None, seed=seed)

    def attach(self, field):
        self.neighbours = field.neighbours(self.points)

    def batch(self, step, batch_size, generator, progress=0.0):
        pick = torch.randint(len(self.points), (batch_size,), generator=generator)
        x = self.points[pick]
        return {"x": x, "y": x[:, :1] ** 2 - x[:, 1:], "idx": self.neighbours[pick]}

    def loss(self, field, batch):
        err = ((field(batch["x"], batch["idx"]) - batch["y"]) ** 2).mean()
        return err, {"mse": err.item()}


def make_field(seed=0):
    cfg = preset("hybrid", "image", 20_000, dim=2)
    cfg.grid.log2_hashmap_size, cfg.grid.n_levels = 10, 4
    return Field(resolve_budget(cfg), seed=seed)


CFG = TrainConfig(steps=60, batch_size=256, lr=1e-2, lr_decoder=1e-3, seed=3, checkpoint_every_s=1e9)


def test_loss_decreases():
    f = make_field()
    state = train(f, QuadraticTask(), CFG)
    assert state.done and state.step == 60
    assert state.history[-1]["loss"] < 0.2 * state.history[0]["loss"]


def test_deterministic_for_a_fixed_seed():
    a, b = make_field(), make_field()
    train(a, QuadraticTask(), CFG)
    train(b, QuadraticTask(), CFG)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


class InterruptAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step(self, state):
        if state.step == self.step:
            raise KeyboardInterrupt


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path):
    ref = make_field()
    train(ref, QuadraticTask(), CFG)

    ckpt = tmp_path / "checkpoint.pt"
    first = make_field()
    state = train(first, QuadraticTask(), CFG, [InterruptAt(25)], ckpt)
    assert state.interrupted and state.step == 25 and ckpt.exists()

    # A fresh process would build a fresh (differently initialised) field; the checkpoint must win.
    second = make_field(seed=99)
    state = train(second, QuadraticTask(), CFG, [], ckpt)
    assert state.done and state.step == 60
    for (name, pa), pb in zip(ref.state_dict().items(), second.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_cancel_stops_at_a_step_boundary(tmp_path):
    class Cancel(Callback):
        def on_step(self, state):
            state.stop = state.step >= 10

    state = train(make_field(), QuadraticTask(), CFG, [Cancel()], tmp_path / "c.pt")
    assert state.step == 10 and not state.done


def test_time_budget_is_honoured():
    cfg = TrainConfig(**{**CFG.__dict__, "steps": 10**6, "time_budget": 0.5})
    state = train(make_field(), QuadraticTask(), cfg)
    assert 0.5 <= state.elapsed < 2.0 and state.step < 10**6


def test_divergence_is_a_user_error():
    class NaNTask(QuadraticTask):
        def loss(self, field, batch):
            return field(batch["x"], batch["idx"]).sum() * float("nan"), {}

    with pytest.raises(FieldStudioError, match="diverged"):
        train(make_field(), NaNTask(), CFG)


def test_periodic_callback_previews_during_and_after_training():
    from fieldstudio.train import Periodic

    seen = []
    cfg = TrainConfig(**{**CFG.__dict__, "steps": 10**6, "time_budget": 0.6})
    field = make_field()
    probe = torch.zeros(1, 2)
    train(field, QuadraticTask(), cfg, [Periodic(0.2, lambda s: seen.append((s.step, field(probe).item())))])
    assert len(seen) >= 3
    steps = [s for s, _ in seen]
    assert steps == sorted(steps) and steps[-1] > steps[0]
    assert len({v for _, v in seen}) > 1  # the preview sees the field change


@pytest.mark.parametrize("steps", [None, 10**6])
def test_learning_rate_decays_over_the_time_budget(steps):
    """The schedule follows the fraction of the budget used: a step count never reached does not stop the decay."""
    cfg = TrainConfig(**{**CFG.__dict__, "steps": steps, "time_budget": 0.6, "lr_final_ratio": 0.1})
    state = train(make_field(), QuadraticTask(), cfg)
    assert state.ended_by == "time_budget" and state.done
    assert state.lr <= 0.2 * cfg.lr  # the cosine ends at 10 % of the base rate as the budget runs out


def test_fields_built_with_one_seed_are_equal_and_leave_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    a, b, c = make_field(1), make_field(1), make_field(2)
    assert torch.equal(torch.rand(4), expected)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.decoder.layers[0].weight, c.decoder.layers[0].weight)
