"""A/B comparison of two evaluations: ``vlaforge compare RUN_A RUN_B``.

Episodes of the two runs that share a (task, seed) replay the same scene, so they are compared
as pairs: McNemar's exact test on the discordant pairs, a paired bootstrap of the difference and
the anytime-valid sequential test. The unpaired tests (Fisher's exact and Barnard's) and
Newcombe's interval use every episode. Everything is read from the two results.json files.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from vlaforge.config import save_yaml
from vlaforge.eval.config import CompareConfig
from vlaforge.eval.report import interval_bars
from vlaforge.eval.stats import difference_interval, episodes_for_difference, sequential_paired_test, wilson_interval
from vlaforge.files import atomic_write_json
from vlaforge.webpage import embed, write_page


def load_results(path: str | Path) -> dict:
    """A results.json (or the evaluation directory holding one), checked for what a comparison reads."""
    p = Path(path)
    p = p / "results.json" if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"no evaluation results at {p} (expected results.json or its directory)")
    try:
        r = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not valid JSON: {e}") from None
    missing = [k for k in ("episodes_detail", "per_task", "policy") if k not in r]
    if missing:
        raise ValueError(f"{p} is not an evaluation's results.json: missing {', '.join(missing)}")
    return r | {"path": str(p)}


def paired_outcomes(a: dict, b: dict) -> tuple[list[tuple[str, int]], np.ndarray, np.ndarray]:
    """The (task, seed) scenes both runs evaluated, in A's order, and each run's success on them."""
    sa = {(e["task"], e["seed"]): bool(e["success"]) for e in a["episodes_detail"]}
    sb = {(e["task"], e["seed"]): bool(e["success"]) for e in b["episodes_detail"]}
    keys = [k for k in sa if k in sb]
    return keys, np.array([sa[k] for k in keys], bool), np.array([sb[k] for k in keys], bool)


def bootstrap_difference(a: np.ndarray, b: np.ndarray, samples: int, seed: int, paired: bool,
                         level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b); paired resamples whole scenes (the
    pairing's correlation narrows the interval), unpaired resamples each run on its own."""
    if samples < 100:
        raise ValueError(f"bootstrap needs at least 100 resamples, got {samples}")
    rng = np.random.default_rng(seed)
    a, b = a.astype(float), b.astype(float)
    if paired:
        idx = rng.integers(0, len(a), (samples, len(a)))
        diffs = a[idx].mean(1) - b[idx].mean(1)
    else:
        diffs = a[rng.integers(0, len(a), (samples, len(a)))].mean(1) - b[rng.integers(0, len(b), (samples, len(b)))].mean(1)
    q = (1 - level) / 2
    return float(np.quantile(diffs, q)), float(np.quantile(diffs, 1 - q))


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: under "equal success" each discordant pair is A's with
    probability 1/2."""
    from scipy.stats import binomtest

    wins, losses = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    return 1.0 if wins + losses == 0 else float(binomtest(wins, wins + losses, 0.5).pvalue)


def unpaired_tests(ka: int, na: int, kb: int, nb: int) -> dict:
    """Fisher's exact and Barnard's exact two-sided p-values on the 2x2 success table."""
    from scipy.stats import barnard_exact, fisher_exact

    table = [[ka, na - ka], [kb, nb - kb]]
    fisher = float(fisher_exact(table).pvalue)
    # Barnard's test is undefined on a table with an empty column (both all-success or all-fail).
    barnard = 1.0 if ka + kb in (0, na + nb) else float(barnard_exact(table).pvalue)
    return {"fisher_p": fisher, "barnard_p": barnard}


def compare(cfg: CompareConfig) -> dict:
    """Compare two evaluations; write compare.json, config.yaml and report.html."""
    if len(cfg.runs) != 2:
        raise ValueError(f"compare needs exactly two evaluations (A and B), got {len(cfg.runs)}")
    if not 0 < cfg.alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {cfg.alpha}")
    a, b = (load_results(p) for p in cfg.runs)
    keys, pa, pb = paired_outcomes(a, b)
    ka, na = sum(e["success"] for e in a["episodes_detail"]), len(a["episodes_detail"])
    kb, nb = sum(e["success"] for e in b["episodes_detail"]), len(b["episodes_detail"])
    if na == 0 or nb == 0:
        raise ValueError("both evaluations need at least one episode")
    rate_a, rate_b = ka / na, kb / nb
    runs = {name: {"path": r["path"], "policy": r["policy"], "successes": k, "episodes": n, "success_rate": k / n,
                   "ci95": list(wilson_interval(k, n)), "efficiency": r.get("efficiency")}
            for name, r, k, n in (("A", a, ka, na), ("B", b, kb, nb))}
    result = {
        "runs": runs,
        "difference": rate_a - rate_b,
        "difference_ci95_newcombe": list(difference_interval(ka, na, kb, nb)),
        "unpaired": unpaired_tests(ka, na, kb, nb)
        | {"bootstrap_ci95": list(bootstrap_difference(np.array([e["success"] for e in a["episodes_detail"]]),
                                                       np.array([e["success"] for e in b["episodes_detail"]]),
                                                       cfg.bootstrap, cfg.seed, paired=False))},
        "alpha": cfg.alpha,
    }
    if keys:
        seq = sequential_paired_test(list(pa), list(pb), cfg.alpha)
        result["paired"] = {
            "scenes": len(keys), "a_only": int(np.sum(pa & ~pb)), "b_only": int(np.sum(pb & ~pa)),
            "both": int(np.sum(pa & pb)), "neither": int(np.sum(~pa & ~pb)),
            "difference": float(pa.mean() - pb.mean()),
            "bootstrap_ci95": list(bootstrap_difference(pa, pb, cfg.bootstrap, cfg.seed, paired=True)),
            "mcnemar_p": mcnemar_exact(pa, pb),
            "sequential": seq,
        }
    per_task = {}
    for task in dict.fromkeys([*a["per_task"], *b["per_task"]]):
        if task in a["per_task"] and task in b["per_task"]:
            ta, tb = a["per_task"][task], b["per_task"][task]
            per_task[task] = {"a": ta["success_rate"], "b": tb["success_rate"], "a_ci95": ta["ci95"], "b_ci95": tb["ci95"],
                              "difference_ci95": list(difference_interval(ta["successes"], ta["episodes"],
                                                                          tb["successes"], tb["episodes"]))}
    result["per_task"] = per_task
    # How many episodes per policy a test at this alpha needs: for the planned difference
    # around A's rate, and for the difference observed here.
    if not 0 < cfg.detect < 1:
        raise ValueError(f"detect must be in (0, 1), got {cfg.detect}")
    target = rate_a + cfg.detect if rate_a + cfg.detect <= 1 else rate_a - cfg.detect
    result["power"] = {"power": cfg.power, "detect": cfg.detect,
                       "episodes_per_policy_for_detect": episodes_for_difference(rate_a, target, cfg.alpha, cfg.power),
                       "episodes_per_policy_for_observed": (episodes_for_difference(rate_a, rate_b, cfg.alpha, cfg.power)
                                                            if rate_a != rate_b else None)}
    result["verdict"] = verdict(result)
    out = Path(cfg.output_dir) if cfg.output_dir else Path(a["path"]).parent / "compare"
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    atomic_write_json(out / "compare.json", result)
    write_compare_report(result, out)
    return result


def verdict(r: dict) -> str:
    """One sentence: which test decides and what it says."""
    if "paired" in r:
        p, test = r["paired"]["mcnemar_p"], "McNemar exact (paired by scene)"
    else:
        p, test = r["unpaired"]["fisher_p"], "Fisher exact (unpaired)"
    side = "A better" if r["difference"] > 0 else "B better"
    if p < r["alpha"]:
        return f"{side}: difference {r['difference']:+.1%}, {test} p = {p:.3g} < {r['alpha']}"
    return f"no difference detected: {r['difference']:+.1%}, {test} p = {p:.3g} >= {r['alpha']}"


def write_compare_report(r: dict, out: Path) -> Path:
    tasks = list(r["per_task"])
    labels = [f"{t} {side}" for t in tasks for side in ("A", "B")] + ["all A", "all B"]
    rates = [r["per_task"][t][s] for t in tasks for s in ("a", "b")] + [r["runs"]["A"]["success_rate"], r["runs"]["B"]["success_rate"]]
    cis = [r["per_task"][t][f"{s}_ci95"] for t in tasks for s in ("a", "b")] + [r["runs"]["A"]["ci95"], r["runs"]["B"]["ci95"]]
    plot = interval_bars(labels, rates, cis, "A vs B")
    (out / "compare.png").write_bytes(plot)
    runs = "".join(f"<tr><td>{n}</td><td><code>{html.escape(v['policy'])}</code></td><td>{v['successes']}/{v['episodes']}</td>"
                   f"<td>{v['success_rate']:.1%} [{v['ci95'][0]:.1%}, {v['ci95'][1]:.1%}]</td></tr>" for n, v in r["runs"].items())
    u = r["unpaired"]
    tests = [("Newcombe 95% interval of A - B", "[{:+.1%}, {:+.1%}]".format(*r["difference_ci95_newcombe"])),
             ("bootstrap 95% interval (unpaired)", "[{:+.1%}, {:+.1%}]".format(*u["bootstrap_ci95"])),
             ("Fisher exact p", f"{u['fisher_p']:.3g}"), ("Barnard exact p", f"{u['barnard_p']:.3g}")]
    if "paired" in r:
        pr = r["paired"]
        tests += [("paired scenes (A only / B only / both / neither)", f"{pr['scenes']} ({pr['a_only']} / {pr['b_only']} / "
                                                                        f"{pr['both']} / {pr['neither']})"),
                  ("bootstrap 95% interval (paired)", "[{:+.1%}, {:+.1%}]".format(*pr["bootstrap_ci95"])),
                  ("McNemar exact p", f"{pr['mcnemar_p']:.3g}"),
                  ("sequential e-value", f"{pr['sequential']['e_value']:.3g}" + (
                      f", rejects after {pr['sequential']['stopped_at']} scenes" if pr["sequential"]["reject"] else ", no rejection"))]
    pw = r["power"]
    tests += [(f"episodes per policy to detect {pw['detect']:.0%} (power {pw['power']:.0%})",
               str(pw["episodes_per_policy_for_detect"])),
              ("episodes per policy to detect the observed difference", str(pw["episodes_per_policy_for_observed"] or "-"))]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in tests)
    body = (f"<p><b>{html.escape(r['verdict'])}</b></p><table><tr><th>run</th><th>policy</th><th>successes</th>"
            f"<th>success [95% CI]</th></tr>{runs}</table>{embed(plot)}<h2>Tests</h2><table>{rows}</table>")
    return write_page(out, "A/B comparison", body)
