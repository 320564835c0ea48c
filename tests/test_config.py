import pytest

from fieldstudio.config import RunConfig, from_dict, load_run_config, save_toml, to_dict
from fieldstudio.errors import FieldStudioError
from fieldstudio.field import Field, count_params, preset, resolve_budget


def test_run_config_round_trips_through_toml(tmp_path):
    cfg = RunConfig(input="/data/bunny.obj")
    cfg.mesh.resolution = 128
    cfg.field = resolve_budget(preset("hybrid", "sdf", 200_000))
    cfg.train.time_budget = 42.5
    save_toml(cfg, tmp_path / "c.toml")
    back = load_run_config(tmp_path / "c.toml")
    assert back == cfg
    assert to_dict(back) == to_dict(cfg)


def test_none_values_come_back_as_defaults(tmp_path):
    cfg = RunConfig(input="x.obj")
    assert cfg.train.time_budget is None
    save_toml(cfg, tmp_path / "c.toml")
    assert "time_budget" not in (tmp_path / "c.toml").read_text()
    assert load_run_config(tmp_path / "c.toml").train.time_budget is None


def test_unknown_key_is_a_user_error():
    with pytest.raises(FieldStudioError, match="learning_rate"):
        from_dict(RunConfig, {"train": {"learning_rate": 1.0}})


def test_bad_toml_and_bad_values_are_user_errors(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[mesh]\nresolution = [")
    with pytest.raises(FieldStudioError, match="not valid TOML"):
        load_run_config(p)
    p.write_text('[field]\nkind = "octree"\n')
    with pytest.raises(FieldStudioError, match="octree"):
        load_run_config(p)


@pytest.mark.parametrize("kind", ["hybrid", "neurbf", "grid", "mlp"])
@pytest.mark.parametrize("budget", [60_000, 450_000])
def test_budget_is_filled_and_matches_the_built_field(kind, budget):
    cfg = resolve_budget(preset(kind, "sdf", budget))
    n = count_params(cfg)
    assert n <= budget
    # RBF counts are integral and the grid grows in powers of two; the MLP width is an integer.
    slack = {"hybrid": 0.01, "neurbf": 0.01, "mlp": 0.02, "grid": 0.1}[kind]
    assert n >= (1 - slack) * budget
    assert Field(cfg).param_count() == n


def test_hybrid_splits_budget_between_grid_and_rbfs():
    cfg = resolve_budget(preset("hybrid", "sdf", 450_000))
    assert isinstance(cfg.rbf.n_rbf, int) and cfg.rbf.n_rbf > 5000
    assert 2**12 <= 2**cfg.grid.log2_hashmap_size <= 2**15


def test_tiny_budget_is_a_user_error():
    with pytest.raises(FieldStudioError, match="raise --params"):
        resolve_budget(preset("hybrid", "sdf", 5_000))
