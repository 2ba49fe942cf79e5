"""Where a training step of the quickstart's recipe spends its milliseconds on this machine.

    python benchmarks/profile_step.py [--steps=30] [--warmup=5] [--train.key=value quickstart overrides]

Builds the run exactly as ``vlaforge quickstart`` trains (trainer.build_run on the quickstart's
TrainConfig, so the profile follows its defaults; bf16 autocast on CPU where supported) on a
small collected dataset, then times ``steps`` optimizer steps after ``warmup``: drawing the batch
(sampling + augmentation), the forward pass split by module (text encoder, vision CNN, each fusion
block, action head, the rest), the backward pass and the optimizer step (incl. clipping, EMA). A torch.profiler pass over a few
more steps lists the operators with the most self CPU time. Writes
benchmarks/results/profile_step.{json,md}. Run it on an idle machine: every figure is wall time.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections import defaultdict

import torch
from common import arg, cache_root, collect_once, stage, write

from vlaforge.cli import parse
from vlaforge.data.config import CollectConfig
from vlaforge.envs.config import EnvConfig
from vlaforge.train import amp, parallel
from vlaforge.train.trainer import _backward, build_run

TASKS = ["reach", "push", "pick_place", "press_button"]


class ForwardTimer:
    """Wall time of each named module's forward, summed over a step (nested calls count once)."""

    def __init__(self, modules: dict[str, torch.nn.Module]) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self._start: dict[str, float] = {}
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda m, a, n=name: self._start.__setitem__(n, time.perf_counter()))
            module.register_forward_hook(lambda m, a, o, n=name: self._stop(n))

    def _stop(self, name: str) -> None:
        self.ms[name] += 1e3 * (time.perf_counter() - self._start.pop(name))


def main(argv: list[str]) -> None:
    steps, warmup = int(arg("steps", "30", argv)), int(arg("warmup", "5", argv))
    rest = [a for a in argv if not a.startswith(("--steps=", "--warmup="))]
    root = cache_root("runs/bench_profile_step")
    data = collect_once(CollectConfig(env=EnvConfig(tasks=TASKS), episodes_per_task=10), root / "data")
    cfg = dataclasses.replace(parse("quickstart", rest).train, dataset=str(data), output_dir=str(root / "run"),
                              tracking="none")
    d, device = parallel.init(cfg.parallel, amp.resolve_device(cfg.device))
    with stage("build"):
        run = build_run(cfg, d, device)
    model = run.model
    timer = ForwardTimer({"text encoder": model.text, "vision CNN": model.vision,
                          **{f"fusion block {k}": b for k, b in model.blocks.items()}, "action head": model.head,
                          "whole forward": run.objective})
    rows = defaultdict(list)
    run.module.train()

    def one_step(step: int) -> dict[str, float]:
        timer.ms.clear()
        t0 = time.perf_counter()
        micro = [run.sampler.sample(cfg.batch_size, run.sampler.generator(cfg.seed, step, m), cfg.image_shift, (0, 1),
                                    cfg.color_jitter) for m in range(cfg.accumulate)]
        t1 = time.perf_counter()
        _backward(run.module, run.scaler, micro, run.precision, device)
        t2 = time.perf_counter()
        run.scaler.unscale_(run.optimizer)
        norm = parallel.clip_grad_norm([p for g in run.optimizer.param_groups for p in g["params"]], cfg.clip_grad)
        amp.optimizer_step(run.scaler, run.optimizer, norm)
        run.optimizer.zero_grad(set_to_none=True)
        if run.ema is not None:
            run.ema.update(model, step)
        t3 = time.perf_counter()
        forward = timer.ms["whole forward"]
        out = {"batch (sampling + augmentation)": 1e3 * (t1 - t0), "forward": forward,
               "backward": 1e3 * (t2 - t1) - forward, "optimizer + clip + EMA": 1e3 * (t3 - t2),
               "step total": 1e3 * (t3 - t0)}
        parts = {k: v for k, v in timer.ms.items() if k != "whole forward"}
        out |= {f"forward: {k}": v for k, v in parts.items()}
        out["forward: rest (token assembly, losses)"] = forward - sum(parts.values())
        return out

    with stage(f"timed steps x{steps}"):
        for step in range(warmup + steps):
            result = one_step(step)
            if step >= warmup:
                for k, v in result.items():
                    rows[k].append(v)
    with stage("torch.profiler x5"):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for step in range(5):
                one_step(warmup + steps + step)
        ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        top_ops = [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / 5,
                    "share": e.self_cpu_time_total / total} for e in ops]
    step_ms = statistics.median(rows["step total"])
    figures = {"median_ms": {k: statistics.median(v) for k, v in rows.items()},
               "share_of_step": {k: statistics.median(v) / step_ms for k, v in rows.items() if k != "step total"},
               "samples_per_s": cfg.batch_size * cfg.accumulate / (step_ms / 1e3), "top_ops": top_ops,
               "setup": {"batch_size": cfg.batch_size, "accumulate": cfg.accumulate, "precision": run.precision,
                         "threads": torch.get_num_threads(), "params": run.n_params, "tasks": TASKS,
                         "overrides": rest}}
    table = [{"part": k, "median ms": round(statistics.median(v), 2),
              "share": f"{100 * statistics.median(v) / step_ms:.0f}%"} for k, v in rows.items()]
    write("profile_step", figures, table, "Where a training step spends its time (2 CPU cores)",
          seeds={"collect": 0, "train": cfg.seed})


if __name__ == "__main__":
    main(sys.argv[1:])
