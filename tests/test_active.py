"""Active learning: k-center covers a known set, strategies choose what they promise, and the
selection round-trips through collect."""

import json

import numpy as np
import pytest
import torch
from helpers import TINY_POLICY

from vlaforge.cli import main
from vlaforge.data.dataset import LeRobotDataset
from vlaforge.eval.active import choose, chunk_variance, k_center_greedy


def test_k_center_picks_one_point_per_cluster():
    rng = np.random.default_rng(0)
    corners = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    points = np.concatenate([c + rng.normal(0, 0.1, (25, 2)) for c in corners])
    picked = k_center_greedy(points, 4)
    assert sorted(i // 25 for i in picked) == [0, 1, 2, 3]
    # Clusters already covered by the training set are not picked again.
    picked = k_center_greedy(points, 2, centres=corners[:2])
    assert sorted(i // 25 for i in picked) == [2, 3]
    with pytest.raises(ValueError, match="cannot choose 5 of 4"):
        k_center_greedy(points[:4], 5)


def test_k_center_radius_is_within_twice_the_optimum():
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 1, (200, 2))
    picked = k_center_greedy(points, 9)
    radius = np.max(np.min(np.linalg.norm(points[:, None] - points[picked][None], axis=-1), axis=1))
    # A 3 x 3 grid covers the unit square with radius sqrt(2)/6; the optimum is no larger.
    assert radius <= 2 * np.sqrt(2) / 6 + 1e-9


def test_strategies():
    scores = [{"uncertainty": u, "embedding": np.array([x, 0.0])} for u, x in
              [(0.9, 0.0), (0.8, 0.1), (0.1, 5.0), (0.7, 10.0), (0.2, 10.1)]]
    assert choose(scores, "uncertainty", 2, None, 0) == [0, 1]
    assert sorted(choose(scores, "diversity", 2, None, 0)) == [0, 4]  # the two ends of the line
    # Among the 4 most uncertain (2 is not), the two farthest apart; a covered end is skipped.
    assert sorted(choose(scores, "both", 2, None, 0)) == [0, 4]
    assert choose(scores, "both", 1, np.array([[0.0, 0.0]]), 0) == [1]  # top-2 pool {0, 1}; 0 is covered
    # A per-task cap spreads the budget: tasks a (scenes 0, 1, 2) and b (3, 4).
    for sc, t in zip(scores, "aaabb"):
        sc["task"] = t
    assert choose(scores, "uncertainty", 3, None, 0, max_per_task=2) == [0, 1, 3]
    capped = choose(scores, "both", 2, None, 0, max_per_task=1)
    assert sorted(scores[i]["task"] for i in capped) == ["a", "b"]
    assert sorted(scores[i]["task"] for i in choose(scores, "random", 4, None, 0, max_per_task=2)) == ["a", "a", "b", "b"]
    with pytest.raises(ValueError, match="fewer than the 3 scenes"):
        choose(scores, "uncertainty", 3, None, 0, max_per_task=1)
    r = choose(scores, "random", 3, None, 0)
    assert len(set(r)) == 3 and r == choose(scores, "random", 3, None, 0)
    assert chunk_variance(torch.ones(4, 3, 2) * torch.arange(4.0)[:, None, None]) == pytest.approx(1.25)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    root = tmp_path_factory.mktemp("active")
    assert main(["collect", "--env.tasks=[reach,press_button]", "--episodes_per_task=2", "--workers=1",
                 f"--output={root / 'data'}"]) == 0
    assert main(["train", f"--dataset={root / 'data'}", f"--output_dir={root / 'run'}", "--steps=20", "--batch_size=8",
                 "--tracking=none", "--policy.dropout=0.2", *TINY_POLICY]) == 0
    return root


def test_select_and_collect_the_selection(policy, tmp_path):
    sel = tmp_path / "sel.json"
    assert main(["active", f"--policy={policy / 'run' / 'policy'}", f"--dataset={policy / 'data'}", "--strategy=both",
                 "--select=3", "--pool_per_task=3", "--horizon=3", "--samples=4", "--workers=1", f"--output={sel}"]) == 0
    r = json.loads(sel.read_text())
    assert len(r["scenes"]) == 3 and r["pool"] == 6
    assert all(s["uncertainty"] > 0 for s in r["scenes"])  # dropout makes the predictions disagree
    assert len({(s["task"], s["seed"]) for s in r["scenes"]}) == 3
    data = tmp_path / "data"
    assert main(["collect", "--env.tasks=[reach,press_button]", f"--scenes={sel}", "--workers=1", f"--output={data}"]) == 0
    eps = LeRobotDataset(data).episodes
    assert sorted((e["vlaforge/task"], e["vlaforge/seed"]) for e in eps) == sorted((s["task"], s["seed"]) for s in r["scenes"])


def test_bad_input(policy, tmp_path, capsys):
    base = ["active", f"--policy={policy / 'run' / 'policy'}", "--pool_per_task=2", "--workers=1",
            f"--output={tmp_path / 's.json'}"]
    assert main([*base, "--uncertainty=entropy"]) == 2
    assert "unknown uncertainty 'entropy'" in capsys.readouterr().err
    assert main([*base, "--uncertainty=ensemble"]) == 2
    assert "--ensemble" in capsys.readouterr().err
    assert main([*base, "--uncertainty=head"]) == 2
    assert "sampling head" in capsys.readouterr().err
    assert main([*base, "--select=99"]) == 2
    assert not (tmp_path / "s.json").exists()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"scenes": [{"task": "stack", "seed": 3}]}))
    assert main(["collect", "--env.tasks=[reach]", f"--scenes={bad}", f"--output={tmp_path / 'd'}"]) == 2
    assert "outside --env.tasks" in capsys.readouterr().err
    bad.write_text("{not json")
    assert main(["collect", "--env.tasks=[reach]", f"--scenes={bad}", f"--output={tmp_path / 'd'}"]) == 2
    assert "unreadable" in capsys.readouterr().err


def test_ensemble_and_head_uncertainty(policy, tmp_path):
    data = policy / "data"
    for name, extra in (("seed1", ["--seed=1"]), ("flow", ["--policy.head=flow", "--policy.sample_steps=2",
                                                          "--policy.head_layers=1"])):
        assert main(["train", f"--dataset={data}", f"--output_dir={tmp_path / name}", "--steps=10", "--batch_size=8",
                     "--tracking=none", *TINY_POLICY, *extra]) == 0
    common = ["--select=2", "--pool_per_task=2", "--horizon=2", "--samples=3", "--workers=1", "--strategy=uncertainty"]
    ens = tmp_path / "ens.json"
    assert main(["active", f"--policy={policy / 'run' / 'policy'}", f"--ensemble=[{tmp_path / 'seed1' / 'policy'}]",
                 "--uncertainty=ensemble", f"--output={ens}", *common]) == 0
    head = tmp_path / "head.json"
    assert main(["active", f"--policy={tmp_path / 'flow' / 'policy'}", "--uncertainty=head", f"--output={head}", *common]) == 0
    for path in (ens, head):
        scenes = json.loads(path.read_text())["scenes"]
        assert len(scenes) == 2 and all(s["uncertainty"] > 0 for s in scenes)
        assert scenes[0]["uncertainty"] >= scenes[1]["uncertainty"]  # most uncertain first
