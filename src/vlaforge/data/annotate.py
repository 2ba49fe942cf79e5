"""Annotation helpers: hindsight relabelling and instruction paraphrases.

``vlaforge data relabel`` rewrites each failed episode's instruction to what it actually
achieved (recorded at collection by ``--keep_failures``: the tasks whose success condition holds
at the end and did not at the start), as in hindsight experience replay and RT-1's relabelled
play data; failed episodes that achieved nothing are left out. ``vlaforge data paraphrase``
writes ``meta/paraphrases.json``: new wordings of every instruction from a small, generic
synonym lexicon (verbs, nouns and prepositions of tabletop manipulation; no suite's held-out
wordings were consulted); training then draws each sample's instruction from its wordings.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np

from vlaforge.data.config import DataConfig
from vlaforge.data.dataset import PARAPHRASES_PATH, LeRobotDataset
from vlaforge.data.episodes import load_episodes, write_episodes
from vlaforge.data.manifest import write_manifest
from vlaforge.files import atomic_write_json

SYNONYMS: dict[str, tuple[str, ...]] = {
    "pick up": ("grab", "lift"),
    "put": ("place", "set"),
    "place": ("put", "set"),
    "move": ("bring", "shift"),
    "push": ("shove", "slide"),
    "press": ("push", "hit"),
    "reach": ("go to", "approach"),
    "drop": ("put", "release"),
    "stack": ("put",),
    "go to": ("reach", "move to"),
    "hit": ("press", "push"),
    "slide": ("pull", "move"),
    "pull": ("slide", "draw"),
    "zone": ("area", "spot"),
    "area": ("zone", "spot"),
    "on top of": ("onto",),
    "onto": ("on top of",),
    "into": ("inside",),
    "gripper": ("hand",),
}


def paraphrases(instruction: str, n: int, seed: int = 0) -> list[str]:
    """Up to ``n`` distinct rewordings of ``instruction`` by one or two synonym swaps."""
    found = [(m.start(), m.end(), key) for key in SYNONYMS
             for m in re.finditer(rf"\b{re.escape(key)}\b", instruction)]
    found = [f for f in found if not any(o != f and o[0] <= f[0] and f[1] <= o[1] for o in found)]  # longest match
    options = set()
    for r in (1, 2):
        for combo in itertools.combinations(sorted(found), r):
            if any(a[1] > b[0] for a, b in zip(combo, combo[1:])):
                continue
            for words in itertools.product(*(SYNONYMS[key] for _, _, key in combo)):
                text, shift = instruction, 0
                for (s, e, _), w in zip(combo, words):
                    text = text[: s + shift] + w + text[e + shift:]
                    shift += len(w) - (e - s)
                if text != instruction:
                    options.add(text)
    options = sorted(options)
    rng = np.random.default_rng(seed)
    return [options[i] for i in sorted(rng.permutation(len(options))[:n])]


def paraphrase_dataset(cfg: DataConfig) -> dict[str, list[str]]:
    """Write (merge into) the dataset's meta/paraphrases.json; returns it. The dataset's content
    hash changes: a new version."""
    if cfg.per_instruction < 1:
        raise ValueError("per_instruction must be >= 1")
    ds = LeRobotDataset(cfg.dataset)
    table = dict(ds.paraphrases)
    for task in ds.tasks:
        new = paraphrases(task, cfg.per_instruction, cfg.seed)
        if new or task in table:
            table[task] = sorted(set(table.get(task, [])) | set(new))
    atomic_write_json(ds.root / PARAPHRASES_PATH, table)
    if (ds.root / "manifest.json").exists():
        write_manifest(ds.root)
    return table


def relabel_dataset(cfg: DataConfig) -> dict:
    """Write a new dataset in which failed episodes carry the instruction of what they achieved."""
    if not cfg.output:
        raise ValueError("data relabel needs --output=DIR (a new dataset; the input is never modified)")
    ds = LeRobotDataset(cfg.dataset)
    eps = load_episodes(ds)
    keep, relabelled, dropped = {}, 0, 0
    for ep in eps:
        if ep.row.get("vlaforge/success", True) is not False:
            keep[ep.index] = {}
            continue
        done = json.loads(ep.row.get("vlaforge/achieved") or "[]")
        if not done:
            dropped += 1
            continue
        keep[ep.index] = {"task": done[0], "extra": {"vlaforge/success": True, "vlaforge/relabelled_from": ep.task}}
        relabelled += 1
    if not keep:
        raise ValueError(f"no episode of {cfg.dataset} is successful or relabellable; nothing to write")
    write_episodes([(ds, eps, keep)], cfg.output)
    summary = {"dataset": cfg.dataset, "output": cfg.output, "kept": len(keep), "relabelled": relabelled,
               "dropped_nothing_achieved": dropped}
    (Path(cfg.output) / "relabel.json").write_text(json.dumps(summary, indent=2))
    return summary
