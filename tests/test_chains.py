"""Long-horizon chains (CALVIN protocol)."""

import json

import numpy as np
import pytest
from helpers import train_tiny_policy

from vlaforge.cli import main
from vlaforge.envs.tabletop.env import TabletopEnv
from vlaforge.envs.tabletop.experts import Expert
from vlaforge.envs.tabletop.tasks import chain_subtask
from vlaforge.eval.chains import draw_chain, summarize_chains


def test_draw_chain_rules():
    rng = np.random.default_rng(0)
    for _ in range(200):
        c = draw_chain(["reach", "press_button", "open_drawer"], 5, rng)
        assert len(c) == 5 and all(a != b for a, b in zip(c, c[1:])) and c.count("open_drawer") <= 1
    with pytest.raises(ValueError, match="cannot draw"):
        draw_chain(["open_drawer", "reach"], 4, rng)


def test_summary_counts_chain_positions():
    recs = [{"completed": c, "instructions": [{"task": "reach", "success": True}] * c + [{"task": "reach", "success": False}]}
            for c in (0, 1, 2, 5, 5)]
    s = summarize_chains(recs, 5)
    assert [p["successes"] for p in s["positions"]] == [4, 3, 2, 2, 2]
    assert s["average_length"] == pytest.approx(13 / 5)
    lo, hi = s["average_length_ci95"]
    assert lo < 13 / 5 < hi and s["per_task"]["reach"]["attempts"] == 18


def test_expert_completes_a_chain_in_one_scene():
    """The protocol is solvable: the scripted expert follows five instructions without a reset."""
    env = TabletopEnv(task="reach")
    env.reset(seed=3)
    rng = np.random.default_rng(3)
    for family in ["reach", "press_button", "pick_place", "open_drawer", "put_in_bowl"]:
        sub = chain_subtask(env.episode, family, "train", rng)
        obs = env.set_subtask(sub)
        assert obs["instruction"] == sub.instruction
        expert = Expert(env)
        for _ in range(200):
            *_, terminated, _, info = env.step(expert.act())
            if terminated:
                break
        assert info["success"], family


def test_chains_cli_writes_positions(tmp_path, capsys):
    policy = train_tiny_policy(tmp_path, episodes_per_task=1, steps=2)
    assert main(["chains", f"--policy={policy}", "--chains=3", "--length=3", "--steps_per_instruction=10", "--workers=1"]) == 0
    s = json.loads((policy.parent / "chains" / "train" / "chains.json").read_text())
    assert s["families"] == ["reach", "press_button"] and len(s["chains_detail"]) == 3
    assert all(len(r["sequence"]) == 3 and r["completed"] <= 3 for r in s["chains_detail"])
    assert "average completed length" in capsys.readouterr().out
    assert main(["chains", f"--policy={policy}", "--tasks=[push]"]) == 2
    assert "cannot be chained" in capsys.readouterr().err


class _PlantedPolicy:
    """Follows the scripted expert for the first ``good`` instructions of a chain, then sends
    zero actions: a policy whose chain outcome is known in advance."""

    def __init__(self, envs: list, good: int) -> None:
        self.envs, self.good, self.seen, self.expert = envs, good, [], None

    def reset(self, seed=None) -> None:
        self.seen, self.expert = [], None

    def act(self, obs):
        env = self.envs[-1]
        if not self.seen or self.seen[-1] != obs["instruction"]:
            self.seen.append(obs["instruction"])
            self.expert = Expert(env) if len(self.seen) <= self.good else None
        return np.array([self.expert.act() if self.expert else np.zeros(4)], np.float32)


@pytest.mark.parametrize("good", [0, 2, 3])
def test_a_chain_stops_at_its_first_failed_instruction(good, monkeypatch):
    import vlaforge.envs
    import vlaforge.eval.rollout
    from vlaforge.config import to_dict
    from vlaforge.envs.config import EnvConfig
    from vlaforge.eval.chains import ChainJob, run_chain

    envs, make = [], vlaforge.envs.policy_env
    monkeypatch.setattr(vlaforge.envs, "policy_env", lambda *a: envs.append(make(*a)) or envs[-1])
    monkeypatch.setattr(vlaforge.eval.rollout, "worker_policy", lambda: _PlantedPolicy(envs, good))
    meta = {"suite": "tabletop", "env": to_dict(EnvConfig())}
    r = run_chain(ChainJob(meta, ["reach", "press_button", "open_drawer"], 3, "train", 3, 200, 1))
    assert r["completed"] == good
    assert [d["success"] for d in r["instructions"]] == [True] * good + ([False] if good < 3 else [])
