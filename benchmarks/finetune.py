"""Adapting a trained policy to new tasks from few demonstrations: LoRA against full fine-tuning,
head-only fine-tuning and training from scratch, on the Meta-World ML10 held-out tasks.

    python benchmarks/finetune.py [--seeds=3] [--k=[5,10]] [--steps=500] [--base_steps=3000]
                                  [--base_demos=20] [--episodes=10]

One multi-task policy is trained on ML10's ten training tasks (``--base_demos`` scripted demos per
task, ``--base_steps`` steps, seed 0). For each k, k demos per held-out task (drawer-open,
door-close, shelf-place, sweep-into, lever-pull) are collected from scenes apart from the
training ones, and every arm is trained on them for ``--steps`` steps with each training seed:

    scratch  a new policy (peak lr 1e-3)
    head     the base policy, action head only (lr 1e-3)
    lora     the base policy with rank-8 LoRA adapters on every Linear but the head (lr 1e-3)
    full     the base policy, every weight (lr 3e-4)

Each is evaluated on the same held-out scenes (``--episodes`` per task, 500-step limit, positions
randomised). Reported: success per arm, k and seed, mean and sd over seeds, trainable
parameters, and arm against arm paired by seed and scene (t interval over seeds, pooled paired
bootstrap, exact McNemar). Writes benchmarks/results/finetune.{json,md}.
"""

from __future__ import annotations

import json
import statistics
import sys

from common import arg, cache_root, collect_once, seeded_text, stage, write

from vlaforge.data.config import CollectConfig
from vlaforge.envs.config import EnvConfig
from vlaforge.eval.config import EvalConfig
from vlaforge.eval.rollout import evaluate
from vlaforge.eval.stats import paired, seed_summary
from vlaforge.train.checkpoint import latest_checkpoint
from vlaforge.train.config import OptimConfig, TrainConfig
from vlaforge.train.trainer import train

SUITE = "metaworld-ml10"
HELD_OUT_DEMOS_FROM = 500_000  # held-out-task demonstrations come from scenes apart from the training tasks'
ARMS = {"scratch": ("", 1e-3), "head": ("head", 1e-3), "lora": ("lora", 1e-3), "full": ("full", 3e-4)}
COMPARISONS = [("lora", "scratch"), ("full", "scratch"), ("head", "scratch"), ("lora", "full"), ("lora", "head")]


def main(argv: list[str]) -> None:
    n, steps, episodes = int(arg("seeds", "3", argv)), int(arg("steps", "500", argv)), int(arg("episodes", "10", argv))
    ks = [int(k) for k in arg("k", "[5,10]", argv).strip("[]").split(",")]
    base_steps, base_demos = int(arg("base_steps", "3000", argv)), int(arg("base_demos", "20", argv))
    if n < 2:
        raise SystemExit(f"--seeds must be >= 2 (sd and intervals need them), got {n}")
    root = cache_root("runs/bench_finetune")
    env = EnvConfig(suite=SUITE)
    base_data = collect_once(CollectConfig(env=env, split="train", episodes_per_task=base_demos), root / "base_data")
    base_run = root / "base"
    done = (base_run / "policy").exists()
    with stage("train base", reused=done):
        if not done:
            train(TrainConfig(dataset=str(base_data), output_dir=str(base_run), steps=base_steps, tracking="none",
                              resume=latest_checkpoint(base_run / "checkpoints") is not None), False)
    results: dict[int, dict[str, list[dict]]] = {k: {a: [] for a in ARMS} for k in ks}
    params: dict[str, dict] = {}
    for k in ks:
        data = collect_once(CollectConfig(env=env, split="test", episodes_per_task=k, seed=HELD_OUT_DEMOS_FROM),
                            root / f"data_k{k}")
        for seed in range(n):
            for arm, (mode, lr) in ARMS.items():
                run = root / f"k{k}" / arm / f"seed{seed}"
                done = (run / "policy").exists()
                with stage(f"train k={k} {arm} seed {seed}", reused=done):
                    if not done:
                        train(TrainConfig(
                            dataset=str(data), output_dir=str(run), steps=steps, seed=seed, tracking="none",
                            init_from=str(base_run / "policy") if mode else "", finetune=mode or "full",
                            optim=OptimConfig(lr=lr, warmup_steps=max(steps // 10, 1)),
                            resume=latest_checkpoint(run / "checkpoints") is not None), False)
                total = json.loads((run / "train_summary.json").read_text())["params"]
                finetune = json.loads((run / "policy" / "config.json").read_text()).get("finetune", {})
                params[arm] = {"trainable": finetune.get("trainable_params", total), "total": total}
                with stage(f"eval k={k} {arm} seed {seed}"):
                    r = evaluate(EvalConfig(policy=str(run / "policy"), split="test", episodes=episodes, videos_per_task=0,
                                            output_dir=str(run / "eval")), False)
                results[k][arm].append(r)
                print(f"k={k} {arm} seed {seed}: {r['success_rate']:.1%}", flush=True)
    figures = {"suite": SUITE, "held_out_tasks": sorted(results[ks[0]]["scratch"][0]["per_task"]), "k": ks,
               "steps": steps, "base": {"steps": base_steps, "demos_per_task": base_demos},
               "eval_episodes_per_task": episodes, "lr": {a: lr for a, (_, lr) in ARMS.items()},
               "params": params, "arms": {}, "comparisons": {}}
    rows = []
    for k in ks:
        figures["arms"][k] = {a: seed_summary(results[k][a]) for a in ARMS}
        figures["comparisons"][k] = {f"{a} - {b}": paired(results[k][a], results[k][b]) for a, b in COMPARISONS}
        for a in ARMS:
            s = figures["arms"][k][a]
            rows.append({"k": k, "arm": a, "success (mean, sd)": seeded_text(s),
                         "per seed": " / ".join(f"{100 * x:.0f}%" for x in s["per_seed"]),
                         "trainable params": params[a]["trainable"]})
        for name, c in figures["comparisons"][k].items():
            rows.append({"k": k, "arm": name, "success (mean, sd)": f"{100 * c['difference']:+.1f} seed-t "
                         f"[{100 * c['seed_t_ci95'][0]:+.1f}, {100 * c['seed_t_ci95'][1]:+.1f}]",
                         "per seed": f"McNemar p={c['mcnemar_p']:.2g}", "trainable params": ""})
    figures["mean_over_k"] = {a: statistics.fmean(figures["arms"][k][a]["mean"] for k in ks) for a in ARMS}
    write("finetune", figures, rows, f"Few-shot adaptation on the ML10 held-out tasks over {n} training seeds",
          seeds={"base_demos_from": CollectConfig().seed, "held_out_demos_from": HELD_OUT_DEMOS_FROM, "base_train": 0,
                 "train": list(range(n)), "eval_scenes_from": EvalConfig().seed})


if __name__ == "__main__":
    main(sys.argv[1:])
