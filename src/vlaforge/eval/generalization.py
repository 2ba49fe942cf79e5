"""Generalization report: one policy evaluated on every split of its suite (seen scenes, unseen
colour-shape combinations, unseen paraphrases, held-out tasks), with each split's gap to the
reference split (the first; ``train`` by default) and Newcombe's 95% interval.

``vlaforge generalize --policy=DIR`` writes generalization/generalization.json and report.html;
each split's own evaluation (videos included) sits beside them.
"""

from __future__ import annotations

import html
from pathlib import Path

from vlaforge.config import save_yaml
from vlaforge.eval.config import EvalConfig, GeneralizeConfig
from vlaforge.eval.report import interval_bars
from vlaforge.eval.rollout import brief, evaluate
from vlaforge.eval.stats import difference_interval
from vlaforge.files import atomic_write_json
from vlaforge.webpage import embed, write_page


def generalize(cfg: GeneralizeConfig, show_progress: bool = True) -> dict:
    from vlaforge.envs import get_suite
    from vlaforge.runtime.policy import load_policy

    if not cfg.policy:
        raise ValueError("generalize needs --policy=DIR (a policy directory)")
    suite = get_suite(load_policy(cfg.policy).meta["suite"])
    splits = cfg.splits or (["train"] + [s for s in suite.splits if s != "train"])
    for s in splits:  # unknown names fail before any evaluation runs
        if s not in suite.splits:
            raise KeyError(f"unknown split {s!r} in suite {suite.name!r}; known splits: {', '.join(suite.splits)}")
    out = Path(cfg.output_dir) if cfg.output_dir else Path(cfg.policy).parent / "generalization"
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    results = {s: evaluate(EvalConfig(policy=cfg.policy, split=s, episodes=cfg.episodes, seed=cfg.seed, **cfg.pool(),
                                      output_dir=str(out / s)), show_progress) for s in splits}
    ref = results[splits[0]]
    rows = {}
    for s, r in results.items():
        rows[s] = brief(r) | {"tasks": list(r["per_task"])}
        if s != splits[0]:
            rows[s]["gap"] = ref["success_rate"] - r["success_rate"]
            rows[s]["gap_ci95"] = list(difference_interval(ref["successes"], ref["episodes"], r["successes"], r["episodes"]))
    summary = {"policy": cfg.policy, "suite": suite.name, "reference": splits[0], "episodes_per_task": cfg.episodes,
               "seed": cfg.seed, "splits": rows}
    atomic_write_json(out / "generalization.json", summary)
    write_generalization_report(summary, out)
    return summary


def write_generalization_report(summary: dict, out: Path) -> Path:
    names, rows = list(summary["splits"]), summary["splits"]
    ref = summary["reference"]
    plot = interval_bars(names, [rows[n]["success_rate"] for n in names], [rows[n]["ci95"] for n in names],
                         "success by split", (rows[ref]["success_rate"], ref))
    (out / "generalization.png").write_bytes(plot)
    table = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{r['successes']}/{r['episodes']}</td>"
        f"<td>{r['success_rate']:.1%} [{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}]</td>"
        + (f"<td>{r['gap']:+.1%} [{r['gap_ci95'][0]:+.1%}, {r['gap_ci95'][1]:+.1%}]</td>" if "gap" in r else "<td></td>")
        + "</tr>" for n, r in rows.items())
    body = (f"<p>Policy <code>{html.escape(summary['policy'])}</code> on every split of {html.escape(summary['suite'])}, "
            f"{summary['episodes_per_task']} episodes per task each.</p>{embed(plot)}<table><tr><th>split</th><th>successes</th>"
            f"<th>success [95% CI]</th><th>gap ({html.escape(ref)} - split) [95% CI]</th></tr>{table}</table>"
            "<p>Per-split reports with videos: the directories beside this page.</p>")
    return write_page(out, "generalization by split", body)
