import pytest

from vlaforge.cli import parse
from vlaforge.config import ConfigError, apply_overrides, from_dict, load_yaml, save_yaml
from vlaforge.train.config import TrainConfig


def test_overrides_types_and_nesting():
    cfg = apply_overrides(TrainConfig(), ["steps=7", "policy.d_model=64", "optim.lr=1e-3", "policy.vision_channels=[8,16]"])
    assert cfg.steps == 7 and cfg.policy.d_model == 64 and cfg.optim.lr == 1e-3
    assert cfg.policy.vision_channels == [8, 16]
    assert TrainConfig().steps != 7  # defaults untouched


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'policy.width'.*d_model"):
        apply_overrides(TrainConfig(), ["policy.width=3"])
    with pytest.raises(ConfigError, match="unknown config key 'bogus'"):
        from_dict(TrainConfig, {"bogus": 1})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="'steps' expects an integer"):
        apply_overrides(TrainConfig(), ["steps=many"])


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(TrainConfig(), ["steps=11", "policy.n_layers=2"])
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(TrainConfig, tmp_path / "c.yaml") == cfg


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(TrainConfig, p)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(TrainConfig, tmp_path / "missing.yaml")


def test_cli_parse(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("steps: 5\npolicy:\n  n_heads: 2\n")
    cfg = parse("train", ["--config", str(p), "--policy.n_heads=8", "--resume"])
    assert cfg.steps == 5 and cfg.policy.n_heads == 8 and cfg.resume is True


def test_help_shows_the_defaults_a_parent_sets_for_its_sections():
    from vlaforge.config import describe_fields
    from vlaforge.eval.config import QuickstartConfig
    from vlaforge.safety.config import SafeRLConfig

    quick = {key: default for key, _, default, _ in describe_fields(QuickstartConfig)}
    assert quick["collect.episodes_per_task"] == QuickstartConfig().collect.episodes_per_task == 150
    rl = {key: default for key, _, default, _ in describe_fields(SafeRLConfig)}
    assert rl["safety.max_speed"] == 0.25 and rl["cost_limit"] == 5.0


def test_a_partial_section_keeps_the_parents_defaults_for_it():
    from vlaforge.eval.config import QuickstartConfig

    full = QuickstartConfig()
    assert full.train.grounding_scenes > 0 and full.collect.episodes_per_task == 150  # set by the parent's factories
    part = from_dict(QuickstartConfig, {"train": {"steps": 3, "policy": {"d_model": 32}}, "collect": {"workers": 1}})
    assert (part.train.steps, part.train.policy.d_model, part.collect.workers) == (3, 32, 1)
    assert part.train.grounding_scenes == full.train.grounding_scenes and part.train.optim.lr == full.train.optim.lr
    assert part.collect.episodes_per_task == 150 and part.train.policy.n_layers == full.train.policy.n_layers
