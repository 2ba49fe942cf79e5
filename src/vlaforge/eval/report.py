"""HTML evaluation report: per-task success with 95% intervals as a plot, and rollout GIFs."""

from __future__ import annotations

import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vlaforge.webpage import embed, write_page  # noqa: E402


def png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def interval_bars(labels: list[str], rates: list[float], cis: list[list[float]], title: str,
                  line: tuple[float, str] | None = None) -> bytes:
    """Bars of success rates with their 95% intervals; ``line`` = (value, label) drawn across."""
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(labels)), 3.2), dpi=110)
    err = [[r - c[0] for r, c in zip(rates, cis)], [c[1] - r for r, c in zip(rates, cis)]]
    ax.bar(labels, rates, yerr=err, capsize=4, color="#4c78a8")
    if line is not None:
        ax.axhline(line[0], color="#e45756", ls="--", lw=1, label=line[1])
        ax.legend(loc="lower right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% Wilson CI)")
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    return png(fig)


def rate_curve(xs: list, rates: list[float], cis: list[list[float]], xlabel: str, ylabel: str, title: str = "",
               log_x: bool = False, ticks_at_x: bool = False) -> bytes:
    """Rates against a numeric x with their 95% intervals as error bars (scaling curves, chain positions)."""
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.errorbar(xs, rates, yerr=[[r - c[0] for r, c in zip(rates, cis)], [c[1] - r for r, c in zip(rates, cis)]],
                marker="o", capsize=4)
    if log_x:
        ax.set_xscale("log")
    if ticks_at_x:
        ax.set_xticks(xs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.05)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return png(fig)


def success_plot(results: dict) -> bytes:
    tasks = list(results["per_task"])
    return interval_bars(
        tasks, [results["per_task"][t]["success_rate"] for t in tasks], [results["per_task"][t]["ci95"] for t in tasks],
        f"{results['suite']} / {results['split']}", (results["success_rate"], f"overall {results['success_rate']:.0%}"),
    )


def _efficiency_cells(v: dict) -> str:
    """The per-task efficiency figures as table cells (blank where no episode succeeded)."""
    e = v.get("efficiency", {})
    keys = ("steps_to_success", "sim_seconds_to_success", "path_length_to_success", "energy_to_success")
    return "".join("<td></td>" if e.get(k) is None else f"<td>{e[k]:.2f}</td>" for k in keys)


def _more_intervals(results: dict) -> str:
    parts = [f"{label} [{results[k][0]:.1%}, {results[k][1]:.1%}]" for k, label in
             (("ci95_exact", "exact"), ("posterior95", "Beta posterior")) if k in results]
    return "".join(", " + p for p in parts)


def render_eval_report(results: dict, out: Path) -> Path:
    """report.html of one evaluation from its results.json and the GIFs beside it (re-runnable:
    ``vlaforge report DIR``)."""
    plot = success_plot(results)
    (out / "success.png").write_bytes(plot)
    cards = []
    for r in results["episodes_detail"]:
        name = f"{r['task']}_{r['seed']}.gif"
        if not (out / "videos" / name).is_file():
            continue
        verdict = "success" if r["success"] else "failure"
        cards.append(
            f'<figure><img src="videos/{name}" width="192"><figcaption><b>{html.escape(r["task"])}</b> '
            f'({verdict}, {r["length"]} steps)<br>{html.escape(r["instruction"])}</figcaption></figure>'
        )
    rows = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{v['successes']}/{v['episodes']}</td><td>{v['success_rate']:.1%}</td>"
        f"<td>[{v['ci95'][0]:.1%}, {v['ci95'][1]:.1%}]</td><td>{v['mean_episode_length']:.1f}</td>{_efficiency_cells(v)}</tr>"
        for t, v in results["per_task"].items()
    )
    domain = results.get("domain", {}).get("name", "source")
    body = f"""<p>Policy <code>{html.escape(results['policy'])}</code>: <b>{results['success_rate']:.1%}</b> success over
{results['episodes']} episodes, 95% CI [{results['ci95'][0]:.1%}, {results['ci95'][1]:.1%}] (Wilson){_more_intervals(results)},
mean length {results['mean_episode_length']:.1f} steps, {results['wall_seconds']:.1f} s wall; domain {html.escape(domain)}.</p>
{embed(plot)}
<table><tr><th>task</th><th>successes</th><th>rate</th><th>95% CI</th><th>mean length</th><th>steps to success</th>
<th>seconds to success (sim)</th><th>path to success (m)</th><th>work to success (J)</th></tr>{rows}</table>
<h2>Rollouts</h2>{''.join(cards)}"""
    return write_page(out, f"{results['suite']} \u2014 split {results['split']}", body)
