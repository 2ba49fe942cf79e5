"""Robustness sweeps (COLOSSEUM-style): success against the severity of one perturbation factor
at a time, or all of them together, each severity a full evaluation in its own directory.

``vlaforge eval --policy DIR --perturb lighting=0..1 --perturb all=0..1`` writes
``robustness/robustness.json`` and ``robustness/report.html`` (success-vs-severity curves).
"""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path

from vlaforge.config import save_yaml
from vlaforge.eval.config import EvalConfig
from vlaforge.eval.report import plt, png
from vlaforge.eval.rollout import brief, evaluate
from vlaforge.files import atomic_write_json
from vlaforge.webpage import embed, write_page


def sweep(cfg: EvalConfig, show_progress: bool = True) -> dict:
    """Evaluate the policy at every severity of every ``cfg.perturb`` factor; the unperturbed
    evaluation (severity 0) is run once and shared by all factors."""
    from vlaforge.envs.randomization import parse_perturb, perturbation

    if not cfg.perturb:
        raise ValueError("a robustness sweep needs at least one --perturb factor=lo..hi")
    if not cfg.policy:
        raise ValueError("eval needs --policy=DIR (a policy directory)")
    specs = [parse_perturb(spec) for spec in cfg.perturb]
    out = Path(cfg.output_dir) if cfg.output_dir else Path(cfg.policy).parent / "eval" / cfg.split / "robustness"
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    done: dict[str, dict] = {}
    curves = {}
    for factor, severities in specs:
        points = []
        for s in severities:
            domain = perturbation(factor, s)
            key = json.dumps(dataclasses.asdict(domain), sort_keys=True)
            if key not in done:
                where = out / ("nominal" if s == 0 else f"{factor}_{s:.2f}")
                run = dataclasses.replace(cfg, perturb=[], domain=domain, output_dir=str(where))
                done[key] = evaluate(run, show_progress)
            points.append({"severity": s, **brief(done[key])})
        curves[factor] = points
    results = {"policy": cfg.policy, "split": cfg.split, "episodes_per_task": cfg.episodes, "seed": cfg.seed,
               "curves": curves, "summary": {factor: summarize_curve(points) for factor, points in curves.items()}}
    atomic_write_json(out / "robustness.json", results)
    write_robustness_report(results, out)
    return results


def summarize_curve(points: list[dict]) -> dict:
    """One factor's robustness in three numbers: the mean success over its severity range (area
    under the curve / range, trapezoids), the largest drop below the lowest severity's success,
    and the first severity at which success falls to half of that (linearly interpolated; None
    if it never does)."""
    pts = sorted(points, key=lambda p: p["severity"])
    xs, ys = [p["severity"] for p in pts], [p["success_rate"] for p in pts]
    span = xs[-1] - xs[0]
    area = sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:]))
    half, at_half = ys[0] / 2, None
    for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:]):
        if ys[0] > 0 and y1 <= half:
            at_half = x1 if y0 == y1 else x0 + (y0 - half) / (y0 - y1) * (x1 - x0)
            break
    return {"mean_success": area / span if span > 0 else ys[0], "worst_drop": ys[0] - min(ys),
            "severity_at_half": at_half}


def severity_plot(curves: dict) -> bytes:
    """Success (with 95% bands) against severity, one line per factor."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    for factor, points in curves.items():
        xs = [p["severity"] for p in points]
        ax.plot(xs, [p["success_rate"] for p in points], marker="o", label=factor, lw=2.2 if factor == "all" else 1.2)
        ax.fill_between(xs, [p["ci95"][0] for p in points], [p["ci95"][1] for p in points], alpha=0.08)
    ax.set_xlabel("severity")
    ax.set_ylabel("success rate (95% CI)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return png(fig)


def write_robustness_report(results: dict, out: Path) -> Path:
    plot = severity_plot(results["curves"])
    (out / "robustness.png").write_bytes(plot)
    rows = "".join(
        f"<tr><td>{html.escape(f)}</td>" + "".join(
            f"<td>{p['severity']:.2f}: {p['success_rate']:.0%} [{p['ci95'][0]:.0%}, {p['ci95'][1]:.0%}]</td>" for p in pts
        ) + "</tr>"
        for f, pts in results["curves"].items()
    )
    summary = "".join(
        f"<tr><td>{html.escape(f)}</td><td>{v['mean_success']:.1%}</td><td>{v['worst_drop']:+.1%}</td>"
        f"<td>{'-' if v['severity_at_half'] is None else format(v['severity_at_half'], '.2f')}</td></tr>"
        for f, v in results.get("summary", {}).items()
    )
    body = (f"<p>Policy <code>{html.escape(results['policy'])}</code>, split {html.escape(results['split'])}, "
            f"{results['episodes_per_task']} episodes per task and severity; every severity replays the same scenes.</p>"
            f"{embed(plot)}<table><tr><th>factor</th><th colspan=9>severity: success [95% CI]</th></tr>{rows}</table>"
            "<h2>Summary</h2><table><tr><th>factor</th><th>mean success over the range</th><th>worst drop</th>"
            f"<th>severity at half the nominal success</th></tr>{summary}</table>"
            "<p>Each severity's own report (videos included) is in its directory beside this page.</p>")
    return write_page(out, "robustness sweep", body)
