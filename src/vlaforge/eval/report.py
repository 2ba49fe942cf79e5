"""HTML evaluation report: per-task success with 95% intervals as a plot, and rollout GIFs."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import imageio.v2 as imageio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def success_plot(results: dict) -> bytes:
    tasks = list(results["per_task"])
    rates = [results["per_task"][t]["success_rate"] for t in tasks]
    lo = [r - results["per_task"][t]["ci95"][0] for t, r in zip(tasks, rates)]
    hi = [results["per_task"][t]["ci95"][1] - r for t, r in zip(tasks, rates)]
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(tasks)), 3.2), dpi=110)
    ax.bar(tasks, rates, yerr=[lo, hi], capsize=4, color="#4c78a8")
    ax.axhline(results["success_rate"], color="#e45756", ls="--", lw=1, label=f"overall {results['success_rate']:.0%}")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% Wilson CI)")
    ax.set_title(f"{results['suite']} / {results['split']}")
    ax.legend(loc="lower right", fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_report(results: dict, records: list[dict], out: Path) -> Path:
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    plot = base64.b64encode(success_plot(results)).decode()
    (out / "success.png").write_bytes(base64.b64decode(plot))
    cards = []
    for r in records:
        if r.get("frames") is None:
            continue
        name = f"{r['task']}_{r['seed']}.gif"
        imageio.mimsave(videos / name, list(r["frames"]), duration=0.05, loop=0)
        verdict = "success" if r["success"] else "failure"
        cards.append(
            f'<figure><img src="videos/{name}" width="192"><figcaption><b>{html.escape(r["task"])}</b> '
            f'({verdict}, {r["length"]} steps)<br>{html.escape(r["instruction"])}</figcaption></figure>'
        )
    rows = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{v['successes']}/{v['episodes']}</td><td>{v['success_rate']:.1%}</td>"
        f"<td>[{v['ci95'][0]:.1%}, {v['ci95'][1]:.1%}]</td><td>{v['mean_episode_length']:.1f}</td></tr>"
        for t, v in results["per_task"].items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>vlaforge eval</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
figure{{display:inline-block;margin:6px;width:200px;font-size:12px;vertical-align:top}}</style></head><body>
<h1>{html.escape(results['suite'])} &mdash; split {html.escape(results['split'])}</h1>
<p>Policy <code>{html.escape(results['policy'])}</code>: <b>{results['success_rate']:.1%}</b> success over
{results['episodes']} episodes, 95% CI [{results['ci95'][0]:.1%}, {results['ci95'][1]:.1%}],
mean length {results['mean_episode_length']:.1f} steps, {results['wall_seconds']:.1f} s wall.</p>
<img src="data:image/png;base64,{plot}">
<table><tr><th>task</th><th>successes</th><th>rate</th><th>95% CI</th><th>mean length</th></tr>{rows}</table>
<h2>Rollouts</h2>{''.join(cards)}</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
