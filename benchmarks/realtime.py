"""Chunk boundaries under inference latency: naive asynchronous chunking against temporal
ensembling and real-time chunking (RTC), with 0-200 ms of latency injected into every query.

    python benchmarks/realtime.py [--episodes=6] [--latencies=[0,50,100,200]]
    python benchmarks/realtime.py --policy=DIR     # a trained flow/dit policy of the tabletop suite

The policy is a flow-head policy trained on the small cell (reach, push, pick_place,
press_button x 25 demos, the quickstart's recipe, 1100 steps), unless --policy names one. Every
(mode, latency) cell runs the same episodes (tasks x seeds) in real time at 20 Hz, replanning
after 4 of 8 actions; ensembling queries every tick (ACT, m = 0.01). Per cell: success with
its Wilson interval, deadline misses, and the action jump and jerk at the ticks where a new
chunk takes over (vlaforge.deploy.control_loop.smoothness); each mode against naive at the
same latency, paired by episode: McNemar on success, a paired bootstrap on the jump at
switches. Writes benchmarks/results/realtime.{json,md}.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from common import arg, cache_root, collect_once, small_cell, stage, write

from vlaforge.deploy.control_loop import SMOOTHNESS, DelayedPolicy, RealTimeController
from vlaforge.envs import policy_env
from vlaforge.eval.compare import bootstrap_difference, mcnemar_exact
from vlaforge.eval.config import QuickstartConfig
from vlaforge.eval.stats import wilson_interval
from vlaforge.models.config import PolicyConfig
from vlaforge.runtime.policy import load_policy, on_policy_thread
from vlaforge.seeds import EVAL_SEEDS
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train

MODES = {"naive": {}, "ensembling": {"ensemble": 0.01}, "rtc": {"rtc": True}}
RATE_HZ, HORIZON = 20.0, 4


def flow_policy(root: Path) -> Path:
    given = arg("policy", "")
    if given:
        return Path(given)
    data = collect_once(small_cell(), root / "data")
    run = root / "train"
    with stage("train", reused=(run / "policy").exists()):
        if not (run / "policy").exists():
            recipe = QuickstartConfig().train
            train(TrainConfig(dataset=str(data), output_dir=str(run), steps=1100, tracking="none",
                              grounding_scenes=recipe.grounding_scenes, optim=recipe.optim,
                              policy=PolicyConfig(head="flow"), resume=(run / "checkpoints").exists()),
                  show_progress=False)
    return run / "policy"


def run_cell(policy, tasks: list[str], episodes: int, mode: str, latency_ms: float) -> list[dict]:
    agent = DelayedPolicy(policy, latency_ms / 1000) if latency_ms else policy
    ctl = RealTimeController(agent, RATE_HZ, HORIZON, asynchronous=True, **MODES[mode])
    out = []
    for task in tasks:
        env = policy_env(policy.meta, task, "train")
        for i in range(episodes):
            out.append({"task": task, "seed": EVAL_SEEDS + i, **ctl.run_episode(env, EVAL_SEEDS + i).summary()})
        env.close()
    return out


def cell_figures(eps: list[dict]) -> dict:
    k, n = sum(e["success"] for e in eps), len(eps)
    steps = max(1, sum(e["steps"] for e in eps))
    return {"success_rate": k / n, "successes": k, "episodes": n, "ci95": list(wilson_interval(k, n)),
            "miss_rate": sum(e["deadline_misses"] for e in eps) / steps,
            **{m: float(np.nanmean([e[m] for e in eps])) for m in SMOOTHNESS}}


def versus(a: list[dict], b: list[dict]) -> dict:
    """Mode a against mode b on the same episodes."""
    x, y = np.array([e["success"] for e in a]), np.array([e["success"] for e in b])
    ja, jb = np.array([e["jump_at_switch"] for e in a]), np.array([e["jump_at_switch"] for e in b])
    both = np.isfinite(ja) & np.isfinite(jb)
    return {"success_difference": float(x.mean() - y.mean()), "mcnemar_p": mcnemar_exact(x, y),
            "success_bootstrap_ci95": list(bootstrap_difference(x, y, 10_000, 0, paired=True)),
            "jump_difference": float(ja[both].mean() - jb[both].mean()) if both.any() else float("nan"),
            "jump_bootstrap_ci95": list(bootstrap_difference(ja[both], jb[both], 10_000, 0, paired=True))
            if both.sum() > 1 else [float("nan")] * 2, "pairs": int(len(x))}


def main() -> None:
    episodes = int(arg("episodes", "6"))
    latencies = [float(v) for v in arg("latencies", "[0,50,100,200]").strip("[]").split(",")]
    root = cache_root("runs/bench_realtime")
    # Training, loading and every query on the policy thread, as the control loop runs it.
    policy_dir = on_policy_thread(flow_policy, root)
    policy = on_policy_thread(load_policy, policy_dir)
    tasks = policy.meta["tasks"]
    cells: dict[str, dict[str, list[dict]]] = {}
    for latency in latencies:
        for mode in MODES:
            path = root / "cells" / f"{mode}_{latency:g}.json"
            with stage(f"{mode}, +{latency:g} ms", reused=path.is_file()):
                if not path.is_file():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(run_cell(policy, tasks, episodes, mode, latency)))
            cells.setdefault(f"{latency:g}", {})[mode] = json.loads(path.read_text())
    figures = {"policy": str(policy_dir), "head": policy.cfg.head, "tasks": tasks, "episodes_per_task": episodes,
               "rate_hz": RATE_HZ, "horizon": HORIZON, "chunk_size": policy.cfg.chunk_size, "latencies_ms": latencies,
               "modes": MODES, "cells": {}, "versus_naive": {}}
    rows = []
    for latency, modes in cells.items():
        figures["cells"][latency] = {m: cell_figures(eps) for m, eps in modes.items()}
        figures["versus_naive"][latency] = {m: versus(eps, modes["naive"]) for m, eps in modes.items() if m != "naive"}
        for m, c in figures["cells"][latency].items():
            v = figures["versus_naive"][latency].get(m)
            rows.append({"latency ms": latency, "mode": m, "success": f"{100 * c['success_rate']:.1f}%",
                         "ci95": f"[{100 * c['ci95'][0]:.0f}, {100 * c['ci95'][1]:.0f}]",
                         "misses": f"{100 * c['miss_rate']:.1f}%", "jump at switch": f"{c['jump_at_switch']:.3f}",
                         "jump elsewhere": f"{c['jump_elsewhere']:.3f}", "jerk at switch": f"{c['jerk_at_switch']:.3f}",
                         "vs naive: success, McNemar p": "" if v is None else
                         f"{100 * v['success_difference']:+.1f}, p={v['mcnemar_p']:.2g}",
                         "vs naive: jump [95% CI]": "" if v is None else
                         f"{v['jump_difference']:+.3f} [{v['jump_bootstrap_ci95'][0]:+.3f}, "
                         f"{v['jump_bootstrap_ci95'][1]:+.3f}]"})
    write("realtime", figures, rows, "Chunk boundaries under latency: naive async, temporal ensembling, real-time "
          "chunking", seeds={"collect_scenes_from": 0, "train": 0, "eval_scenes_from": EVAL_SEEDS, "bootstrap": 0})


if __name__ == "__main__":
    main()
