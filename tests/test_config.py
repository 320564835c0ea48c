import pytest

from fieldstudio.config import RBF_KERNELS, RUN_CONFIG_HEADER, RunConfig, from_dict, load_run_config, save_toml, to_dict, validate
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
    # a run's copy says that editing it changes nothing, and still reads back
    save_toml(cfg, tmp_path / "run.toml", RUN_CONFIG_HEADER)
    assert (tmp_path / "run.toml").read_text().startswith("# ") and "checkpoint.pt" in RUN_CONFIG_HEADER
    assert load_run_config(tmp_path / "run.toml") == cfg


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


# ------------------------------------------------------------------ types and ranges of config values


def _load(tmp_path, text):
    path = tmp_path / "my.toml"
    path.write_text(text)
    return path, load_run_config(path)


def test_wrong_type_is_a_one_line_error_naming_file_table_and_key(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('[train]\nsteps = "abc"\n')
    with pytest.raises(FieldStudioError) as info:  # not a TypeError later on
        load_run_config(path)
    msg = str(info.value)
    assert msg == f'config {path}: [train] steps must be an integer, got "abc"'
    assert "\n" not in msg


def test_bool_is_not_an_integer_and_int_is_a_float(tmp_path):
    with pytest.raises(FieldStudioError, match=r"\[field.grid\] n_levels must be an integer, got true"):
        _load(tmp_path, "[field.grid]\nn_levels = true\n")
    with pytest.raises(FieldStudioError, match=r"\[field.rbf\] normalize must be true or false, got 1"):
        _load(tmp_path, "[field.rbf]\nnormalize = 1\n")
    _, cfg = _load(tmp_path, "[train]\nlr = 1\ntime_budget = 30\n")
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert isinstance(cfg.train.time_budget, float)


def test_unions_take_each_of_their_types(tmp_path):
    _, cfg = _load(tmp_path, '[field]\nparams = 50000\n[field.rbf]\nn_rbf = 300\n[field.fourier]\nsigma = "auto"\n')
    assert cfg.field.params == 50000 and cfg.field.rbf.n_rbf == 300 and cfg.field.fourier.sigma == "auto"
    _, cfg = _load(tmp_path, "[field.fourier]\nsigma = 3\n")
    assert cfg.field.fourier.sigma == 3.0 and isinstance(cfg.field.fourier.sigma, float)
    with pytest.raises(FieldStudioError, match=r"\[field.rbf\] n_rbf must be an integer or a string, got 1.5"):
        _load(tmp_path, "[field.rbf]\nn_rbf = 1.5\n")
    with pytest.raises(FieldStudioError, match=r"\[field.rbf\] n_rbf must be an integer >= 1 or \"auto\""):
        _load(tmp_path, '[field.rbf]\nn_rbf = "many"\n')
    with pytest.raises(FieldStudioError, match=r"\[train\] time_budget must be a finite number, got NaN"):
        _load(tmp_path, "[train]\ntime_budget = nan\n")
    with pytest.raises(FieldStudioError, match=r"\[slices\] radius_exponents must be a list, got 4"):
        _load(tmp_path, "[slices]\nradius_exponents = 4\n")
    with pytest.raises(FieldStudioError, match=r"\[train\] must be a table, got 5"):
        _load(tmp_path, "train = 5\n")


def test_unknown_top_level_key_names_the_top_level(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text("stepz = 10\n")
    with pytest.raises(FieldStudioError) as info:
        load_run_config(path)
    msg = str(info.value)
    assert msg.startswith(f"config {path}: unknown key(s) ['stepz'] at the top level; known keys are [")
    assert "in ;" not in msg and "'train'" in msg
    with pytest.raises(FieldStudioError, match=r"unknown key\(s\) \['stepz'\] in \[train\]"):
        _load(tmp_path, "[train]\nstepz = 10\n")


@pytest.mark.parametrize("text, message", [
    ("[train]\nlr = -1\n", r"\[train\] lr must be > 0, got -1"),
    ("[train]\nlr_final_ratio = 1.5\n", r"\[train\] lr_final_ratio must be in \(0, 1\], got 1.5"),
    ("[train]\nsteps = 0\n", r"\[train\] steps \(--steps\) must be >= 1"),
    ("[train]\ntime_budget = 0\n", r"\[train\] time_budget \(--time-budget\) must be > 0"),
    ("[train]\nthreads = 0\n", r"\[train\] threads must be >= 1"),
    ("[train]\nseed = -3\n", r"\[train\] seed \(--seed\) must be >= 0"),
    ("[field.grid]\nn_features = 17\n", r"\[field.grid\] n_features must be 1..16"),
    ("[field.grid]\nbase_resolution = 64\nmax_resolution = 32\n", r"\[field.grid\] base_resolution must be 1..max"),
    ("[field.rbf]\nk = 65\n", r"\[field.rbf\] k must be 1..64"),
    ("[field.rbf]\nkernel = \"box\"\n", r"\[field.rbf\] kernel must be one of nlin_s, ivq_a, gauss_a"),
    ("[field.rbf]\nfreq_min = 4.0\nfreq_max = 2.0\n", r"\[field.rbf\] freq_max must be >= freq_min \(4.0\)"),
    ("[field.decoder]\nn_hidden_layers = 0\n", r"\[field.decoder\] n_hidden_layers must be >= 1"),
    ("[sdf]\nsurface_noise = 0\n", r"\[sdf\] surface_noise must be > 0"),
    ("[slices]\nhinge_alpha = 0\n", r"\[slices\] hinge_alpha must be > 0"),
    ("[slices]\nsamples_per_edge = [2, 2, 3, 3, 4, 0]\n", r"\[slices\] samples_per_edge must be a list of integers"),
    ("[mesh]\nsmooth_iterations = -1\n", r"\[mesh\] smooth_iterations must be >= 0"),
    ("[mesh]\nresolution = 4\n", r"\[mesh\] resolution \(--resolution\) must be 8..2048"),
])
def test_values_out_of_range_are_refused_naming_the_key(tmp_path, text, message):
    with pytest.raises(FieldStudioError, match=message) as info:
        _load(tmp_path, text)
    assert str(info.value).startswith(f"config {tmp_path / 'my.toml'}: ")


def test_validate_checks_configs_built_in_code():
    cfg = RunConfig()
    assert validate(cfg) is cfg  # the defaults are valid; steps None means "no limit / run default"
    assert cfg.train.steps is None
    cfg.train.steps = 100
    validate(cfg)
    cfg.train.lr = 0.0
    with pytest.raises(FieldStudioError, match=r"^config: \[train\] lr must be > 0, got 0.0$"):
        validate(cfg)
    cfg.train.lr = 1e-3
    cfg.train.batch_size = "big"
    with pytest.raises(FieldStudioError, match=r"\[train\] batch_size must be an integer"):
        validate(cfg)


def test_rbf_kernels_match_the_rbf_layer():
    from fieldstudio.encoders.rbf import KERNELS

    assert RBF_KERNELS == KERNELS


def test_full_config_round_trips_after_checks(tmp_path):
    cfg = RunConfig(input="/data/shape.obj", task="slices")
    cfg.field = resolve_budget(preset("mlp", "slices", 40_000))
    cfg.train.steps, cfg.train.time_budget, cfg.train.threads, cfg.train.lr = 300, 12.5, 2, 2e-3
    cfg.slices.label, cfg.slices.every, cfg.slices.slice_offset = 3, 2, 1
    cfg.mesh.smooth_iterations = 2
    save_toml(cfg, tmp_path / "c.toml")
    back = load_run_config(tmp_path / "c.toml")
    assert back == cfg
    assert to_dict(back) == to_dict(cfg)
    # a run's copy says that editing it changes nothing, and still reads back
    save_toml(cfg, tmp_path / "run.toml", RUN_CONFIG_HEADER)
    assert (tmp_path / "run.toml").read_text().startswith("# ") and "checkpoint.pt" in RUN_CONFIG_HEADER
    assert load_run_config(tmp_path / "run.toml") == cfg
