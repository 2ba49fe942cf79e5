"""Sim-to-real transfer, measured sim-to-sim: policies trained without domain randomization, with
each randomization family and with all of them, evaluated in the source simulation and in the
held-out target domains real-proxy-A/B/C and in another simulator (the tasks rebuilt in
PyBullet, tabletop-bullet); domain adaptation on top of DR (few-shot fine-tuning
on k target demonstrations, CORAL feature alignment on unlabelled target frames, and continued
training as the control); robustness sweeps for the no-DR and all-DR policies of the first seed.
Every policy is trained once per training seed (``--seeds=N``: 0 .. N-1, default 3) on the same
data, and every evaluation of every domain uses the same scenes, so each DR policy is compared
with the no-DR one, and each adaptation with the all-DR policy it started from, paired by seed and
scene: the t interval over per-seed differences, the pooled paired bootstrap and McNemar's test.
Policies are trained with the quickstart's recipe (grounding co-training on scenes rendered in
each dataset's own domain, peak lr 3e-3, the pretrained subword text encoder); the adaptations
fine-tune without grounding scenes, which in a real target domain could not be rendered.

    python benchmarks/sim2real.py --steps=2000 --demos=80 --episodes=30 --adapt_steps=200 --sweep_episodes=6
                                                  # the CPU run of the results (about 4 h on 2 cores)
    python benchmarks/sim2real.py --steps=3000 --demos=100 --episodes=50   # larger

Re-running resumes: datasets, policies and evaluations already on disk are reused.
Writes benchmarks/results/sim2real.{json,md} and sim2real_{transfer,robustness}.png.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import matplotlib
import numpy as np
from common import RESULTS, arg, cache_root, cached_json, paired_text, seeded_text, stage, write

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vlaforge.data.collect import collect  # noqa: E402
from vlaforge.data.config import CollectConfig  # noqa: E402
from vlaforge.envs import get_suite  # noqa: E402
from vlaforge.envs.config import DomainConfig, EnvConfig  # noqa: E402
from vlaforge.envs.randomization import TARGETS, randomize  # noqa: E402
from vlaforge.eval.config import EvalConfig, QuickstartConfig, TransferConfig  # noqa: E402
from vlaforge.eval.robustness import sweep  # noqa: E402
from vlaforge.eval.rollout import evaluate  # noqa: E402
from vlaforge.eval.stats import paired, seed_summary  # noqa: E402
from vlaforge.eval.transfer import transfer  # noqa: E402
from vlaforge.seeds import EVAL_SEEDS  # noqa: E402
from vlaforge.train.checkpoint import latest_checkpoint  # noqa: E402
from vlaforge.train.config import OptimConfig  # noqa: E402
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
    with stage(f"{run.parent.name}/{run.name}", reused=done):  # seedN/train_all: one stage per seed
        if done:
            return run / "policy"
        cfg = dataclasses.replace(QuickstartConfig().train, dataset=str(data), output_dir=str(run), steps=steps,
                                  tracking="none", resume=latest_checkpoint(run / "checkpoints") is not None, **kw)
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


ADAPTATIONS = ("continued", "few_shot", "align")


def adaptation(target: str, root: Path, base: Path, source_data: Path, k: int, steps: int, episodes: int,
               seed: int) -> dict[str, dict]:
    """Few-shot fine-tuning, feature alignment and continued training (control) from ``base``
    into ``root``, each evaluated in ``target``: {method: results.json}. The target
    demonstrations are shared by every training seed."""
    target_data = dataset(f"target_{target}", DomainConfig(preset=target), k, seed=TARGET_DEMO_SEED)
    optim = OptimConfig(lr=3e-4, warmup_steps=30)
    runs = {
        "continued": dict(data=source_data),
        "few_shot": dict(data=target_data),
        "align": dict(data=source_data, align_dataset=str(target_data)),
    }
    out = {}
    for method, kw in runs.items():
        run = root / f"adapt_{target}_{method}"
        data = kw.pop("data")
        policy = train_policy(run, data, steps, init_from=str(base), optim=optim, seed=seed, grounding_scenes=0, **kw)
        out[method] = cached_json(run / "eval" / "results.json", lambda: evaluate(EvalConfig(
            policy=str(policy), split="train", episodes=episodes, domain=DomainConfig(preset=target),
            output_dir=str(run / "eval"), videos_per_task=1), False))
    return out


def domain_results(out: Path) -> dict[str, dict]:
    """Each domain's results.json of a transfer run in ``out``, with its per-episode records."""
    return {d: json.loads((out / d / "results.json").read_text()) for d in ["source", *TARGETS, CROSS_SIM]}


def plot_transfer(table: dict, out: Path) -> None:
    domains = list(next(iter(table.values())))
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    width = 0.8 / len(table)
    for i, (variant, rows) in enumerate(table.items()):
        xs = np.arange(len(domains)) + i * width
        ax.bar(xs, [rows[d]["mean"] for d in domains], width, yerr=[rows[d]["sd"] for d in domains], capsize=2,
               label=f"DR: {variant}")
    ax.set_xticks(np.arange(len(domains)) + 0.4 - width / 2, domains)
    ax.set_ylabel("success (mean, sd over seeds)")
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
    n = int(arg("seeds", "3"))
    if n < 1:
        raise SystemExit(f"--seeds must be >= 1 (training seeds 0 .. N-1), got {n}")
    global ROOT
    ROOT = cache_root(ROOT)
    t0 = time.perf_counter()
    data = {variant: dataset(variant, DomainConfig(preset=preset), demos) for variant, preset in VARIANTS.items()}
    # evals[variant][domain] and adapted[target][method]: one results.json per training seed, in seed order
    evals = {variant: {} for variant in VARIANTS}
    adapted = {target: {m: [] for m in ADAPTATIONS} for target in TARGETS}
    first = {}
    for seed in range(n):
        root = ROOT / f"seed{seed}"
        policies = {}
        for variant in VARIANTS:
            policies[variant] = train_policy(root / f"train_{variant}", data[variant], steps, seed=seed)
            out = root / f"transfer_{variant}"
            cached_json(out / "transfer.json", lambda: transfer(TransferConfig(
                policy=str(policies[variant]), targets=[*TARGETS, CROSS_SIM], episodes=episodes, output_dir=str(out)),
                False))
            for domain, res in domain_results(out).items():
                evals[variant].setdefault(domain, []).append(res)
            print(f"seed {seed}", variant, {d: round(r[-1]["success_rate"], 3) for d, r in evals[variant].items()},
                  flush=True)
        for target in TARGETS:
            runs = adaptation(target, root, policies["all"], data["all"], k, adapt_steps, episodes, seed)
            for method, res in runs.items():
                adapted[target][method].append(res)
        first = first or policies
    experts = cached_json(ROOT / "expert_success.json", name="expert success in the targets", make=lambda: _write(
        ROOT / "expert_success.json", {t: expert_success(t, 10) for t in [*TARGETS, CROSS_SIM]}))
    curves = {}
    for variant in ("none", "all"):
        out = ROOT / f"robustness_{variant}"
        res = cached_json(out / "robustness.json", lambda: sweep(EvalConfig(
            policy=str(first[variant]), split="train", episodes=sweep_episodes, perturb=SWEEP,
            output_dir=str(out), videos_per_task=0), False))
        curves[variant] = res["curves"]
    table = {variant: {d: seed_summary(rs) for d, rs in by_domain.items()} for variant, by_domain in evals.items()}
    gaps = {variant: {d: paired(by_domain["source"], rs) for d, rs in by_domain.items() if d != "source"}
            for variant, by_domain in evals.items()}
    dr_vs_none = {f"{variant}@{d}": paired(rs, evals["none"][d])
                  for variant, by_domain in evals.items() if variant != "none" for d, rs in by_domain.items()}
    adapt = {t: {m: seed_summary(rs) for m, rs in by_method.items()} for t, by_method in adapted.items()}
    adapt_gain = {f"{m}@{t}": paired(rs, evals["all"][t])
                  for t, by_method in adapted.items() for m, rs in by_method.items()}
    adapt_gain |= {f"{m} - continued@{t}": paired(adapted[t][m], adapted[t]["continued"])
                   for t in TARGETS for m in ADAPTATIONS if m != "continued"}
    plot_transfer(table, RESULTS / "sim2real_transfer.png")
    plot_robustness(curves, RESULTS / "sim2real_robustness.png")
    rows = []
    for variant, domains in table.items():
        row = {"trained with": variant if variant != "none" else "no DR"}
        row |= {d: seeded_text(c) for d, c in domains.items()}
        row["mean gap (A-C)"] = f"{100 * np.mean([gaps[variant][t]['difference'] for t in TARGETS]):+.1f}"
        rows.append(row)
    for variant in VARIANTS:
        if variant != "none":
            rows.append({"trained with": f"{variant} - no DR", "source": paired_text(dr_vs_none[f"{variant}@source"]),
                         **{d: paired_text(dr_vs_none[f"{variant}@{d}"]) for d in [*TARGETS, CROSS_SIM]},
                         "mean gap (A-C)": ""})
    for method in ADAPTATIONS:
        rows.append({"trained with": f"all DR + {method.replace('_', '-')}", "source": "",
                     **{t: f"{seeded_text(adapt[t][method])}; vs all DR {paired_text(adapt_gain[f'{method}@{t}'])}"
                        for t in TARGETS},
                     CROSS_SIM: "", "mean gap (A-C)": ""})
    figures = {
        "protocol": {"suite": "tabletop", "tasks": TASKS, "demos_per_task": demos, "train_steps": steps, "seeds": n,
                     "eval_episodes_per_task_per_domain": episodes, "few_shot_k_per_task": k, "adapt_steps": adapt_steps,
                     "sweep_episodes_per_task": sweep_episodes, "sweep_seed": 0,
                     "split": "train (new scene seeds >= 1e9)"},
        "transfer": table, "gaps": gaps, "dr_vs_none": dr_vs_none, "adaptation": adapt, "adaptation_gains": adapt_gain,
        "expert_success_in_targets": experts, "robustness": curves, "wall_minutes": (time.perf_counter() - t0) / 60,
    }
    write("sim2real", figures, rows,
          f"Sim-to-real transfer (sim-to-sim proxy): success % mean (sd) over {n} training seeds by training domain; "
          "differences in points, paired by seed and scene",
          seeds={"collect_scenes_from": 0, "target_demos_from": TARGET_DEMO_SEED, "train": list(range(n)),
                 "eval_scenes_from": EVAL_SEEDS, "expert_check_scenes_from": 2 * 10**9})


def _write(path: Path, payload: dict) -> dict:
    path.write_text(json.dumps(payload, indent=2))
    return payload


if __name__ == "__main__":
    main()
