"""Long-horizon chains, the CALVIN protocol on the tabletop suite: ``length`` instructions given
one after another in one scene, without a reset; a chain stops at its first failed instruction.

Reported as in CALVIN: the share of chains that complete at least 1, 2, ... ``length``
instructions (with Wilson 95% intervals) and the average completed length (with a bootstrap
95% interval). Instructions are drawn per chain from the chainable families the policy was
trained on, never the same family twice in a row and the drawer (which stays open) at most once.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlaforge.config import save_yaml
from vlaforge.eval.config import ChainConfig
from vlaforge.eval.report import rate_curve
from vlaforge.eval.stats import wilson_interval
from vlaforge.files import atomic_write_json
from vlaforge.runtime.episode import run_chunks
from vlaforge.seeds import EVAL_SEEDS
from vlaforge.webpage import embed, write_page


def draw_chain(families: list[str], length: int, rng: np.random.Generator) -> list[str]:
    """A sequence of ``length`` families: no immediate repeat, open_drawer at most once."""
    chain: list[str] = []
    for _ in range(length):
        options = [f for f in families if (not chain or f != chain[-1]) and not (f == "open_drawer" and f in chain)]
        if not options:
            raise ValueError(f"cannot draw a chain of {length} from {families}: add families or shorten it")
        chain.append(options[rng.integers(len(options))])
    return chain


@dataclass(frozen=True)
class ChainJob:
    """One chain for a worker: the policy's metadata (its env), the families a chain draws from,
    how many instructions, the split, the chain's seed (scene and instruction order), the step
    budget of each instruction and the actions executed per chunk."""

    meta: dict
    families: list[str]
    length: int
    split: str
    seed: int
    budget: int
    horizon: int


def run_chain(job: ChainJob) -> dict:
    """One chain's outcome: the instructions drawn, how many were completed, each one's steps."""
    from vlaforge.envs import policy_env
    from vlaforge.envs.tabletop.tasks import chain_subtask
    from vlaforge.eval.rollout import worker_policy

    policy = worker_policy()
    env = policy_env(job.meta, job.families[0], job.split)
    obs, _ = env.reset(seed=job.seed)
    rng = np.random.default_rng(job.seed)
    sequence = draw_chain(job.families, job.length, rng)
    policy.reset(job.seed)
    done = []
    for family in sequence:
        sub = chain_subtask(env.episode, family, job.split, rng)
        obs = env.set_subtask(sub)
        end = run_chunks(env, obs, lambda o: policy.act(o)[:job.horizon], budget=job.budget, stop_on_truncation=False)
        obs = end.obs
        done.append({"task": family, "instruction": sub.instruction, "success": end.success, "steps": end.steps})
        if not end.success:
            break
    completed = sum(d["success"] for d in done)
    return {"seed": job.seed, "sequence": sequence, "completed": completed, "instructions": done}


def evaluate_chains(cfg: ChainConfig, show_progress: bool = True) -> dict:
    """Run ``cfg.chains`` chains; write chains.json and report.html."""
    from vlaforge.envs.tabletop.tasks import CHAIN_FAMILIES
    from vlaforge.eval.rollout import load_worker_policy
    from vlaforge.runtime.policy import load_policy

    if not cfg.policy:
        raise ValueError("chains needs --policy=DIR (a policy directory)")
    if cfg.chains < 1 or cfg.length < 1:
        raise ValueError(f"chains and length must be >= 1, got {cfg.chains} and {cfg.length}")
    policy = load_policy(cfg.policy)
    meta = policy.meta
    if meta.get("suite") != "tabletop":
        raise ValueError(f"long-horizon chains run on the tabletop suite; this policy was trained on {meta.get('suite')!r}")
    for t in cfg.tasks:
        if t not in CHAIN_FAMILIES:
            raise KeyError(f"task {t!r} cannot be chained; chainable: {', '.join(CHAIN_FAMILIES)}")
    families = list(cfg.tasks) or [t for t in CHAIN_FAMILIES if t in meta["tasks"]]
    if len(families) < 2:
        raise ValueError(f"a chain needs at least two chainable tasks; the policy has {families}")
    draw_chain(families, cfg.length, np.random.default_rng(0))  # an impossible chain fails here
    budget = cfg.steps_per_instruction or meta["env"].get("max_steps") or 100
    horizon = cfg.horizon(policy.cfg.chunk_size)
    if cfg.seed < EVAL_SEEDS:
        raise ValueError(f"chain seeds start at {EVAL_SEEDS} or above (below are training scenes), got {cfg.seed}")
    out = Path(cfg.output_dir) if cfg.output_dir else Path(cfg.policy).parent / "chains" / cfg.split
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    jobs = [ChainJob(meta, families, cfg.length, cfg.split, cfg.seed + i, budget, horizon) for i in range(cfg.chains)]
    records = sorted(cfg.map(run_chain, jobs, load_worker_policy, (cfg.policy,), ordered=False),
                     key=lambda r: r["seed"])
    summary = summarize_chains(records, cfg.length) | {"policy": cfg.policy, "split": cfg.split, "families": families,
                                                       "steps_per_instruction": budget, "chains_detail": records}
    atomic_write_json(out / "chains.json", summary)
    write_chains_report(summary, out)
    return summary


def summarize_chains(records: list[dict], length: int, samples: int = 10000) -> dict:
    """Success at each chain position (share completing at least i instructions) and the average
    completed length with a percentile-bootstrap 95% interval."""
    completed = np.array([r["completed"] for r in records])
    n = len(completed)
    positions = []
    for i in range(1, length + 1):
        k = int(np.sum(completed >= i))
        positions.append({"position": i, "successes": k, "rate": k / n, "ci95": list(wilson_interval(k, n))})
    boot = np.random.default_rng(0).choice(completed, (samples, n)).mean(1)
    per_task: dict[str, list[bool]] = {}
    for r in records:
        for d in r["instructions"]:
            per_task.setdefault(d["task"], []).append(d["success"])
    return {"chains": n, "length": length, "positions": positions, "average_length": float(completed.mean()),
            "average_length_ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
            "per_task": {t: {"attempts": len(v), "success_rate": sum(v) / len(v)} for t, v in per_task.items()}}


def write_chains_report(s: dict, out: Path) -> Path:
    positions = s["positions"]
    plot = rate_curve([p["position"] for p in positions], [p["rate"] for p in positions], [p["ci95"] for p in positions],
                      "instructions completed in a row (at least)", "share of chains (95% CI)", ticks_at_x=True)
    (out / "chains.png").write_bytes(plot)
    rows = "".join(f"<tr><td>{p['position']}</td><td>{p['successes']}/{s['chains']}</td><td>{p['rate']:.1%} "
                   f"[{p['ci95'][0]:.1%}, {p['ci95'][1]:.1%}]</td></tr>" for p in s["positions"])
    tasks = "".join(f"<tr><td>{html.escape(t)}</td><td>{v['attempts']}</td><td>{v['success_rate']:.1%}</td></tr>"
                    for t, v in s["per_task"].items())
    lo, hi = s["average_length_ci95"]
    body = (f"<p>Policy <code>{html.escape(s['policy'])}</code>: {s['chains']} chains of {s['length']} instructions "
            f"({', '.join(s['families'])}), {s['steps_per_instruction']} steps each. <b>Average completed length "
            f"{s['average_length']:.2f}</b> [{lo:.2f}, {hi:.2f}].</p>{embed(plot)}<table><tr><th>position</th>"
            f"<th>chains</th><th>rate [95% CI]</th></tr>{rows}</table><h2>Per instruction family</h2><table><tr>"
            f"<th>task</th><th>attempts</th><th>success</th></tr>{tasks}</table>")
    return write_page(out, "long-horizon chains", body)
