"""PPO-Lagrangian fine-tuning: the violation cost, the Lagrangian update, exact resume, and
clear errors for unusable settings; the audit counts what the filter prevents."""

import json

import numpy as np
import pytest
import torch
from helpers import train_tiny_policy
from safetensors.torch import load_file

from vlaforge.cli import main
from vlaforge.envs.tabletop.env import ROBOT, TabletopEnv
from vlaforge.runtime.policy import load_torch_policy
from vlaforge.safety.audit import AdversarialActor, RandomActor, audit_episode
from vlaforge.safety.cbf import excess, violations
from vlaforge.safety.config import SafeRLConfig, SafetyConfig
from vlaforge.safety.safe_rl import ActorCritic, gae, safe_finetune, step_cost, update


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    return train_tiny_policy(tmp_path_factory.mktemp("saferl"), episodes_per_task=4, steps=20)


def small(policy, out, **kw) -> SafeRLConfig:
    base = dict(policy=str(policy), task="reach", iterations=2, episodes_per_iteration=2, eval_episodes=1,
                minibatch_size=16, output_dir=str(out))
    return SafeRLConfig(**(base | kw))


def test_each_violation_kind_is_caught():
    cfg, robot = SafetyConfig(keep_out=[[0.0, 0.0, 0.1, 0.03]]), ROBOT
    mid, calm = np.array([0.1, 0.1, 0.15]), np.array([0.1, 0.0, 0.0, -1.0])
    assert not any(violations(cfg, robot, 1.0, np.zeros(4), calm, mid).values())
    cases = {
        "workspace": dict(p_after=np.array([0.1, 0.1, 0.005])),
        "keep_out": dict(p_after=np.array([0.01, 0.0, 0.1])),
        "speed": dict(action=np.array([1.0, 0.0, 0.0, -1.0]), previous=np.array([0.9, 0, 0, -1.0])),
        "accel": dict(action=np.array([0.7, 0.0, 0.0, -1.0]), previous=np.array([-0.7, 0, 0, -1.0])),
        "grip_force": dict(action=np.array([0.1, 0.0, 0.0, 1.0])),
    }
    for kind, change in cases.items():
        args = dict(opening=1.0, previous=np.zeros(4), action=calm, p_after=mid) | change
        hit = violations(cfg, robot, **args)
        assert [k for k, v in hit.items() if v] == [kind], (kind, hit)


def test_graded_speed_cost_falls_with_every_slower_command():
    robot, p = ROBOT, np.array([0.0, 0.0, 0.1])
    for graded, expected in ((True, None), (False, [1.0, 1.0, 0.0])):
        cfg = SafeRLConfig(graded=graded)  # speed limit 0.25 m/s = 0.625 of a full command
        costs = []
        for x in (1.0, 0.8, 0.6):
            a, prev = np.array([x, 0.0, 0.0, -1.0]), np.array([x, 0.0, 0.0, -1.0])
            costs.append(step_cost(cfg, violations(cfg.safety, robot, 1.0, prev, a, p), excess(cfg.safety, robot, prev, a)))
        if expected is None:
            assert costs[0] == pytest.approx(1.0 / 0.625 - 1) and costs[0] > costs[1] > costs[2] == 0
        else:
            assert costs == expected


def test_audit_counts_what_the_filter_prevents():
    cfg = SafetyConfig(keep_out=[[0.0, 0.0, 0.12, 0.04]])
    env = TabletopEnv("reach", max_steps=60)
    for actor in (AdversarialActor(cfg), RandomActor()):
        raw = audit_episode(env, actor, 3, cfg, filtered=False)
        safe = audit_episode(env, actor, 3, cfg, filtered=True)
        assert sum(raw["violations"].values()) > 5
        assert safe["violations"]["workspace"] == safe["violations"]["keep_out"] == 0
        assert safe["violations"]["speed"] == safe["violations"]["grip_force"] == 0
        assert safe["interventions"] > 0 and len(safe["filter_ms"]) == safe["length"]


def test_gae_matches_a_hand_computation():
    adv, ret = gae([0.0, 1.0], [0.5, 0.8], discount=0.9, lam=0.5)
    d1 = 1.0 - 0.8
    d0 = 0.0 + 0.9 * 0.8 - 0.5
    assert adv == pytest.approx([d0 + 0.9 * 0.5 * d1, d1])
    assert ret == pytest.approx([adv[0] + 0.5, adv[1] + 0.8])


def test_the_multiplier_steers_the_mean_away_from_costly_actions(tiny_policy):
    """Decisions whose sampled x-motion exceeds the mean cost 1, the rest 0, rewards all 0: the
    Lagrangian update must lower the mean's x component; with lambda = 0 nothing drives it."""
    policy = load_torch_policy(tiny_policy)
    obs, _ = TabletopEnv("reach").reset(seed=1)
    image, state, tokens = policy.inputs(obs)
    elapsed = torch.zeros(1)

    def mean_x(agent):
        with torch.no_grad():
            return float(agent(image, state, tokens, elapsed)[0][0, 0])

    moved = {}
    for lam in (0.0, 5.0):
        torch.manual_seed(0)
        agent = ActorCritic(load_torch_policy(tiny_policy).model, horizon=4, init_std=0.3)
        with torch.no_grad():
            mean = agent(image, state, tokens, elapsed)[0]
        gen = torch.Generator().manual_seed(0)
        decisions = []
        for _ in range(32):
            sample = mean + 0.3 * torch.randn(mean.shape, generator=gen)
            with torch.no_grad():
                logp = agent.distribution(mean).log_prob(sample).sum(-1)
            decisions.append({"image": image, "state": state, "tokens": tokens, "elapsed": elapsed, "sample": sample,
                              "logp": logp, "v_reward": 0.0,
                              "v_cost": 0.0, "reward": 0.0, "cost": float(sample[0, 0] > mean[0, 0])})
        cfg = SafeRLConfig(epochs=4, minibatch_size=8, lr=1e-3, target_kl=1.0)
        before = mean_x(agent)
        optim = torch.optim.Adam(agent.parameters(), lr=1e-3)
        update(agent, optim, [{"decisions": decisions}], lam, cfg, torch.Generator().manual_seed(1))
        moved[lam] = mean_x(agent) - before
    assert moved[5.0] < -0.01
    assert abs(moved[0.0]) < abs(moved[5.0]) / 3


def test_run_writes_curves_policy_and_multiplier(tiny_policy, tmp_path):
    cfg = small(tiny_policy, tmp_path / "rl")
    s = safe_finetune(cfg, show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    lam = 0.0
    for r in rows:  # projected ascent on the measured cost
        lam = max(0.0, lam + cfg.lagrange_lr * (r["cost"] - cfg.cost_limit))
        assert r["lagrange"] == pytest.approx(lam)
    assert set(s["before"]["violations"]) == {"workspace", "keep_out", "speed", "accel", "grip_force"}
    tuned = load_torch_policy(tmp_path / "rl" / "policy")
    assert tuned.meta["safe_rl"]["algorithm"] == "ppo-lagrangian"
    assert (tmp_path / "rl" / "config.yaml").is_file() and (tmp_path / "rl" / "summary.json").is_file()
    plain = small(tiny_policy, tmp_path / "ppo", algorithm="ppo")
    assert all(r["lagrange"] == 0 for r in safe_finetune(plain, show_progress=False)["curve"])


def test_resume_continues_the_same_run(tiny_policy, tmp_path):
    safe_finetune(small(tiny_policy, tmp_path / "whole"), show_progress=False)
    safe_finetune(small(tiny_policy, tmp_path / "split", iterations=1), show_progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        safe_finetune(small(tiny_policy, tmp_path / "split"), show_progress=False)
    safe_finetune(small(tiny_policy, tmp_path / "split", resume=True), show_progress=False)
    a = load_file(str(tmp_path / "whole/policy/model.safetensors"))
    b = load_file(str(tmp_path / "split/policy/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [(tmp_path / d / "metrics.jsonl").read_text().splitlines() for d in ("whole", "split")]
    strip = [[{k: v for k, v in json.loads(r).items() if k != "seconds"} for r in rs] for rs in rows]
    assert strip[0] == strip[1]


def test_unusable_settings_fail_with_the_reason(tiny_policy, tmp_path):
    for bad, msg in ((dict(algorithm="cpo"), "unknown safe-RL algorithm"), (dict(cost_terms=["speeding"]), "cost_terms"),
                     (dict(task="stack"), "not one the policy was trained on"), (dict(clip=0.0), "clip must be > 0"),
                     (dict(action_horizon=99), "exceeds the policy's chunk_size")):
        with pytest.raises(ValueError, match=msg):
            safe_finetune(small(tiny_policy, tmp_path / "bad", **bad), show_progress=False)
    assert not (tmp_path / "bad" / "checkpoint").exists()
    assert main(["safe-rl", f"--policy={tiny_policy}", "--algorithm=trpo", f"--output_dir={tmp_path / 'x'}"]) == 2
