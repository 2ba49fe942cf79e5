"""Safety: violations per episode with and without the barrier filter for a trained policy, a
random policy and an adversarial one; the filter's success cost and per-step latency; and
constrained fine-tuning (PPO-Lagrangian against unconstrained PPO) with return and cost over
training against the cost limit.

    python benchmarks/safety.py --policy=runs/bench_deploy/train/policy   # reuse a trained policy
    python benchmarks/safety.py                                           # collect + train one first
    python benchmarks/safety.py --episodes=10 --iterations=30 --rl_task=press_button

Every step is judged by vlaforge.safety.cbf.violations on what the robot executed (the filtered
action when the filter is on) and where the end effector went. Episodes use held-out scene seeds,
the same for every actor and both filter settings. Writes benchmarks/results/safety.{json,md},
safety_rl.png and the HTML report safety.html.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib
import numpy as np
from common import RESULTS, arg, cache_root, stage, write

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vlaforge.envs import policy_env  # noqa: E402
from vlaforge.eval.report import interval_bars, png  # noqa: E402
from vlaforge.eval.stats import difference_interval, wilson_interval  # noqa: E402
from vlaforge.runtime.policy import load_policy  # noqa: E402
from vlaforge.safety.audit import AdversarialActor, PolicyActor, RandomActor, audit_episode  # noqa: E402
from vlaforge.safety.cbf import VIOLATIONS  # noqa: E402
from vlaforge.safety.config import SafeRLConfig, SafetyConfig  # noqa: E402
from vlaforge.safety.safe_rl import safe_finetune  # noqa: E402
from vlaforge.seeds import EVAL_SEEDS  # noqa: E402
from vlaforge.webpage import embed, page  # noqa: E402

# The filter's default limits plus one keep-out sphere over the middle of the table (an overhead
# fixture): the trained policy's paths pass below it, the adversarial actor aims at it.
LIMITS = SafetyConfig(keep_out=[[0.0, 0.0, 0.22, 0.03]])
POSITION = ("workspace", "keep_out")


def audit(policy_dir: Path, episodes: int) -> dict:
    """Every actor on every task of the policy, filter off and on, on the same seeds."""
    policy = load_policy(policy_dir)
    horizon = max(1, policy.cfg.chunk_size // 2)
    actors = {"trained": PolicyActor(policy, horizon), "random": RandomActor(), "adversarial": AdversarialActor(LIMITS)}
    out = {}
    for name, actor in actors.items():
        for filtered in (False, True):
            eps = []
            for task in policy.meta["tasks"]:
                env = policy_env(policy.meta, task, "train")
                eps += [dict(audit_episode(env, actor, EVAL_SEEDS + i, LIMITS, filtered), task=task) for i in range(episodes)]
                env.close()
            key = f"{name}/{'filter' if filtered else 'none'}"
            out[key] = summarize(eps)
            print(f"{key:20s} violating steps per episode {out[key]['per_episode']}", flush=True)
    return out


def summarize(eps: list[dict]) -> dict:
    n, k = len(eps), sum(e["success"] for e in eps)
    row = {"episodes": n, "successes": k, "success_rate": k / n, "ci95": list(wilson_interval(k, n)),
           "per_episode": {kind: float(np.mean([e["violations"][kind] for e in eps])) for kind in VIOLATIONS},
           "episodes_with_position_violation": sum(any(e["violations"][p] for p in POSITION) for e in eps)}
    if "filter_ms" in eps[0]:
        ms = np.concatenate([e["filter_ms"] for e in eps])
        row |= {"filter_ms_p50": float(np.percentile(ms, 50)), "filter_ms_p99": float(np.percentile(ms, 99)),
                "interventions_per_episode": float(np.mean([e["interventions"] for e in eps])),
                "event_kinds": sorted({k for e in eps for k in e["event_kinds"]})}
    return row


def safe_rl(root: Path, policy_dir: Path, task: str, iterations: int) -> dict:
    """PPO-Lagrangian and unconstrained PPO from the same policy, settings and seeds."""
    runs = {}
    for algorithm in ("ppo-lagrangian", "ppo"):
        out = root / f"rl_{algorithm}"
        cfg = SafeRLConfig(policy=str(policy_dir), task=task, algorithm=algorithm, iterations=iterations,
                           output_dir=str(out), resume=(out / "checkpoint").exists())
        with stage(f"safe-rl {algorithm}"):
            runs[algorithm] = safe_finetune(cfg, show_progress=False)
    return runs


def plot_rl(runs: dict, out: Path) -> bytes:
    fig, (ax_s, ax_c) = plt.subplots(1, 2, figsize=(10, 3.5), dpi=110)
    for algorithm, run in runs.items():
        it = [r["iteration"] for r in run["curve"]]
        ax_s.plot(it, [100 * r["success_rate"] for r in run["curve"]], marker=".", label=algorithm)
        ax_c.plot(it, [r["cost"] for r in run["curve"]], marker=".", label=algorithm)
    limit = next(iter(runs.values()))["config"]["cost_limit"]
    ax_c.axhline(limit, color="#e45756", ls="--", lw=1, label=f"cost limit {limit:g}")
    ax_s.set(xlabel="iteration", ylabel="training success % (= return x 100)", ylim=(0, 105), title="return")
    ax_c.set(xlabel="iteration", ylabel="cost per episode", title="cost")
    for ax in (ax_s, ax_c):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    return png(fig)


def main() -> None:
    root = cache_root("runs/bench_safety")
    policy = arg("policy", "")
    if policy:
        policy_dir = Path(policy)
    else:
        from deploy import base_policy

        policy_dir = base_policy(root)[0]
    episodes, iterations = int(arg("episodes", "10")), int(arg("iterations", "60"))
    task = arg("rl_task", "press_button")
    with stage("audit"):
        table = audit(policy_dir, episodes)
    runs = safe_rl(root, policy_dir, task, iterations)

    base, filt = table["trained/none"], table["trained/filter"]
    change = filt["success_rate"] - base["success_rate"]
    ci = difference_interval(filt["successes"], filt["episodes"], base["successes"], base["episodes"])
    rows = []
    for key, r in table.items():
        actor, mode = key.split("/")
        rows.append({"actor": actor, "filter": mode, **{f"{k} /ep": round(v, 2) for k, v in r["per_episode"].items()},
                     "episodes w/ position violation": f"{r['episodes_with_position_violation']}/{r['episodes']}",
                     "success %": f"{100 * r['success_rate']:.1f} [{100 * r['ci95'][0]:.0f}, {100 * r['ci95'][1]:.0f}]",
                     "filter p50/p99 ms": f"{r['filter_ms_p50']:.2f}/{r['filter_ms_p99']:.2f}" if "filter_ms_p50" in r else ""})
    rl_rows = []
    for algorithm, run in runs.items():
        last = run["curve"][-10:]
        for when in ("before", "after"):
            r = run[when]
            rl_rows.append(f"| {algorithm} | {when} | {100 * r['success_rate']:.1f} [{100 * r['ci95'][0]:.0f}, "
                           f"{100 * r['ci95'][1]:.0f}] | {r['cost']:.2f} | {r['cost_limit']:g} | {r['violations']['speed']:.1f} | "
                           f"{r['violations']['workspace']:.1f} | {r['length']:.1f} |")
        rl_rows.append(f"| {algorithm} | last 10 training rounds | {100 * np.mean([c['success_rate'] for c in last]):.1f} | "
                       f"{np.mean([c['cost'] for c in last]):.2f} | | | | {np.mean([c['length'] for c in last]):.1f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    rl_png = plot_rl(runs, RESULTS / "safety_rl.png")
    figures = {"policy": str(policy_dir), "limits": dataclasses.asdict(LIMITS), "episodes_per_task": episodes,
               "audit": table, "filter_success_change": change, "filter_success_change_ci95": list(ci),
               "safe_rl": {a: {k: run[k] for k in ("before", "after", "curve")} | {"config": run["config"]}
                           for a, run in runs.items()}}
    write("safety", figures, rows, "Safety: violations with and without the barrier filter; PPO-Lagrangian fine-tuning",
          seeds={"audit_scenes_from": EVAL_SEEDS, "safe_rl": SafeRLConfig.seed, "policy": "--policy or deploy's base"})
    rl_md = [f"## Safe RL on {task}: deterministic evaluation before and after ({iterations} rounds)", "",
             "| algorithm | when | success % | cost per episode | limit | speeding steps | workspace steps | length |",
             "|---|---|---|---|---|---|---|---|", *rl_rows]
    with (RESULTS / "safety.md").open("a") as f:
        f.write("\n" + "\n".join(rl_md) + "\n")
    print("\n".join(rl_md))
    labels = list(table)
    bars = interval_bars(labels, [r["success_rate"] for r in table.values()], [r["ci95"] for r in table.values()],
                         "success with and without the filter")
    md = (RESULTS / "safety.md").read_text()
    body = (f"<p>Policy {policy_dir}; limits {dataclasses.asdict(LIMITS)}; {episodes} episodes per task and setting.</p>"
            f"<p>Filter success change on the trained policy: {100 * change:+.1f} points "
            f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}] (Newcombe 95%).</p>"
            f"<h2>Safe RL: return and cost over training</h2>{embed(rl_png)}"
            f"<h2>Success by actor and filter</h2>{embed(bars)}"
            f"<h2>Table</h2><pre>{md}</pre>")
    (RESULTS / "safety.html").write_text(page("vlaforge safety benchmark", body))


if __name__ == "__main__":
    main()
