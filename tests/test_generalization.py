"""Generalization report over a suite's splits."""

import json

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
        assert r["gap_ci95"][0] <= r["gap"] <= r["gap_ci95"][1] and (out / name / "results.json").is_file()
    assert "<img" in (out / "report.html").read_text()
    assert main(["generalize", f"--policy={policy}", "--splits=[train,nowhere]"]) == 2
    assert "unknown split 'nowhere'" in capsys.readouterr().err
