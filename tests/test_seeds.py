"""Seeds as a first-class axis: one run per training seed, reported as mean, sd and a pooled interval."""

import json

import pytest
from helpers import write_dataset
from safetensors.numpy import load_file
from test_cli_end_to_end import TINY

from vlaforge.cli import main
from vlaforge.config import load_yaml
from vlaforge.eval.stats import seed_summary, wilson_interval
from vlaforge.models.config import PolicyConfig
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train, train_seeds


def test_seed_summary_on_known_counts():
    s = seed_summary([{"successes": 9, "episodes": 10}, {"successes": 7, "episodes": 10}, {"successes": 8, "episodes": 10}])
    assert s["per_seed"] == [0.9, 0.7, 0.8] and s["mean"] == pytest.approx(0.8) and s["sd"] == pytest.approx(0.1)
    assert s["pooled"] == pytest.approx(0.8) and s["pooled_ci95"] == list(wilson_interval(24, 30)) and s["episodes"] == 30
    assert seed_summary([{"successes": 3, "episodes": 4}])["sd"] == 0.0
    assert "per_task_mean" not in s
    tasks = [{"a": {"success_rate": 1.0}, "b": {"success_rate": 0.5}}, {"a": {"success_rate": 0.5}, "b": {"success_rate": 0.0}}]
    both = seed_summary([{"successes": 3, "episodes": 4, "per_task": t} for t in tasks])
    assert both["per_task_mean"] == {"a": 0.75, "b": 0.25}


def test_train_seeds_writes_one_run_per_seed(tmp_path):
    write_dataset(tmp_path / "data", episodes=2)
    cfg = TrainConfig(dataset=str(tmp_path / "data"), output_dir=str(tmp_path / "runs"), steps=2, batch_size=4,
                      tracking="none", seeds=[3, 5],
                      policy=PolicyConfig(d_model=32, n_layers=1, n_heads=2, vision_channels=[8, 8]))
    with pytest.raises(ValueError, match="call train_seeds"):
        train(cfg, show_progress=False)
    out = train_seeds(cfg, show_progress=False)
    assert out == [tmp_path / "runs/seed3/policy", tmp_path / "runs/seed5/policy"]
    assert [load_yaml(TrainConfig, p.parent / "config.yaml").seed for p in out] == [3, 5]
    a, b = (load_file(str(p / "model.safetensors")) for p in out)
    assert any((a[k] != b[k]).any() for k in a)  # another seed, other weights


def test_quickstart_over_seeds_reports_mean_sd_and_pooled_interval(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", f"--output_dir={out}", *TINY, "--seeds=[0,1]"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["seeds"] == [0, 1] and len(s["policies"]) == 2
    for split in ("train", "unseen"):
        results = [json.loads((out / "eval" / f"seed{k}" / split / "results.json").read_text()) for k in (0, 1)]
        assert s["over_seeds"][split] == seed_summary(results)
        assert s["success_rate"][split] == s["over_seeds"][split]["mean"]
    assert "over_seeds" in capsys.readouterr().out
