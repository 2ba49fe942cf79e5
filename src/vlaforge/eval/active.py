"""Active learning: choose the scenes where the next demonstrations help most.

    vlaforge active --policy=runs/a/policy --dataset=data/a --uncertainty=mc_dropout --strategy=both --select=8
    vlaforge collect --scenes=active/selection.json --output=data/a --resume

A pool of candidate scenes (task, seed) is scored by rolling the policy in each for ``horizon``
steps: its **uncertainty** there is the variance of its predicted action chunks across ensemble
members (``ensemble``), dropout masks (``mc_dropout``, Gal & Ghahramani 2016) or the samples
of a generative head (``head``: dit, flow), in normalised action units, averaged over the
visited states. Its **embedding** is the vision encoder's pooled feature of the first frame.
Strategies: ``uncertainty`` takes the most uncertain scenes; ``diversity`` runs greedy k-center
on the embeddings (Sener & Savarese 2018), with the training set's episodes as centres already
covered; ``both`` runs k-center among the 2k most uncertain (Zhdanov 2019); ``random`` is the
baseline that every strategy must beat at equal demonstration budgets
(``benchmarks/active_learning.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vlaforge.config import save_yaml
from vlaforge.data.collect import scene_seed
from vlaforge.eval.config import ActiveConfig
from vlaforge.files import atomic_write_json
from vlaforge.registry import HEADS
from vlaforge.runtime.episode import EpisodeJob, run_chunks

UNCERTAINTY = ("ensemble", "mc_dropout", "head")
STRATEGIES = ("uncertainty", "diversity", "both", "random")
_STATE: dict = {}


def k_center_greedy(points: np.ndarray, k: int, centres: np.ndarray | None = None) -> list[int]:
    """Indices of ``k`` rows of ``points`` (N, D), each the one farthest from everything chosen
    so far and from ``centres`` (M, D); the first, without centres, is the one farthest from the
    mean. A 2-approximation of the minimax cover (Gonzalez 1985)."""
    points = np.asarray(points, dtype=np.float64)
    if not 0 <= k <= len(points):
        raise ValueError(f"cannot choose {k} of {len(points)} points")
    if centres is not None and len(centres):
        dist = np.min(np.linalg.norm(points[:, None] - np.asarray(centres, np.float64)[None], axis=-1), axis=1)
    else:
        dist = np.linalg.norm(points - points.mean(0), axis=1)
    chosen: list[int] = []
    for _ in range(k):
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(points - points[i], axis=1))
        dist[chosen] = -1.0
    return chosen


def chunk_variance(predictions: torch.Tensor) -> float:
    """Mean over chunk steps and action dimensions of the variance across predictions (S, K, A)."""
    return float(predictions.float().var(dim=0, unbiased=False).mean())


def _predictions(policies: list, inputs: list[tuple], method: str, samples: int, gen: torch.Generator) -> torch.Tensor:
    """(S, K, A) normalised action chunks for one observation."""
    if method == "ensemble":
        return torch.stack([torch.as_tensor(p.predict(*x)) for p, x in zip(policies, inputs)])
    policy, (images, states, tokens) = policies[0], inputs[0]
    rep = [t.expand(samples, *t.shape[1:]) for t in (images, states, tokens)]
    with torch.no_grad():
        if method == "mc_dropout":
            policy.model.train()
            try:
                return policy.model(*rep)
            finally:
                policy.model.eval()
        return policy.model(*rep, gen)


def _worker_init(policy_dirs: list[str], method: str, samples: int) -> None:
    from vlaforge.runtime.policy import load_policy

    torch.set_num_threads(1)
    _STATE.update(policies=[load_policy(d) for d in policy_dirs], method=method, samples=samples)


def score_scene(job: EpisodeJob) -> dict:
    """The uncertainty of the worker's policies (``_worker_init``: members, method, samples) over
    ``job.horizon`` steps of the scene, and the scene's embedding."""
    from vlaforge.envs.randomization.wrapper import worker_domain_env

    policies, method, samples = _STATE["policies"], _STATE["method"], _STATE["samples"]
    env = worker_domain_env(job.suite, job.task, job.split, job.env_cfg, None)
    obs, _ = env.reset(seed=job.seed)
    for p in policies:
        p.reset(job.seed)
    gen = torch.Generator().manual_seed(job.seed)
    scores, embedding = [], []

    def scored_step(obs: dict) -> list[np.ndarray]:
        """Score the chunk the policies predict here; execute the first action of their mean."""
        inputs = [p.inputs(obs) for p in policies]
        if not embedding:
            images, _, tokens = inputs[0]
            with torch.no_grad():
                embedding.append(policies[0].model.visual_features(images, tokens).flatten().numpy())
        preds = _predictions(policies, inputs, method, samples, gen)
        scores.append(chunk_variance(preds))
        return [np.clip(policies[0].normalizer.unnorm_action(preds.mean(0).float().numpy()), -1, 1)[0].astype(np.float32)]

    run_chunks(env, obs, scored_step, budget=job.horizon)
    return {"task": job.task, "seed": job.seed, "uncertainty": float(np.mean(scores)), "embedding": embedding[0]}


def _dataset_embeddings(policy, dataset: str) -> np.ndarray:
    """Pooled first-frame features of every episode already in ``dataset``."""
    from vlaforge.data.dataset import LeRobotDataset

    data = LeRobotDataset(dataset).load()
    starts = np.concatenate([[0], np.cumsum(data.lengths)[:-1]])
    out = []
    with torch.no_grad():
        for s in starts:
            images = torch.from_numpy(data.images[s][None, None])
            tokens = torch.tensor([policy.tokenizer.encode(data.tasks[data.task_index[s]], policy.cfg.max_text_tokens)])
            out.append(policy.model.visual_features(images, tokens).flatten().numpy())
    return np.stack(out)


def choose(scores: list[dict], strategy: str, k: int, centres: np.ndarray | None, seed: int,
           max_per_task: int = 0) -> list[int]:
    """Indices into ``scores`` of the ``k`` scenes a strategy picks; with ``max_per_task`` > 0
    no task gets more than that many (uncertainty alone otherwise piles the budget onto the
    task the policy is worst at, whether or not more demonstrations of it help yet)."""
    tasks = [s.get("task") for s in scores]
    if max_per_task and max_per_task * len(set(tasks)) < k:
        raise ValueError(f"max_per_task {max_per_task} x {len(set(tasks))} tasks is fewer than the {k} scenes to select")

    def open_(i: int, chosen: list[int]) -> bool:
        return not max_per_task or sum(tasks[j] == tasks[i] for j in chosen) < max_per_task

    def walk(order) -> list[int]:
        chosen: list[int] = []
        for i in order:
            if len(chosen) < k and open_(int(i), chosen):
                chosen.append(int(i))
        return chosen

    if strategy == "random":
        return sorted(walk(np.random.default_rng(seed).permutation(len(scores))))
    order = np.argsort([-s["uncertainty"] for s in scores], kind="stable")
    if strategy == "uncertainty":
        return walk(order)
    pool = list(order[: min(len(scores), 2 * k)]) if strategy == "both" else list(range(len(scores)))
    emb = np.stack([s["embedding"] for s in scores])
    if not max_per_task:
        return [int(pool[i]) for i in k_center_greedy(emb[pool], k, centres)]
    chosen: list[int] = []
    covered = centres if centres is not None else np.zeros((0, emb.shape[1]))
    for _ in range(k):
        allowed = [i for i in pool if i not in chosen and open_(i, chosen)]
        if not allowed:  # the uncertain pool ran out for the open tasks: take from all of their scenes
            allowed = [i for i in range(len(scores)) if i not in chosen and open_(i, chosen)]
        i = allowed[k_center_greedy(emb[allowed], 1, covered if len(covered) else None)[0]]
        chosen.append(i)
        covered = np.concatenate([covered, emb[i : i + 1]])
    return chosen


def select(cfg: ActiveConfig, show_progress: bool = True) -> dict:
    """Score the pool, choose ``cfg.select`` scenes and write the selection JSON."""
    from vlaforge.envs import get_suite
    from vlaforge.runtime.policy import load_policy

    if cfg.uncertainty not in UNCERTAINTY:
        raise ValueError(f"unknown uncertainty {cfg.uncertainty!r}; known: {', '.join(UNCERTAINTY)}")
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {cfg.strategy!r}; known: {', '.join(STRATEGIES)}")
    if not cfg.policy:
        raise ValueError("active needs --policy=DIR (the current policy)")
    members = [cfg.policy, *cfg.ensemble]
    if cfg.uncertainty == "ensemble" and len(members) < 2:
        raise ValueError("ensemble uncertainty needs other members: --ensemble=[DIR,...] (policies trained with other seeds)")
    if cfg.samples < 2 or cfg.horizon < 1 or cfg.pool_per_task < 1:
        raise ValueError("active needs samples >= 2, horizon >= 1 and pool_per_task >= 1")
    policy = load_policy(cfg.policy)
    if cfg.uncertainty == "mc_dropout" and policy.cfg.dropout <= 0:
        raise ValueError(f"MC dropout needs a policy trained with --policy.dropout > 0; {cfg.policy} has none")
    if cfg.uncertainty == "head" and not HEADS.get(policy.cfg.head).samples:
        sampling = [h for h in HEADS.names() if HEADS.get(h).samples]
        raise ValueError(f"head sample variance needs a sampling head ({', '.join(sampling)}); {cfg.policy} has "
                         f"{policy.cfg.head!r}")
    suite = get_suite(policy.meta["suite"])
    tasks = suite.check(cfg.tasks or policy.meta["tasks"], cfg.split)
    pool = [(t, scene_seed(cfg.pool_seed, i, j)) for i, t in enumerate(tasks) for j in range(cfg.pool_per_task)]
    k = cfg.select
    if not 1 <= k <= len(pool):
        raise ValueError(f"select must be in [1, {len(pool)}] (the pool size), got {k}")
    if cfg.strategy == "random":  # the baseline needs no rollouts
        scores = [{"task": t, "seed": s, "uncertainty": None} for t, s in pool]
    else:
        jobs = [EpisodeJob(suite.name, policy.meta["env"], cfg.split, t, s, cfg.horizon) for t, s in pool]
        scores = list(cfg.map(score_scene, jobs, _worker_init,
                          (members, cfg.uncertainty, cfg.samples)))
    centres = _dataset_embeddings(policy, cfg.dataset) if cfg.dataset and cfg.strategy != "uncertainty" else None
    picked = choose(scores, cfg.strategy, k, centres, cfg.seed, cfg.max_per_task)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out.with_suffix(".yaml"))
    result = {
        "policy": cfg.policy, "uncertainty": cfg.uncertainty, "strategy": cfg.strategy, "pool": len(pool),
        "scenes": [{"task": scores[i]["task"], "seed": scores[i]["seed"], "uncertainty": scores[i]["uncertainty"]}
                   for i in picked],
        "pool_uncertainty": None if cfg.strategy == "random" else
        {t: float(np.mean([s["uncertainty"] for s in scores if s["task"] == t])) for t in tasks},
        "selected_per_task": {t: sum(scores[i]["task"] == t for i in picked) for t in tasks},
    }
    atomic_write_json(out, result)
    return result
