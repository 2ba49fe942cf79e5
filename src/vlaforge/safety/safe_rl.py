"""Constrained (safe) RL fine-tuning of a trained policy: PPO-Lagrangian.

The policy's action chunk becomes the mean of a Gaussian over the part of the chunk that is
executed (``action_horizon`` steps, in normalised action units) with a learned state-independent
std; one decision executes those steps, as evaluation does. The reward is the task's success
reward; a step costs 1 when it breaks any of ``cost_terms`` (``vlaforge.safety.cbf.violations``,
the definitions the safety benchmark counts), speed and acceleration by their excess over the
limit when ``graded`` (``step_cost`` says why). The constrained problem

    max J_r   s.t.   J_c <= cost_limit          (J_c: expected cost per episode)

is solved through its Lagrangian (Ray et al. 2019): PPO's clipped surrogate on the advantage
(A_r - lambda A_c) / (1 + lambda), and projected gradient ascent on the multiplier with each
round's measured episode cost, lambda <- max(0, lambda + lr (J_c - cost_limit)).
``algorithm=ppo`` keeps lambda at 0: the unconstrained baseline with everything else equal.

Two value heads, for reward and for cost, read the policy's query tokens (detached, so the
critics do not move the actor's features) and the elapsed fraction of the episode, which makes
the time limit part of the state. By default only the action head learns (``trainable=head``):
the behaviour a constraint asks for (slower, or around a zone) is a change of the readout,
the rollout's query tokens can be reused by every update without another forward pass, and a
few hundred decisions per round move a linear head reliably where they only shake a
million-parameter network; ``trainable=all`` fine-tunes everything. Each round's scene seeds and noise come from (seed, round),
and a checkpoint is written atomically after every round, so a resumed run is the same run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_file, save_file
from torch import nn

from vlaforge.envs.base import robot_env
from vlaforge.files import atomic_dir
from vlaforge.runtime.episode import run_chunks
from vlaforge.runtime.policy import Policy, load_torch_policy
from vlaforge.safety.audit import ViolationCounter
from vlaforge.safety.cbf import VIOLATIONS, check_safety, excess
from vlaforge.safety.config import SafeRLConfig
from vlaforge.seeds import EVAL_SEEDS, RL_SCENES, TASK_STRIDE, step_seed
from vlaforge.train.rundir import open_run_dir, save_config, truncate_metrics

ALGORITHMS = ("ppo-lagrangian", "ppo")
TRAINABLE = ("head", "all")


class ActorCritic(nn.Module):
    """The policy network as a Gaussian actor, with a reward and a cost critic beside it."""

    def __init__(self, model: nn.Module, horizon: int, init_std: float, hidden: int = 64) -> None:
        super().__init__()
        self.model, self.horizon = model, horizon
        dim = horizon * model.head.out_features
        self.log_std = nn.Parameter(torch.full((dim,), math.log(init_std)))
        d = model.cfg.d_model + 1
        self.value_reward = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.value_cost = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, image: torch.Tensor, state: torch.Tensor, tokens: torch.Tensor,
                elapsed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> mean of the executed actions (B, horizon * A), reward value (B,), cost value (B,)."""
        return self.from_tokens(self.model.query_tokens(image, state, tokens), elapsed)

    def from_tokens(self, cond: torch.Tensor, elapsed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The same from the head's conditioning tokens (B, K, d)."""
        mean = self.model.head.predict(cond)[:, : self.horizon].flatten(1).float()
        features = torch.cat([cond.detach().float().mean(1), elapsed[:, None].float()], dim=-1)
        return mean, self.value_reward(features).squeeze(-1), self.value_cost(features).squeeze(-1)

    def distribution(self, mean: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))


def check_config(cfg: SafeRLConfig, policy: Policy) -> int:
    """Raise ValueError naming the first unusable setting; returns the action horizon."""
    if cfg.trainable not in TRAINABLE:
        raise ValueError(f"unknown trainable {cfg.trainable!r}; known: {', '.join(TRAINABLE)}")
    if cfg.algorithm not in ALGORITHMS:
        raise ValueError(f"unknown safe-RL algorithm {cfg.algorithm!r}; known: {', '.join(ALGORITHMS)}")
    if policy.cfg.head != "regression":
        raise ValueError(f"PPO needs a policy whose mean action is a differentiable function of its inputs; "
                         f"head {policy.cfg.head!r} samples (fine-tune a regression-head policy)")
    unknown = [t for t in cfg.cost_terms if t not in VIOLATIONS]
    if unknown or not cfg.cost_terms:
        raise ValueError(f"cost_terms {cfg.cost_terms} must name some of: {', '.join(VIOLATIONS)}")
    check_safety(cfg.safety)
    if cfg.task not in policy.meta["tasks"]:
        raise ValueError(f"task {cfg.task!r} is not one the policy was trained on ({', '.join(policy.meta['tasks'])})")
    for key in ("iterations", "episodes_per_iteration", "epochs", "minibatch_size", "eval_episodes"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"safe-RL {key} must be >= 1, got {getattr(cfg, key)}")
    for key in ("lr", "head_lr", "clip", "target_kl", "init_std", "lagrange_lr"):
        if not getattr(cfg, key) > 0:
            raise ValueError(f"safe-RL {key} must be > 0, got {getattr(cfg, key)}")
    if cfg.cost_limit < 0 or cfg.lagrange_init < 0:
        raise ValueError("cost_limit and lagrange_init must be >= 0")
    if not (0 < cfg.discount <= 1 and 0 <= cfg.gae_lambda <= 1):
        raise ValueError(f"discount must be in (0, 1] and gae_lambda in [0, 1], got {cfg.discount}, {cfg.gae_lambda}")
    return cfg.horizon(policy.cfg.chunk_size)


def step_cost(cfg: SafeRLConfig, broke: dict[str, bool], over: dict[str, float]) -> float:
    """One step's cost: 1 for any violated position or grip limit among ``cost_terms``; for
    speed and acceleration, 1 per violation or, ``graded``, the excess over the limit as a
    fraction of it. A behaviour-cloned policy commands saturated (clipped) actions, so an
    indicator of speeding is the same for every explored action and gives PPO nothing to
    follow; the excess shrinks with every slower sample."""
    binary = [t for t in cfg.cost_terms if not (cfg.graded and t in over)]
    graded = [t for t in cfg.cost_terms if cfg.graded and t in over]
    return float(any(broke[t] for t in binary)) + sum(over[t] for t in graded)


class _CostCounter(ViolationCounter):
    """Violations per kind, plus each step's reward and cost added to the decision (chunk) that
    chose the step: the last of ``decisions``."""

    def __init__(self, cfg: SafeRLConfig, robot, sim, decisions: list[dict]) -> None:
        super().__init__(cfg.safety, robot, sim)
        self.rl, self.decisions, self.steps = cfg, decisions, 0

    def after(self, action: np.ndarray, obs: dict, reward: float, info: dict) -> None:
        super().after(action, obs, reward, info)
        over = excess(self.cfg, self.robot, self.step_previous, action)
        self.decisions[-1]["cost"] += step_cost(self.rl, self.last, over)
        self.decisions[-1]["reward"] += reward
        self.steps += 1


def run_episode(agent: ActorCritic, policy: Policy, env, seed: int, cfg: SafeRLConfig,
                generator: torch.Generator | None) -> dict:
    """One episode; ``generator`` None acts with the mean (evaluation), else samples from it.

    Returns the decisions (model inputs, sampled normalised actions, their log-probabilities
    and values, reward and cost per decision), success, length and per-kind violation counts."""
    sim, robot = env.unwrapped, robot_env(env).robot
    obs, _ = env.reset(seed=seed)
    policy.reset(seed)
    horizon, max_steps = agent.horizon, sim.max_steps
    decisions = []
    counter = _CostCounter(cfg, robot, sim, decisions)

    def chunk(obs: dict) -> np.ndarray:
        image, state, tokens = policy.inputs(obs)
        elapsed = torch.tensor([counter.steps / max_steps])
        with torch.no_grad():
            cond = agent.model.query_tokens(image, state, tokens)
            mean, v_r, v_c = agent.from_tokens(cond, elapsed)
            dist = agent.distribution(mean)
            sample = mean if generator is None else mean + dist.stddev * torch.randn(mean.shape, generator=generator)
            logp = dist.log_prob(sample).sum(-1)
        inputs = {"cond": cond} if cfg.trainable == "head" else {"image": image, "state": state, "tokens": tokens}
        decisions.append({**inputs, "elapsed": elapsed, "sample": sample,
                          "logp": logp, "v_reward": float(v_r), "v_cost": float(v_c), "reward": 0.0, "cost": 0.0})
        return np.clip(policy.normalizer.unnorm_action(sample.view(horizon, -1).numpy()), -1.0, 1.0).astype(np.float32)

    end = run_chunks(env, obs, chunk, [counter])
    return {"seed": seed, "success": end.success, "length": end.steps, "violations": counter.counts,
            "cost": sum(d["cost"] for d in decisions), "return": sum(d["reward"] for d in decisions),
            "decisions": decisions}


def gae(rewards: list[float], values: list[float], discount: float, lam: float) -> tuple[list[float], list[float]]:
    """Generalised advantage estimates and value targets of one finished episode (value 0 after
    its end: termination is success, truncation is visible to the critic through elapsed time)."""
    adv, last = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        nxt = values[t + 1] if t + 1 < len(values) else 0.0
        delta = rewards[t] + discount * nxt - values[t]
        last = delta + discount * lam * last
        adv[t] = last
    return adv, [a + v for a, v in zip(adv, values)]


def update(agent: ActorCritic, optimizer: torch.optim.Optimizer, episodes: list[dict], lagrange: float,
           cfg: SafeRLConfig, generator: torch.Generator) -> dict:
    """PPO epochs on one round's decisions with the Lagrangian advantage; returns loss figures."""
    batch: dict[str, list] = {k: [] for k in ("adv_r", "adv_c", "ret_r", "ret_c")}
    for ep in episodes:
        ds = ep["decisions"]
        for kind, value_key in (("r", "v_reward"), ("c", "v_cost")):
            adv, ret = gae([d["reward" if kind == "r" else "cost"] for d in ds], [d[value_key] for d in ds],
                           cfg.discount, cfg.gae_lambda)
            batch[f"adv_{kind}"] += adv
            batch[f"ret_{kind}"] += ret
    decisions = [d for ep in episodes for d in ep["decisions"]]
    inputs = {k: torch.cat([d[k] for d in decisions]) for k in ("cond", "image", "state", "tokens") if k in decisions[0]}
    elapsed, sample, old_logp = (torch.cat([d[k] for d in decisions]) for k in ("elapsed", "sample", "logp"))
    adv_r, adv_c, ret_r, ret_c = (torch.tensor(batch[k], dtype=torch.float32) for k in ("adv_r", "adv_c", "ret_r", "ret_c"))
    # Reward advantages standardised, cost advantages centred (their scale is the cost's own),
    # then mixed by the multiplier.
    adv_r = (adv_r - adv_r.mean()) / (adv_r.std() + 1e-8) if len(adv_r) > 1 else adv_r * 0
    adv = (adv_r - lagrange * (adv_c - adv_c.mean())) / (1.0 + lagrange)
    n = len(decisions)
    stats = {"policy_loss": 0.0, "value_loss": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0, "epochs": 0, "decisions": n}
    updates = 0
    for _ in range(cfg.epochs):
        kls = []
        for idx in torch.randperm(n, generator=generator).split(cfg.minibatch_size):
            if "cond" in inputs:  # only the head learns: its input tokens are fixed, no re-forward
                mean, v_r, v_c = agent.from_tokens(inputs["cond"][idx], elapsed[idx])
            else:
                mean, v_r, v_c = agent(inputs["image"][idx], inputs["state"][idx], inputs["tokens"][idx], elapsed[idx])
            logp = agent.distribution(mean).log_prob(sample[idx]).sum(-1)
            ratio = (logp - old_logp[idx]).exp()
            a = adv[idx]
            policy_loss = -torch.min(ratio * a, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * a).mean()
            value_loss = 0.5 * ((v_r - ret_r[idx]) ** 2).mean() + 0.5 * ((v_c - ret_c[idx]) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            (policy_loss + value_loss).backward()
            nn.utils.clip_grad_norm_(agent.parameters(), 1.0)
            optimizer.step()
            with torch.no_grad():
                kls.append(float(((ratio - 1) - ratio.log()).mean()))
                stats["clip_fraction"] += float(((ratio - 1).abs() > cfg.clip).float().mean())
                stats["policy_loss"] += float(policy_loss)
                stats["value_loss"] += float(value_loss)
            updates += 1
        stats["epochs"] += 1
        stats["approx_kl"] = float(np.mean(kls))
        if stats["approx_kl"] > cfg.target_kl:
            break
    for key in ("policy_loss", "value_loss", "clip_fraction"):
        stats[key] /= max(updates, 1)
    return stats


def _optimizer(agent: ActorCritic, cfg: SafeRLConfig) -> torch.optim.Optimizer:
    """Adam over the actor (the action head alone, or the whole network) at ``lr`` and over the
    log-std and the critics at ``head_lr``; whatever is not trained is frozen."""
    actor = list((agent.model.head if cfg.trainable == "head" else agent.model).parameters())
    for p in agent.model.parameters():
        p.requires_grad_(any(p is q for q in actor))
    heads = [agent.log_std, *agent.value_reward.parameters(), *agent.value_cost.parameters()]
    return torch.optim.Adam([{"params": actor, "lr": cfg.lr}, {"params": heads, "lr": cfg.head_lr}], eps=1e-5)


def _save_checkpoint(root: Path, agent: ActorCritic, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """agent + Adam moments in safetensors, the rest in JSON; temp directory renamed into place."""
    with atomic_dir(root / "checkpoint", replace=True) as tmp:
        tensors = {f"agent.{k}": v.detach().contiguous() for k, v in agent.state_dict().items()}
        osd = optimizer.state_dict()
        for i, s in osd["state"].items():
            tensors |= {f"optim.{i}.{k}": v.contiguous() for k, v in s.items()}
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "param_groups": osd["param_groups"]}))


def _load_checkpoint(root: Path, agent: ActorCritic, optimizer: torch.optim.Optimizer) -> dict:
    d = root / "checkpoint"
    try:
        tensors = load_file(str(d / "state.safetensors"))
        state = json.loads((d / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"safe-RL checkpoint {d} is unreadable: {e}") from None
    agent.load_state_dict({k[len("agent."):]: v for k, v in tensors.items() if k.startswith("agent.")})
    moments: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            moments.setdefault(int(i), {})[name] = v
    optimizer.load_state_dict({"state": moments, "param_groups": state.pop("param_groups")})
    return state


def evaluate_constraint(agent: ActorCritic, policy: Policy, env, cfg: SafeRLConfig) -> dict:
    """The deterministic (mean-action) policy on held-out scenes: success, cost and violations."""
    eps = [run_episode(agent, policy, env, EVAL_SEEDS + i, cfg, None) for i in range(cfg.eval_episodes)]
    return summarize_episodes(eps, cfg.cost_limit)


def summarize_episodes(episodes: list[dict], cost_limit: float) -> dict:
    from vlaforge.eval.stats import wilson_interval

    k, n = sum(e["success"] for e in episodes), len(episodes)
    cost = [e["cost"] for e in episodes]
    return {"episodes": n, "success_rate": k / n, "ci95": list(wilson_interval(k, n)), "cost": float(np.mean(cost)),
            "cost_std": float(np.std(cost)), "cost_limit": cost_limit,
            "within_limit": float(np.mean([c <= cost_limit for c in cost])),
            "length": float(np.mean([e["length"] for e in episodes])),
            "violations": {kind: float(np.mean([e["violations"][kind] for e in episodes])) for kind in VIOLATIONS}}


def safe_finetune(cfg: SafeRLConfig, show_progress: bool = True) -> dict:
    """Run (or resume) constrained fine-tuning; writes metrics.jsonl, summary.json and policy/."""
    if not cfg.policy:
        raise ValueError("safe-rl needs --policy=DIR (a trained regression-head policy)")
    policy = load_torch_policy(Path(cfg.policy))
    horizon = check_config(cfg, policy)
    root = Path(cfg.output_dir)
    resume = cfg.resume and (root / "checkpoint").exists()  # a resume before the first round starts over
    open_run_dir(root, resume, (root / "checkpoint").exists(), "safe-RL")
    save_config(root, cfg)
    torch.manual_seed(cfg.seed)
    agent = ActorCritic(policy.model, horizon, cfg.init_std)
    agent.eval()  # no dropout or batch statistics: sampling and updates see the same network
    optimizer = _optimizer(agent, cfg)
    from vlaforge.envs import policy_env

    env = policy_env(policy.meta, cfg.task, cfg.split)
    state = {"iteration": 0, "lagrange": cfg.lagrange_init if cfg.algorithm == "ppo-lagrangian" else 0.0}
    metrics_path = root / "metrics.jsonl"
    if resume:
        state = _load_checkpoint(root, agent, optimizer)
        truncate_metrics(metrics_path, lambda row: row["iteration"] <= state["iteration"])
        before = state["before"]
    else:
        metrics_path.write_text("")
        before = evaluate_constraint(agent, policy, env, cfg)
        state["before"] = before
    progress = Progress(TextColumn(f"[bold]{cfg.algorithm}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), disable=not show_progress)
    with progress:
        bar = progress.add_task("rl", total=cfg.iterations, completed=state["iteration"], status="")
        while state["iteration"] < cfg.iterations:
            it, t0 = state["iteration"], time.perf_counter()
            gen = torch.Generator().manual_seed(step_seed(cfg.seed, it))
            base = RL_SCENES + cfg.seed * TASK_STRIDE + it * cfg.episodes_per_iteration
            episodes = [run_episode(agent, policy, env, base + i, cfg, gen) for i in range(cfg.episodes_per_iteration)]
            j_cost = float(np.mean([e["cost"] for e in episodes]))
            if cfg.algorithm == "ppo-lagrangian":  # the multiplier first: this round's update sees it
                state["lagrange"] = max(0.0, state["lagrange"] + cfg.lagrange_lr * (j_cost - cfg.cost_limit))
            stats = update(agent, optimizer, episodes, state["lagrange"], cfg, gen)
            row = {"iteration": it + 1, "episodes": len(episodes),
                   "return": float(np.mean([e["return"] for e in episodes])),
                   "success_rate": float(np.mean([e["success"] for e in episodes])), "cost": j_cost,
                   "cost_limit": cfg.cost_limit, "lagrange": state["lagrange"],
                   "length": float(np.mean([e["length"] for e in episodes])),
                   "std": float(agent.log_std.detach().exp().mean()), **stats, "seconds": time.perf_counter() - t0}
            with metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            state["iteration"] = it + 1
            _save_checkpoint(root, agent, optimizer, state)
            progress.update(bar, advance=1, status=f"success {row['success_rate']:.0%} cost {j_cost:.1f} "
                                                    f"lambda {state['lagrange']:.2f}")
    after = evaluate_constraint(agent, policy, env, cfg)
    policy.meta = dict(policy.meta, safe_rl={"algorithm": cfg.algorithm, "task": cfg.task, "cost_terms": cfg.cost_terms,
                                             "cost_limit": cfg.cost_limit, "source": cfg.policy})
    policy.save(root / "policy")
    curve = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    summary = {"config": dataclasses.asdict(cfg), "before": before, "after": after, "curve": curve,
               "policy": str(root / "policy")}
    from vlaforge.files import atomic_write_json

    atomic_write_json(root / "summary.json", summary)
    return summary
