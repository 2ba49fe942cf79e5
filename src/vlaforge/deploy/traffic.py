"""Simulated traffic: episodes rolled in the simulator with every action chunk coming from a policy
server, the way a robot would use it (the MLOps benchmark and the monitoring walkthrough).

Each episode resets the server's policy with the episode's scene seed (so an A/B test routes it),
executes the first ``horizon`` actions of each chunk the server returns, and, when ``report``,
posts the outcome to ``POST /outcome``. ``domain`` switches the simulator to a randomised
domain (a preset name of vlaforge.envs.randomization, e.g. ``real-proxy-B``) for the drift
scenarios. `vlaforge traffic --url=... --episodes=N [--report=true] [--domain=...]` runs it
against a served policy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from vlaforge.deploy.config import TrafficConfig
from vlaforge.deploy.server import PolicyClient
from vlaforge.envs.config import DomainConfig
from vlaforge.envs.randomization import job_domain
from vlaforge.envs.randomization.wrapper import worker_domain_env
from vlaforge.runtime.episode import run_chunks


class Traffic:
    """Episodes of the tasks the served policy was trained on (the server's ``GET /info`` names
    the suite, env settings and tasks)."""

    def __init__(self, client: PolicyClient, horizon: int = 0, split: str = "train") -> None:
        info = client.info()
        self.client, self.split = client, split
        self.suite, self.env_cfg, self.tasks = info["suite"], info["env"], info["tasks"]
        chunk = info["chunk_size"]
        self.horizon = horizon or max(1, chunk // 2)  # the evaluation default: half the chunk
        if not 1 <= self.horizon <= chunk:
            raise ValueError(f"horizon must be in [1, {chunk}] (the policy's chunk), got {horizon}")

    def episode(self, seed: int, domain: str = "", report: bool = False) -> dict:
        """One episode of task ``tasks[seed % len(tasks)]`` on scene ``seed``; its outcome (and
        the A/B state after it, when reported)."""
        task = self.tasks[seed % len(self.tasks)]
        env = worker_domain_env(self.suite, task, self.split, self.env_cfg,
                                job_domain(DomainConfig(preset=domain)) if domain else None)
        obs, _ = env.reset(seed=seed)
        self.client.reset(seed)
        end = run_chunks(env, obs, lambda o: self.client.act(o)[:self.horizon])
        out = {"task": task, "seed": seed, "success": bool(end.success), "steps": end.steps}
        if report:
            out["ab"] = self.client.outcome(seed, end.success)
        return out

    def run(self, seeds: Iterable[int], domain: str = "", report: bool = False) -> list[dict]:
        return [self.episode(s, domain, report) for s in seeds]


def drive(cfg: TrafficConfig) -> dict:
    """`vlaforge traffic`: ``cfg.episodes`` served episodes; the successes per task, and the A/B
    state after the last outcome when reported."""
    if cfg.episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {cfg.episodes}")
    token = cfg.token or os.environ.get("VLAFORGE_TOKEN", "")
    if not token:
        raise ValueError("traffic needs the server's token: --token=... or $VLAFORGE_TOKEN")
    client = PolicyClient(cfg.url, token)
    try:
        out = Traffic(client, cfg.horizon, cfg.split).run(range(cfg.seed, cfg.seed + cfg.episodes), cfg.domain,
                                                          cfg.report)
    finally:
        client.close()
    tasks = sorted({o["task"] for o in out})
    summary = {"episodes": len(out), "success_rate": sum(o["success"] for o in out) / len(out),
               "per_task": {t: sum(o["success"] for o in out if o["task"] == t) / sum(o["task"] == t for o in out)
                            for t in tasks}, "domain": cfg.domain or "source"}
    if cfg.report:
        summary["ab"] = out[-1]["ab"]
    return summary
