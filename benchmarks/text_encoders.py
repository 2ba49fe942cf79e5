"""The quickstart recipe with each text encoder over several training seeds: success on the
training instructions, on unseen colour-shape pairs with unseen wordings, and on unseen wordings
alone (``unseen_paraphrase``), and the paired difference between the encoders.

    python benchmarks/text_encoders.py [--seeds=3] [--encoders=[words,wordllama]] [quickstart overrides]

Collects the quickstart's data once; trains one policy per encoder and seed (seed s of every
encoder draws the same batches order and initial weights where the shapes agree) and evaluates
each on the same scenes of every split. A comparison pairs the runs of one seed scene by scene:
the pooled paired bootstrap and exact McNemar test over every (seed, scene) pair, and the t
interval of the per-seed differences (df = seeds - 1), which is the one that counts the seed
draw. Writes benchmarks/results/text_encoders.{json,md}.
"""

from __future__ import annotations

import dataclasses
import sys

from common import arg, cache_root, collect_once, stage, write

from vlaforge.cli import parse
from vlaforge.eval.rollout import evaluate
from vlaforge.eval.stats import paired, seed_summary
from vlaforge.train.checkpoint import latest_checkpoint
from vlaforge.train.trainer import train

SPLITS = ["train", "unseen", "unseen_paraphrase"]


def main(argv: list[str]) -> None:
    n = int(arg("seeds", "3", argv))
    encoders = arg("encoders", "[words,wordllama]", argv).strip("[]").split(",")
    if n < 2 or len(encoders) < 1:
        raise SystemExit(f"need --seeds >= 2 and at least one encoder, got {n} and {encoders}")
    cfg = parse("quickstart", [a for a in argv if not a.startswith(("--seeds=", "--encoders="))])
    root = cache_root("runs/bench_text_encoders")
    data = collect_once(cfg.collect, root / "data")
    results: dict[str, dict[str, list[dict]]] = {e: {s: [] for s in SPLITS} for e in encoders}
    for seed in range(n):
        for enc in encoders:
            run = root / enc / f"seed{seed}"
            done = (run / "policy").exists()
            with stage(f"train {enc} seed {seed}", reused=done):
                if not done:
                    policy = dataclasses.replace(cfg.train.policy, text_encoder=enc)
                    train(dataclasses.replace(cfg.train, dataset=str(data), output_dir=str(run), seed=seed, policy=policy,
                                              resume=latest_checkpoint(run / "checkpoints") is not None), False)
            for split in SPLITS:
                with stage(f"eval {enc} seed {seed} {split}"):
                    r = evaluate(dataclasses.replace(cfg.eval, policy=str(run / "policy"), split=split, videos_per_task=0,
                                                     output_dir=str(run / "eval" / split)), False)
                results[enc][split].append(r)
                print(f"{enc} seed {seed} {split}: {r['success_rate']:.1%}", flush=True)
    figures = {"encoders": {}, "comparisons": {}, "train_steps": cfg.train.steps,
               "episodes_per_task_collected": cfg.collect.episodes_per_task, "eval_episodes_per_task": cfg.eval.episodes}
    for enc in encoders:  # the wording gap: the same (task, seed) scenes, trained vs held-out wordings
        figures["encoders"][enc] = {s: seed_summary(results[enc][s]) for s in SPLITS} | {
            "paraphrase_gap": paired(results[enc]["train"], results[enc]["unseen_paraphrase"])}
    for enc in encoders[1:]:
        figures["comparisons"][f"{enc} - {encoders[0]}"] = {s: paired(results[enc][s], results[encoders[0]][s])
                                                           for s in SPLITS}
    rows = [{"encoder": enc, "seed": seed, **{s: f"{100 * results[enc][s][seed]['success_rate']:.1f}%" for s in SPLITS}}
            for enc in encoders for seed in range(n)]
    rows += [{"encoder": enc, "seed": "mean (sd)", **{s: f"{100 * figures['encoders'][enc][s]['mean']:.1f}% "
                                                       f"({100 * figures['encoders'][enc][s]['sd']:.1f})" for s in SPLITS}}
             for enc in encoders]
    write("text_encoders", figures, rows, f"Text encoders in the quickstart recipe over {n} training seeds",
          seeds={"collect_scenes_from": cfg.collect.seed, "train": list(range(n)), "eval_scenes_from": cfg.eval.seed})


if __name__ == "__main__":
    main(sys.argv[1:])
