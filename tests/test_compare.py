"""A/B comparison of two evaluations and the efficiency metrics of an episode."""

import json
import math

import numpy as np
import pytest

from vlaforge.cli import main
from vlaforge.eval.compare import bootstrap_difference, compare, mcnemar_exact
from vlaforge.eval.config import CompareConfig
from vlaforge.eval.rollout import efficiency, summarize


def fake_eval(path, successes, tasks=("reach", "press_button"), seed=1_000_000_000, policy="p"):
    """A results.json with these per-episode outcomes, episodes split evenly over ``tasks``."""
    per = len(successes) // len(tasks)
    records = [{"task": tasks[i // per], "seed": seed + i % per, "instruction": "x", "success": bool(s), "length": 10 + i % 7,
                "sim_seconds": 0.5, "wall_seconds": 0.1, "path_length": 0.2 + 0.01 * i, "energy": 1.0 + i}
               for i, s in enumerate(successes)]
    results = summarize(records, list(tasks), "tabletop", "train", policy, seed, 1.0)
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results))
    return path


def fisher_two_sided(a, b, c, d):
    """Fisher's exact p by summing hypergeometric tables no more likely than the observed one."""
    n1, n2, k = a + b, c + d, a + c
    prob = lambda x: math.comb(n1, x) * math.comb(n2, k - x) / math.comb(n1 + n2, k)  # noqa: E731
    p0 = prob(a)
    return sum(prob(x) for x in range(max(0, k - n2), min(k, n1) + 1) if prob(x) <= p0 * (1 + 1e-7))


def test_a_clearly_better_is_detected_paired_and_unpaired(tmp_path):
    a = fake_eval(tmp_path / "a", [1] * 18 + [0] * 2)
    b = fake_eval(tmp_path / "b", [1] * 6 + [0] * 14)
    r = compare(CompareConfig(runs=[str(a), str(b)], output_dir=str(tmp_path / "cmp"), bootstrap=2000))
    assert r["difference"] == pytest.approx(0.6)
    assert r["unpaired"]["fisher_p"] == pytest.approx(fisher_two_sided(18, 2, 6, 14), rel=1e-6)
    assert r["unpaired"]["barnard_p"] <= r["unpaired"]["fisher_p"]  # Barnard's is the more powerful test here
    p = r["paired"]
    assert (p["scenes"], p["a_only"], p["b_only"], p["both"], p["neither"]) == (20, 12, 0, 6, 2)
    assert p["mcnemar_p"] == pytest.approx(2 * 0.5**12)  # all 12 discordant pairs favour A
    lo, hi = p["bootstrap_ci95"]
    assert 0 < lo < 0.6 < hi <= 0.85
    assert p["sequential"]["reject"] and r["verdict"].startswith("A better")
    assert (tmp_path / "cmp" / "report.html").read_text().count("<img") == 1
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["paired"]["a_only"] == 12


def test_identical_runs_show_no_difference(tmp_path):
    outcomes = [1, 0] * 10
    a, b = fake_eval(tmp_path / "a", outcomes), fake_eval(tmp_path / "b", outcomes)
    r = compare(CompareConfig(runs=[str(a), str(b)], bootstrap=500))
    assert r["difference"] == 0 and r["paired"]["mcnemar_p"] == 1.0 and r["unpaired"]["fisher_p"] == 1.0
    assert r["paired"]["bootstrap_ci95"] == [0.0, 0.0] and not r["paired"]["sequential"]["reject"]
    assert r["verdict"].startswith("no difference")
    assert r["power"]["episodes_per_policy_for_detect"] > 300  # 0.5 vs 0.6 needs hundreds of episodes
    assert r["power"]["episodes_per_policy_for_observed"] is None


def test_pairing_narrows_the_bootstrap_interval_when_outcomes_correlate():
    rng = np.random.default_rng(0)
    easy = rng.random(200) < 0.5  # scenes either policy solves or not
    a = easy | (rng.random(200) < 0.15)
    b = easy.copy()
    paired = bootstrap_difference(a, b, 4000, 0, paired=True)
    unpaired = bootstrap_difference(a, b, 4000, 0, paired=False)
    assert paired[1] - paired[0] < 0.6 * (unpaired[1] - unpaired[0])
    assert mcnemar_exact(a, b) < 1e-4


def test_unpaired_runs_on_different_scenes_skip_the_paired_tests(tmp_path):
    a = fake_eval(tmp_path / "a", [1] * 10 + [0] * 10)
    b = fake_eval(tmp_path / "b", [1] * 10 + [0] * 10, seed=2_000_000_000)
    r = compare(CompareConfig(runs=[str(a), str(b)], bootstrap=500))
    assert "paired" not in r and "Fisher" in r["verdict"]


def test_compare_cli_and_bad_input(tmp_path, capsys):
    a = fake_eval(tmp_path / "a", [1] * 15 + [0] * 5)
    b = fake_eval(tmp_path / "b", [1] * 5 + [0] * 15)
    assert main(["compare", str(a), str(b / "results.json"), f"--output_dir={tmp_path / 'out'}", "--bootstrap=500"]) == 0
    assert "A better" in capsys.readouterr().out and (tmp_path / "out" / "compare.json").is_file()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    assert main(["compare", str(a), str(tmp_path / "bad")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["compare", str(a)]) == 2
    assert "exactly two" in capsys.readouterr().err
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert "no evaluation results" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--alpha=1.5"]) == 2
    assert "alpha" in capsys.readouterr().err


def test_efficiency_counts_successful_episodes_only():
    recs = [{"success": True, "length": 10, "sim_seconds": 0.5, "wall_seconds": 0.2, "path_length": 0.3, "energy": 2.0},
            {"success": False, "length": 100, "sim_seconds": 5.0, "wall_seconds": 2.0, "path_length": 1.3, "energy": 9.0},
            {"success": True, "length": 20, "sim_seconds": 1.0, "wall_seconds": 0.4, "path_length": 0.5, "energy": 4.0}]
    e = efficiency(recs)
    assert e["successful_episodes"] == 2 and e["steps_to_success"] == 15
    assert e["sim_seconds_to_success"] == pytest.approx(0.75) and e["path_length_to_success"] == pytest.approx(0.4)
    assert e["energy_to_success"] == pytest.approx(3.0) and e["energy_all"] == pytest.approx(5.0)
    assert efficiency(recs[1:2])["steps_to_success"] is None


def test_tabletop_energy_is_actuator_work():
    from vlaforge.envs.tabletop.env import TabletopEnv

    env = TabletopEnv(task="reach")
    env.reset(seed=0)
    for _ in range(5):  # settle
        env.step(np.zeros(4))
    still = env.step(np.zeros(4))[4]["energy"]
    moving = env.step(np.array([1.0, 0, 0, 0]))[4]["energy"]
    assert moving > 10 * max(still, 1e-6) and 0.01 < moving < 5  # J per 50 ms step, force range 40 N


def test_reports_rebuild_from_json_alone(tmp_path, capsys):
    a = fake_eval(tmp_path / "a", [1] * 15 + [0] * 5)
    b = fake_eval(tmp_path / "b", [1] * 5 + [0] * 15)
    compare(CompareConfig(runs=[str(a), str(b)], output_dir=str(tmp_path / "cmp"), bootstrap=500))
    (tmp_path / "cmp" / "report.html").unlink()
    (a / "videos").mkdir()
    (a / "videos" / "reach_1000000000.gif").write_bytes(b"GIF89a")
    for d in (a, tmp_path / "cmp"):
        assert main(["report", str(d)]) == 0
    html = (a / "report.html").read_text()
    assert "videos/reach_1000000000.gif" in html and "exact [" in html and "Beta posterior" in html
    assert "A/B comparison" in (tmp_path / "cmp" / "report.html").read_text()
    assert main(["report", str(tmp_path)]) == 2 and "no results JSON" in capsys.readouterr().err
