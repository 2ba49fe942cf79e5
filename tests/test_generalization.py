"""Generalization report over a suite's splits."""

import json

import pytest
from helpers import train_tiny_policy

from vlaforge.cli import main


def test_generalize_evaluates_every_split_with_gaps(tmp_path, capsys):
    policy = train_tiny_policy(tmp_path, episodes_per_task=1, steps=2)
    assert main(["generalize", f"--policy={policy}", "--episodes=1", "--workers=1"]) == 0
    out = policy.parent / "generalization"
    s = json.loads((out / "generalization.json").read_text())
    assert list(s["splits"]) == ["train", "unseen", "unseen_object", "unseen_paraphrase"] and s["reference"] == "train"
    assert "gap" not in s["splits"]["train"]
    for name in ("unseen", "unseen_object", "unseen_paraphrase"):
        r = s["splits"][name]
        assert r["episodes"] == 2 and r["gap"] == s["splits"]["train"]["success_rate"] - r["success_rate"]
        assert (out / name / "results.json").is_file()
    assert "<img" in (out / "report.html").read_text()
    assert main(["generalize", f"--policy={policy}", "--splits=[train,nowhere]"]) == 2
    assert "unknown split 'nowhere'" in capsys.readouterr().err


def test_generalization_gaps_on_planted_results(tmp_path, monkeypatch):
    """Evaluation replaced by planted outcomes with known answers: train 16/20, unseen 8/20 (a
    real gap of 0.4 whose Newcombe interval excludes 0), unseen_object 16/20 (no gap)."""
    import vlaforge.eval.generalization as gen
    from vlaforge.eval.config import GeneralizeConfig

    policy = train_tiny_policy(tmp_path, episodes_per_task=1, steps=2)
    planted = {"train": 16, "unseen": 8, "unseen_object": 16, "unseen_paraphrase": 20}

    def evaluate(cfg, show_progress=True):
        k = planted[cfg.split]
        return {"success_rate": k / 20, "successes": k, "episodes": 20, "ci95": [0, 1],
                "per_task": {"reach": {"success_rate": k / 20, "successes": k, "episodes": 20}}}

    monkeypatch.setattr(gen, "evaluate", evaluate)
    s = gen.generalize(GeneralizeConfig(policy=str(policy), output_dir=str(tmp_path / "gen")), False)["splits"]
    assert s["unseen"]["gap"] == pytest.approx(0.4)
    lo, hi = s["unseen"]["gap_ci95"]
    assert lo == pytest.approx(0.0966, abs=2e-3) and hi == pytest.approx(0.6165, abs=2e-3)  # Newcombe (1998) method 10
    assert s["unseen_object"]["gap"] == 0 and s["unseen_object"]["gap_ci95"][0] < 0 < s["unseen_object"]["gap_ci95"][1]
    assert s["unseen_paraphrase"]["gap"] == pytest.approx(-0.2)  # better than train: a negative gap
