"""Sim-to-real transfer, measured sim-to-sim: policies trained without domain randomization, with
each randomization family and with all of them, evaluated in the source simulation and in the
held-out target domains real-proxy-A/B/C and in another simulator (the tasks rebuilt in
PyBullet, tabletop-bullet); domain adaptation on top of DR (few-shot fine-tuning
on k target demonstrations, CORAL feature alignment on unlabelled target frames, and continued
training as the control); robustness sweeps for the no-DR and all-DR policies.

    python benchmarks/sim2real.py --steps=2000 --demos=80 --episodes=30 --adapt_steps=200 --sweep_episodes=6
                                                  # the CPU run of the results (~100 min, 2 cores)
    python benchmarks/sim2real.py --steps=3000 --demos=100 --episodes=50   # larger

Re-running resumes: datasets, policies and evaluations already on disk are reused.
Writes benchmarks/results/sim2real.{json,md} and sim2real_{transfer,robustness}.png.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib
import numpy as np
from common import RESULTS, arg, cache_root, cached_json, stage, write

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vlaforge.data.collect import collect  # noqa: E402
from vlaforge.data.config import CollectConfig  # noqa: E402
from vlaforge.envs import get_suite  # noqa: E402
from vlaforge.envs.config import DomainConfig, EnvConfig  # noqa: E402
from vlaforge.envs.randomization import TARGETS, randomize  # noqa: E402
from vlaforge.eval.config import EvalConfig, TransferConfig  # noqa: E402
from vlaforge.eval.robustness import sweep  # noqa: E402
from vlaforge.eval.rollout import brief, evaluate  # noqa: E402
from vlaforge.eval.stats import difference_interval  # noqa: E402
from vlaforge.eval.transfer import transfer  # noqa: E402
from vlaforge.seeds import EVAL_SEEDS  # noqa: E402
from vlaforge.train.checkpoint import latest_checkpoint  # noqa: E402
from vlaforge.train.config import OptimConfig, TrainConfig  # noqa: E402
from vlaforge.train.trainer import train  # noqa: E402

ROOT = Path("runs/bench_sim2real")  # main() moves it to this invocation's cache root
TASKS = ["pick_place", "open_drawer", "press_button"]
VARIANTS = {"none": "", "visual": "dr-visual", "physics": "dr-physics", "sensor": "dr-sensor", "all": "dr-all"}
SWEEP = ["lighting=0..1", "camera=0..1", "background=0..1", "friction=0..1", "actuator_gain=0..1", "image_noise=0..1",
         "latency=0..1", "all=0..1"]
CROSS_SIM = "tabletop-bullet"
TARGET_DEMO_SEED = 700_000  # target-domain demonstrations come from scenes apart from the source data's


def dataset(name: str, domain: DomainConfig, episodes: int, seed: int = 0) -> Path:
    out = ROOT / f"data_{name}"
    cfg = CollectConfig(env=EnvConfig(tasks=TASKS), episodes_per_task=episodes, output=str(out), seed=seed,
                        domain=domain, resume=(out / "meta").exists())
    with stage(f"collect {name}", reused=(out / "meta").exists()):
        return collect(cfg, show_progress=False)


def train_policy(run: Path, data: Path, steps: int, **kw) -> Path:
    done = (run / "policy").exists()
    with stage(run.name, reused=done):
        if done:
            return run / "policy"
        cfg = TrainConfig(dataset=str(data), output_dir=str(run), steps=steps, tracking="none",
                          resume=latest_checkpoint(run / "checkpoints") is not None, **kw)
        return train(cfg, show_progress=False)


def expert_success(target: str, episodes: int) -> dict:
    """How often the scripted expert succeeds in a target domain (or simulator): a target the
    expert cannot solve would measure the domain, not the policy."""
    suite = get_suite(CROSS_SIM if target == CROSS_SIM else "tabletop")
    domain = DomainConfig() if target == CROSS_SIM else DomainConfig(preset=target)
    rates = {}
    for task in TASKS:
        env = randomize(suite.make_env(task, "train", suite.resolve(EnvConfig(tasks=TASKS))), domain)
        expert = suite.make_expert(env.unwrapped)
        wins = 0
        for i in range(episodes):
            env.reset(seed=2 * 10**9 + i)
            expert.reset()
            done = False
            while not done:
                _, _, terminated, truncated, info = env.step(expert.act())
                done = terminated or truncated
            wins += bool(info["success"])
        env.close()
        rates[task] = wins / episodes
    return rates


def adaptation(target: str, base: Path, source_data: Path, k: int, steps: int, episodes: int) -> dict:
    """Few-shot fine-tuning, feature alignment and continued training (control) from ``base``,
    each evaluated in ``target``."""
    target_data = dataset(f"target_{target}", DomainConfig(preset=target), k, seed=TARGET_DEMO_SEED)
    optim = OptimConfig(lr=3e-4, warmup_steps=30)
    runs = {
        "few_shot": dict(data=target_data),
        "align": dict(data=source_data, align_dataset=str(target_data)),
        "continued": dict(data=source_data),
    }
    out = {}
    for method, kw in runs.items():
        run = ROOT / f"adapt_{target}_{method}"
        data = kw.pop("data")
        policy = train_policy(run, data, steps, init_from=str(base), optim=optim, **kw)
        res = cached_json(run / "eval" / "results.json", lambda: evaluate(EvalConfig(
            policy=str(policy), split="train", episodes=episodes, domain=DomainConfig(preset=target),
            output_dir=str(run / "eval"), videos_per_task=1), False))
        out[method] = brief(res)
    return out


def cross_simulator(policy: Path, source: dict, out: Path, episodes: int) -> dict:
    """The policy in the PyBullet build of its tasks, with the gap to its MuJoCo source result."""
    res = cached_json(out / "results.json", lambda: evaluate(EvalConfig(
        policy=str(policy), split="train", episodes=episodes, suite=CROSS_SIM, output_dir=str(out)), False))
    row = brief(res)
    k0 = source.get("successes", round(source["success_rate"] * source["episodes"]))  # older transfer.json lack it
    return row | {"gap": source["success_rate"] - row["success_rate"],
                  "gap_ci95": list(difference_interval(k0, source["episodes"], row["successes"], row["episodes"]))}


def plot_transfer(table: dict, out: Path) -> None:
    domains = list(next(iter(table.values())))
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    width = 0.8 / len(table)
    for i, (variant, rows) in enumerate(table.items()):
        xs = np.arange(len(domains)) + i * width
        rates = [rows[d]["success_rate"] for d in domains]
        err = [[r - rows[d]["ci95"][0] for r, d in zip(rates, domains)], [rows[d]["ci95"][1] - r for r, d in zip(rates, domains)]]
        ax.bar(xs, rates, width, yerr=err, capsize=2, label=f"DR: {variant}")
    ax.set_xticks(np.arange(len(domains)) + 0.4 - width / 2, domains)
    ax.set_ylabel("success (95% CI)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, 1.15))
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_robustness(curves: dict, out: Path) -> None:
    factors = list(next(iter(curves.values())))
    cols = 3
    fig, axes = plt.subplots((len(factors) + cols - 1) // cols, cols, figsize=(9, 2.4 * ((len(factors) + cols - 1) // cols)),
                             dpi=110, sharex=True, sharey=True)
    for ax, factor in zip(axes.flat, factors):
        for variant, by_factor in curves.items():
            pts = by_factor[factor]
            xs = [p["severity"] for p in pts]
            ax.plot(xs, [p["success_rate"] for p in pts], marker="o", ms=3, label=f"DR: {variant}")
            ax.fill_between(xs, [p["ci95"][0] for p in pts], [p["ci95"][1] for p in pts], alpha=0.15)
        ax.set_title(factor, fontsize=9)
        ax.set_ylim(0, 1.05)
    axes.flat[0].legend(fontsize=7)
    for ax in axes.flat[len(factors):]:
        ax.axis("off")
    fig.supxlabel("severity")
    fig.supylabel("success")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    steps, demos = int(arg("steps", "1500")), int(arg("demos", "60"))
    episodes, k = int(arg("episodes", "20")), int(arg("k", "10"))
    sweep_episodes, adapt_steps = int(arg("sweep_episodes", "10")), int(arg("adapt_steps", "300"))
    global ROOT
    ROOT = cache_root(ROOT)
    t0 = time.perf_counter()
    table, policies, data = {}, {}, {}
    for variant, preset in VARIANTS.items():
        data[variant] = dataset(variant, DomainConfig(preset=preset), demos)
        policies[variant] = train_policy(ROOT / f"train_{variant}", data[variant], steps)
        out = ROOT / f"transfer_{variant}"
        summary = cached_json(out / "transfer.json", lambda: transfer(TransferConfig(
            policy=str(policies[variant]), targets=list(TARGETS), episodes=episodes, output_dir=str(out)), False))
        table[variant] = summary["domains"]
        table[variant][CROSS_SIM] = cross_simulator(policies[variant], table[variant]["source"],
                                                    ROOT / f"bullet_{variant}", episodes)
        print(variant, {d: round(r["success_rate"], 3) for d, r in table[variant].items()}, flush=True)
    experts = cached_json(ROOT / "expert_success.json", name="expert success in the targets", make=lambda: _write(ROOT / "expert_success.json",
                                                                 {t: expert_success(t, 10) for t in [*TARGETS, CROSS_SIM]}))
    adapt = {}
    for target in TARGETS:
        adapt[target] = adaptation(target, policies["all"], data["all"], k, adapt_steps, episodes)
        print(target, {m: round(r["success_rate"], 3) for m, r in adapt[target].items()}, flush=True)
    curves = {}
    for variant in ("none", "all"):
        out = ROOT / f"robustness_{variant}"
        res = cached_json(out / "robustness.json", lambda: sweep(EvalConfig(
            policy=str(policies[variant]), split="train", episodes=sweep_episodes, perturb=SWEEP,
            output_dir=str(out), videos_per_task=0), False))
        curves[variant] = res["curves"]
    plot_transfer(table, RESULTS / "sim2real_transfer.png")
    plot_robustness(curves, RESULTS / "sim2real_robustness.png")
    rows = []
    for variant, domains in table.items():
        row = {"trained with": variant if variant != "none" else "no DR"}
        for name, r in domains.items():
            row[name] = f"{100 * r['success_rate']:.1f} [{100 * r['ci95'][0]:.0f}, {100 * r['ci95'][1]:.0f}]"
        row["mean gap (A-C)"] = f"{100 * np.mean([domains[t]['gap'] for t in TARGETS]):+.1f}"
        rows.append(row)
    base = {t: table["all"][t] for t in TARGETS}
    for method in ("continued", "few_shot", "align"):
        row = {"trained with": f"all DR + {method.replace('_', '-')}", "source": ""}
        for t in TARGETS:
            r, b = adapt[t][method], base[t]
            n_b = b["episodes"]
            lo, hi = difference_interval(r["successes"], r["episodes"], round(b["success_rate"] * n_b), n_b)
            row[t] = (f"{100 * r['success_rate']:.1f} [{100 * r['ci95'][0]:.0f}, {100 * r['ci95'][1]:.0f}] "
                      f"(gain {100 * (r['success_rate'] - b['success_rate']):+.1f} [{100 * lo:+.0f}, {100 * hi:+.0f}])")
        row[CROSS_SIM] = ""
        row["mean gap (A-C)"] = ""
        rows.append(row)
    figures = {
        "protocol": {"suite": "tabletop", "tasks": TASKS, "demos_per_task": demos, "train_steps": steps,
                     "eval_episodes_per_task_per_domain": episodes, "few_shot_k_per_task": k, "adapt_steps": adapt_steps,
                     "sweep_episodes_per_task": sweep_episodes, "split": "train (new scene seeds >= 1e9)"},
        "transfer": table, "adaptation": adapt, "expert_success_in_targets": experts, "robustness": curves,
        "wall_minutes": (time.perf_counter() - t0) / 60,
    }
    write("sim2real", figures, rows, "Sim-to-real transfer (sim-to-sim proxy): success % [95% CI] by training domain",
          seeds={"collect_scenes_from": 0, "target_demos_from": TARGET_DEMO_SEED, "train": 0,
                 "eval_scenes_from": EVAL_SEEDS, "expert_check_scenes_from": 2 * 10**9})


def _write(path: Path, payload: dict) -> dict:
    path.write_text(json.dumps(payload, indent=2))
    return payload


if __name__ == "__main__":
    main()
