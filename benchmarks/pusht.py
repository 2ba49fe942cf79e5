"""Push-T: the scripted pusher's success on the evaluation scenes, and a policy trained on its
demonstrations.

    python benchmarks/pusht.py [--expert_scenes=100] [--demos=100] [--noise=0.1] [--steps=3000]
                               [--episodes=50] [--seeds=1]

- **Expert**: the scripted model-predictive pusher (vlaforge.envs.pusht.expert) on
  ``--expert_scenes`` evaluation scenes (reset seeds EVAL_SEEDS + i, the scenes policies are
  evaluated on), 300-step limit: success (more than 95% of the target covered), steps to success,
  seconds per episode on one core.
- **Policy**: ``--demos`` expert demonstrations (DART-style noise ``--noise`` on the executed
  actions, relative units: 0.1 = 5 px), the trainer's default policy trained ``--steps`` steps
  per training seed, evaluated on ``--episodes`` scenes of the train split; success with Wilson
  intervals, mean and sd over seeds.

The published anchor is Diffusion Policy's Push-T score (Chi et al. 2023), an average of the
maximum coverage reached, on 200 human demonstrations; the success here is the stricter
benchmark flag (coverage above 95%) on scripted demonstrations. Writes
benchmarks/results/pusht.{json,md}.
"""

from __future__ import annotations

import time

import numpy as np
from common import arg, cache_root, cached_json, collect_once, stage, write

from vlaforge.data.config import CollectConfig
from vlaforge.envs import get_suite
from vlaforge.envs.config import EnvConfig
from vlaforge.eval.config import EvalConfig
from vlaforge.eval.rollout import evaluate
from vlaforge.eval.stats import seed_summary, wilson_interval
from vlaforge.files import atomic_write_json
from vlaforge.seeds import EVAL_SEEDS
from vlaforge.train.checkpoint import latest_checkpoint
from vlaforge.train.config import TrainConfig
from vlaforge.train.trainer import train


def expert_rollouts(scenes: int, out) -> None:
    """The scripted pusher alone on the first ``scenes`` evaluation scenes, written to ``out``."""
    suite = get_suite("pusht")
    env = suite.make_env("push_t", "train", suite.resolve(EnvConfig(suite="pusht")))
    expert = suite.make_expert(env)
    rows = []
    for i in range(scenes):
        t = time.perf_counter()
        env.reset(seed=EVAL_SEEDS + i)
        expert.reset()
        done = truncated = False
        while not (done or truncated):
            _, _, done, truncated, info = env.step(expert.act())
        rows.append({"scene": i, "success": bool(info["success"]), "steps": env.steps, "coverage": info["coverage"],
                     "seconds": time.perf_counter() - t})
        print(f"expert scene {i}: {'success' if rows[-1]['success'] else 'failure'} in {env.steps} steps", flush=True)
    atomic_write_json(out, {"rows": rows})


def main() -> None:
    scenes, demos = int(arg("expert_scenes", "100")), int(arg("demos", "100"))
    noise, steps = float(arg("noise", "0.1")), int(arg("steps", "3000"))
    episodes, seeds = int(arg("episodes", "50")), int(arg("seeds", "1"))
    root = cache_root("runs/bench_pusht")
    experts = cached_json(root / "expert.json", lambda: expert_rollouts(scenes, root / "expert.json"), "expert rollouts")
    data = collect_once(CollectConfig(env=EnvConfig(suite="pusht"), episodes_per_task=demos, noise=noise),
                        root / "data")
    results = []
    for seed in range(seeds):
        run = root / f"seed{seed}"
        done = (run / "policy").exists()
        with stage(f"train seed {seed}", reused=done):
            if not done:
                train(TrainConfig(dataset=str(data), output_dir=str(run), steps=steps, seed=seed, tracking="none",
                                  resume=latest_checkpoint(run / "checkpoints") is not None), False)
        with stage(f"eval seed {seed}"):
            results.append(evaluate(EvalConfig(policy=str(run / "policy"), split="train", episodes=episodes,
                                               videos_per_task=1, output_dir=str(run / "eval")), False))
        print(f"policy seed {seed}: {results[-1]['success_rate']:.1%}", flush=True)
    rows = experts["rows"]
    wins = [r for r in rows if r["success"]]
    figures = {
        "expert": {"scenes": len(rows), "successes": len(wins), "success_rate": len(wins) / len(rows),
                   "ci95": list(wilson_interval(len(wins), len(rows))),
                   "median_steps_to_success": float(np.median([r["steps"] for r in wins])) if wins else None,
                   "mean_final_coverage": float(np.mean([r["coverage"] for r in rows])),
                   "seconds_per_episode": float(np.mean([r["seconds"] for r in rows])),
                   "failures": [{k: r[k] for k in ("scene", "steps", "coverage")} for r in rows if not r["success"]]},
        "policy": seed_summary(results) | {"train_steps": steps, "demos": demos, "noise": noise,
                                           "episodes_per_seed": episodes,
                                           "steps_to_success": [r["efficiency"]["steps_to_success"] for r in results]},
    }
    table = [{"what": "scripted pusher", "success": f"{figures['expert']['success_rate']:.1%}",
              "ci95": figures["expert"]["ci95"], "episodes": len(rows),
              "steps_to_success": figures["expert"]["median_steps_to_success"]}]
    for seed, r in enumerate(results):
        table.append({"what": f"policy, training seed {seed}", "success": f"{r['success_rate']:.1%}", "ci95": r["ci95"],
                      "episodes": r["episodes"], "steps_to_success": r["efficiency"]["steps_to_success"]})
    write("pusht", figures, table, "Push-T: scripted pusher and a policy trained on its demonstrations",
          seeds={"expert_scenes_from": EVAL_SEEDS, "collect_scenes_from": 0, "train": list(range(seeds)),
                 "eval_scenes_from": EVAL_SEEDS})


if __name__ == "__main__":
    main()
