"""Human evaluation studies: the items raters judge, their ratings in SQLite, and what the
ratings add up to.

Three kinds of item, built from evaluation directories (their results.json and rollout GIFs):
``rate`` (one rollout: did it succeed, quality 1-5), ``pair`` (two policies on the same scene:
which did better, or a tie) and ``turing`` (one rollout, from a policy or from the reference
evaluation of human-teleoperated rollouts: which was it). One row per (rater, item); a rater
never sees an item twice.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
import time
from pathlib import Path

import numpy as np

from vlaforge.eval.stats import cohen_kappa, fleiss_kappa, wilson_interval

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, run TEXT NOT NULL, run_b TEXT,
    task TEXT NOT NULL, seed INTEGER NOT NULL, video TEXT NOT NULL, video_b TEXT, truth TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ratings (id INTEGER PRIMARY KEY, rater TEXT NOT NULL, item INTEGER NOT NULL REFERENCES items(id),
    success INTEGER, quality INTEGER, choice TEXT, guess TEXT, created REAL NOT NULL, UNIQUE (rater, item));
"""
RATER = re.compile(r"^[A-Za-z0-9_.\- ]{1,64}$")
KINDS = ("rate", "pair", "turing")


class RatingError(ValueError):
    """A submission the study refuses (the message says why); nothing is stored."""


def connect(study: str | Path) -> sqlite3.Connection:
    Path(study).mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(Path(study) / "study.db", check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.executescript(SCHEMA)
    return db


def _videos(eval_dir: str) -> dict[tuple[str, int], tuple[str, bool]]:
    """(task, seed) -> (GIF path, recorded success) for the episodes of an evaluation that have a video."""
    d = Path(eval_dir)
    if not (d / "results.json").is_file():
        raise FileNotFoundError(f"no evaluation results at {d / 'results.json'}")
    out = {}
    for e in json.loads((d / "results.json").read_text())["episodes_detail"]:
        gif = d / "videos" / f"{e['task']}_{e['seed']}.gif"
        if gif.is_file():
            out[(e["task"], e["seed"])] = (str(gif.resolve()), bool(e["success"]))
    if not out:
        raise ValueError(f"evaluation {d} has no rollout videos (evaluate with --videos_per_task >= 1)")
    return out


def build_items(db: sqlite3.Connection, runs: list[str], reference: str = "") -> int:
    """Create the study's items once (an existing study keeps its items); returns how many there are."""
    have = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    if have:
        return have
    if not runs:
        raise ValueError("a new study needs --runs=[EVAL_DIR, ...] (evaluations with rollout videos)")
    videos = {r: _videos(r) for r in runs}
    rows = []
    for run, vids in videos.items():
        rows += [("rate", run, None, t, s, v, None, json.dumps(ok)) for (t, s), (v, ok) in vids.items()]
        if reference:
            rows += [("turing", run, None, t, s, v, None, "policy") for (t, s), (v, _) in vids.items()]
    for a, b in itertools.combinations(runs, 2):
        rows += [("pair", a, b, t, s, videos[a][k][0], videos[b][k][0], json.dumps([videos[a][k][1], videos[b][k][1]]))
                 for k in videos[a] if k in videos[b] for t, s in [k]]
    if reference:
        rows += [("turing", reference, None, t, s, v, None, "human") for (t, s), (v, _) in _videos(reference).items()]
    db.executemany("INSERT INTO items (kind, run, run_b, task, seed, video, video_b, truth) VALUES (?,?,?,?,?,?,?,?)", rows)
    db.commit()
    return len(rows)


def next_item(db: sqlite3.Connection, rater: str, kind: str) -> dict | None:
    """The next item of ``kind`` this rater has not judged, fewest ratings first (spreads raters
    over items so agreement can be measured); None when they have judged them all."""
    row = db.execute(
        "SELECT i.id, i.kind, i.task FROM items i WHERE i.kind = ? AND i.id NOT IN "
        "(SELECT item FROM ratings WHERE rater = ?) ORDER BY (SELECT COUNT(*) FROM ratings r WHERE r.item = i.id), i.id LIMIT 1",
        (kind, rater)).fetchone()
    return dict(row) if row else None


def add_rating(db: sqlite3.Connection, sub: dict) -> int:
    """Validate and store one submission; a RatingError names what is wrong and stores nothing."""
    if not isinstance(sub, dict):
        raise RatingError("a rating is a JSON object")
    rater = sub.get("rater")
    if not isinstance(rater, str) or not RATER.match(rater):
        raise RatingError("rater must be 1-64 letters, digits, spaces, '.', '_' or '-'")
    item = sub.get("item")
    if not isinstance(item, int) or isinstance(item, bool):
        raise RatingError("item must be an integer item id")
    row = db.execute("SELECT kind FROM items WHERE id = ?", (item,)).fetchone()
    if row is None:
        raise RatingError(f"unknown item {item}")
    kind = row["kind"]
    allowed = {"rate": {"success", "quality"}, "pair": {"choice"}, "turing": {"guess"}}[kind]
    extra = set(sub) - {"rater", "item"} - allowed
    if extra:
        raise RatingError(f"a {kind} rating takes {', '.join(sorted(allowed))}, not {', '.join(sorted(extra))}")
    values = {"success": None, "quality": None, "choice": None, "guess": None}
    if kind == "rate":
        if sub.get("success") not in (True, False):
            raise RatingError("success must be true or false")
        q = sub.get("quality")
        if not isinstance(q, int) or isinstance(q, bool) or not 1 <= q <= 5:
            raise RatingError("quality must be an integer from 1 to 5")
        values |= {"success": int(sub["success"]), "quality": q}
    elif kind == "pair":
        if sub.get("choice") not in ("a", "b", "tie"):
            raise RatingError("choice must be 'a', 'b' or 'tie'")
        values["choice"] = sub["choice"]
    else:
        if sub.get("guess") not in ("human", "policy"):
            raise RatingError("guess must be 'human' or 'policy'")
        values["guess"] = sub["guess"]
    try:
        cur = db.execute("INSERT INTO ratings (rater, item, success, quality, choice, guess, created) VALUES (?,?,?,?,?,?,?)",
                         (rater, item, values["success"], values["quality"], values["choice"], values["guess"], time.time()))
    except sqlite3.IntegrityError:
        raise RatingError(f"rater {rater!r} has already rated item {item}") from None
    db.commit()
    return cur.lastrowid


def _rate(k: int, n: int) -> dict:
    return {"successes": k, "n": n, "rate": k / n if n else None, "ci95": list(wilson_interval(k, n)) if n else None}


def summarize_study(db: sqlite3.Connection) -> dict:
    """Per run: human-judged success, mean quality and agreement with the recorded outcome;
    pairwise preference; Turing-test accuracy; inter-rater agreement (Cohen per rater pair,
    Fleiss over items with the modal number of ratings) on the success judgements."""
    rows = [dict(r) for r in db.execute("SELECT r.*, i.kind, i.run, i.run_b, i.truth FROM ratings r JOIN items i ON i.id = r.item")]
    out: dict = {"raters": sorted({r["rater"] for r in rows}), "ratings": len(rows), "runs": {}, "pairs": {}}
    rate = [r for r in rows if r["kind"] == "rate"]
    for run in sorted({r["run"] for r in rate}):
        rs = [r for r in rate if r["run"] == run]
        out["runs"][run] = {"judged_success": _rate(sum(r["success"] for r in rs), len(rs)),
                            "mean_quality": float(np.mean([r["quality"] for r in rs])),
                            "agreement_with_recorded": float(np.mean([r["success"] == json.loads(r["truth"]) for r in rs]))}
    for r in (r for r in rows if r["kind"] == "pair"):
        p = out["pairs"].setdefault(f"{r['run']} vs {r['run_b']}", {"a": 0, "b": 0, "tie": 0})
        p[r["choice"]] += 1
    for p in out["pairs"].values():
        p["prefer_a"] = _rate(p["a"], p["a"] + p["b"])  # ties excluded
    tur = [r for r in rows if r["kind"] == "turing"]
    out["turing"] = _rate(sum(r["guess"] == r["truth"] for r in tur), len(tur)) | {
        "note": "accuracy near 50% = raters cannot tell policy from human rollouts"}
    by_item: dict[int, dict[str, int]] = {}
    for r in rate:
        by_item.setdefault(r["item"], {})[r["rater"]] = r["success"]
    cohen = {}
    for a, b in itertools.combinations(out["raters"], 2):
        common = [i for i, v in by_item.items() if a in v and b in v]
        if len(common) >= 2:
            cohen[f"{a} / {b}"] = {"items": len(common), "kappa": cohen_kappa([by_item[i][a] for i in common],
                                                                             [by_item[i][b] for i in common])}
    counts = [len(v) for v in by_item.values() if len(v) >= 2]
    fleiss = None
    if counts:
        m = max(set(counts), key=counts.count)
        table = [[sum(1 for s in v.values() if s == 1), sum(1 for s in v.values() if s == 0)]
                 for v in by_item.values() if len(v) == m]
        fleiss = {"items": len(table), "raters_per_item": m, "kappa": fleiss_kappa(table)}
    out["agreement"] = {"cohen": cohen, "fleiss": fleiss}
    return out
