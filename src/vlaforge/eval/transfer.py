"""The transfer protocol: one policy evaluated in its source simulation and in held-out target
domains on the same scenes, with the transfer gap (source minus target) and its 95% interval.

This is a sim-to-sim proxy for sim-to-real: the targets are simulations with parameters no
training range covered, not a real robot (docs/sim2real.md).
"""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path

from vlaforge.config import save_yaml
from vlaforge.envs.config import DomainConfig
from vlaforge.eval.config import EvalConfig, TransferConfig
from vlaforge.eval.report import interval_bars
from vlaforge.eval.rollout import brief, evaluate
from vlaforge.eval.stats import difference_interval
from vlaforge.files import atomic_write_json
from vlaforge.webpage import embed, write_page


def transfer(cfg: TransferConfig, show_progress: bool = True) -> dict:
    """Evaluate in the source and every target; write transfer.json and report.html."""
    import vlaforge.envs  # noqa: F401  (registers the suites)
    from vlaforge.envs.randomization import TARGETS
    from vlaforge.registry import DOMAINS, SUITES

    if not cfg.policy:
        raise ValueError("transfer needs --policy=DIR (a policy directory)")
    if not cfg.targets:
        raise ValueError(f"transfer needs at least one --targets name; named targets: {', '.join(TARGETS)}")
    for name in cfg.targets:  # unknown names fail before any evaluation runs
        if name not in SUITES.names():
            try:
                DOMAINS.get(name)
            except KeyError:
                raise KeyError(f"unknown target {name!r}; named domains: {', '.join(DOMAINS.names())}; "
                               f"suites: {', '.join(SUITES.names())}") from None
    out = Path(cfg.output_dir) if cfg.output_dir else Path(cfg.policy).parent / "transfer"
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    base = EvalConfig(policy=cfg.policy, split=cfg.split, episodes=cfg.episodes, seed=cfg.seed, **cfg.pool())
    results = {}
    for name in ["source", *cfg.targets]:
        if name in SUITES.names():  # another simulator: the same tasks, nominal parameters
            run = dataclasses.replace(base, suite=name, output_dir=str(out / name))
        else:
            domain = DomainConfig(preset=name) if name != "source" else DomainConfig()
            run = dataclasses.replace(base, domain=domain, output_dir=str(out / name))
        results[name] = evaluate(run, show_progress)
    src = results["source"]
    rows = {}
    for name, r in results.items():
        rows[name] = brief(r)
        if name != "source":
            rows[name]["gap"] = src["success_rate"] - r["success_rate"]
            rows[name]["gap_ci95"] = list(difference_interval(src["successes"], src["episodes"], r["successes"],
                                                              r["episodes"]))
    summary = {"policy": cfg.policy, "split": cfg.split, "seed": cfg.seed, "episodes_per_task": cfg.episodes,
               "domains": rows}
    atomic_write_json(out / "transfer.json", summary)
    write_transfer_report(summary, out)
    return summary


def write_transfer_report(summary: dict, out: Path) -> Path:
    names = list(summary["domains"])
    rows = summary["domains"]
    plot = interval_bars(names, [rows[n]["success_rate"] for n in names], [rows[n]["ci95"] for n in names],
                         "success by domain", (rows["source"]["success_rate"], "source"))
    (out / "transfer.png").write_bytes(plot)
    table = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{r['success_rate']:.1%} [{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}]</td>"
        + (f"<td>{r['gap']:+.1%} [{r['gap_ci95'][0]:+.1%}, {r['gap_ci95'][1]:+.1%}]</td>" if "gap" in r else "<td></td>")
        + "</tr>"
        for n, r in rows.items()
    )
    body = (f"<p>Policy <code>{html.escape(summary['policy'])}</code>: the same {summary['episodes_per_task']} scenes "
            f"per task in each domain. Sim-to-sim proxy: the targets are simulations outside the training ranges.</p>"
            f"{embed(plot)}<table><tr><th>domain</th><th>success [95% CI]</th><th>gap (source - target) [95% CI]</th></tr>"
            f"{table}</table><p>Per-domain reports with videos: the directories beside this page.</p>")
    return write_page(out, "sim-to-real transfer (sim-to-sim proxy)", body)
