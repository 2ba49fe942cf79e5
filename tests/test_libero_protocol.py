"""The LIBERO protocol's figures and labels on planted evaluations (no simulator needed); the
command end to end is in tests/test_libero.py."""

import dataclasses

import pytest

from vlaforge.eval.config import EvalConfig, LiberoBenchConfig
from vlaforge.eval.libero_protocol import STANDARD_SUITES, Stages, check, markdown, suite_figures, summarize
from vlaforge.eval.rollout import summarize as results_of
from vlaforge.seeds import EVAL_SEEDS


def evaluation(wins: dict[str, list[int]], split: str = "train") -> dict:
    """A results.json of one policy: task -> success of each trial (trial i = fixed state i)."""
    records = [{"task": t, "seed": EVAL_SEEDS + i, "success": bool(w), "length": 50 if w else 300, "instruction": t}
               for t, ws in wins.items() for i, w in enumerate(ws)]
    return results_of(records, list(wins), "libero-goal", split, "policy", EVAL_SEEDS, 1.0)


def test_suite_figures_pool_seeds_count_tasks_without_an_expert_and_pair_the_language_checks():
    scripts = {"a": "", "b": "", "c": "no scripted LIBERO expert for the goal predicate 'open' yet"}
    demos = {"a": 50, "b": 48, "c": 0}
    train = [evaluation({"a": [1, 1, 1, 1], "b": [1, 0, 0, 0], "c": [0] * 4}),
             evaluation({"a": [1, 1, 1, 0], "b": [1, 1, 0, 0], "c": [0] * 4})]
    blank = [evaluation({"a": [0, 0, 0, 0], "b": [1, 0, 0, 0], "c": [0] * 4}, "blank"),
             evaluation({"a": [0, 0, 0, 0], "b": [0, 0, 0, 0], "c": [0] * 4}, "blank")]
    fig = suite_figures(["a", "b", "c"], scripts, demos, {"train": train, "blank": blank}, trials=4, seeds=2)
    a, c = fig["tasks"]["a"], fig["tasks"]["c"]
    assert (a["successes"], a["trials"], a["steps_to_success"], a["demos"]) == (7, 8, 50.0, 50)
    assert a["ci95"][0] < 7 / 8 < a["ci95"][1] and a["expert"] and "no_expert" not in a
    assert c["success_rate"] == 0 and c["trials"] == 8 and not c["expert"] and "'open'" in c["no_expert"]
    assert fig["per_seed"] == [5 / 12, 5 / 12] and fig["success_rate"] == pytest.approx(10 / 24)
    assert fig["tasks_with_expert"] == 2 and fig["trials"] == 24
    assert fig["language"]["blank"]["success_rate"] == pytest.approx(1 / 24)
    assert fig["language"]["blank"]["vs_train"]["difference"] == pytest.approx(9 / 24)  # train minus blank
    assert fig["language"]["blank"]["vs_train"]["pairs"] == 24  # paired scene by scene over both seeds

    nothing = suite_figures(["x"], {"x": "no script"}, {"x": 0}, {"train": []}, trials=50, seeds=1)
    assert nothing["success_rate"] == 0 and nothing["trials"] == 50 and nothing["ci95"][0] == 0
    assert nothing["ci95"][1] > 0 and nothing["tasks"]["x"]["trials"] == 50


def test_the_average_needs_all_four_suites_and_the_table_stands_beside_the_published(tmp_path):
    fig = suite_figures(["a"], {"a": ""}, {"a": 50}, {"train": [evaluation({"a": [1, 0]})]}, trials=2, seeds=1)
    stages = Stages(tmp_path / "stages.json")
    cfg = LiberoBenchConfig()
    three = summarize({s: fig for s in STANDARD_SUITES[:3]}, ["suites ..."], stages, cfg)
    assert three["average"] is None and three["protocol"] == "reduced"
    four = summarize({s: dict(fig, success_rate=r) for s, r in zip(STANDARD_SUITES, [0.9, 0.8, 0.7, 0.6])}, [],
                     stages, cfg)
    assert four["average"] == pytest.approx(0.75) and four["protocol"] == "standard"
    md = markdown(four)
    assert "# LIBERO, standard" in md and "| **average** | 75.0 |" in md
    assert "| OpenVLA | 76.5 |" in md and "| libero-goal | 70.0 |" in md and "scripted experts" in md


def test_check_labels_every_departure_from_the_standard_protocol_and_refuses_what_it_owns():
    assert check(LiberoBenchConfig()) == []
    reasons = check(LiberoBenchConfig(suites=["libero-goal"], demos=10, trials=5, tasks=["put_the_bowl_on_the_plate"],
                                      eval=EvalConfig(seed=EVAL_SEEDS + 7, max_steps=20, videos_per_task=1)))
    text = "; ".join(reasons)
    for part in ("10 demos", "5 trials", "only the tasks put_the_bowl_on_the_plate", "placement sampler",
                 "step limit", "the average needs"):
        assert part in text, part
    with pytest.raises(ValueError, match="--eval.episodes is set by the protocol itself; use --trials"):
        check(LiberoBenchConfig(eval=EvalConfig(episodes=3)))
    with pytest.raises(ValueError, match="not a LIBERO suite"):
        check(LiberoBenchConfig(suites=["tabletop"]))
    with pytest.raises(ValueError, match=r"trials must be in \[1, 50\]"):
        check(LiberoBenchConfig(trials=51))
    with pytest.raises(KeyError, match="in none of the suites"):
        check(LiberoBenchConfig(tasks=["stack"]))
    with pytest.raises(ValueError, match="seeds must be distinct"):
        check(dataclasses.replace(LiberoBenchConfig(), seeds=[0, 0]))
