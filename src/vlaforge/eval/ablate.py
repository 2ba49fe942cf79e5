"""Ablations and data scaling: ``vlaforge ablate --grid grid.yaml``.

The grid file names a base run (a quickstart config: collect, train, eval) and axes, each one
config key with the values it takes::

    base: {collect: {episodes_per_task: 20}, train: {steps: 1000}, eval: {episodes: 20}, splits: [train]}
    axes:
      augmentation: {train.image_shift: [0, 4]}        # a toggle: first value off, last on
      demos: {collect.episodes_per_task: [5, 10, 20]}  # a sweep: a scaling curve

Every combination of values is one cell (collect -> train -> eval in its own directory); cells
with the same collect settings share one dataset, and a rerun reuses finished cells. A toggle's
contribution is the pooled success of its cells at the last value minus at the first value, with
Newcombe's 95% interval (a main effect, averaged over the other axes); a numeric sweep is also
drawn as success against the value on a log axis (data scaling when the key is
``collect.episodes_per_task``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import itertools
import json
from pathlib import Path

import yaml

from vlaforge.config import BACKENDS, ConfigError, apply_overrides, from_dict, save_yaml, to_dict
from vlaforge.eval.config import AblateConfig, QuickstartConfig
from vlaforge.eval.report import rate_curve
from vlaforge.eval.stats import difference_interval, wilson_interval
from vlaforge.files import atomic_write_json
from vlaforge.webpage import embed, write_page

# Keys the ablation sets for every cell itself (where data, runs and evaluations go).
SET_BY_ABLATE = {"output_dir", "collect.output", "collect.resume", "train.dataset", "train.output_dir", "train.resume",
                 "eval.policy", "eval.output_dir", "eval.split"}


def load_grid(path: str) -> tuple[QuickstartConfig, dict[str, tuple[str, list]]]:
    """The base config and the axes {name: (key, values)}; every cell's config is built here,
    so a bad key or value fails before anything runs."""
    p = Path(path)
    if not path or not p.is_file():
        raise ConfigError(f"ablate needs --grid=FILE.yaml; not found: {path!r}")
    try:
        spec = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"grid file {p} is not valid YAML: {e}") from None
    if not isinstance(spec, dict) or set(spec) - {"base", "axes"}:
        raise ConfigError(f"grid file {p} takes the keys base and axes")
    base = from_dict(QuickstartConfig, spec.get("base") or {})
    if base.seeds:
        raise ValueError(f"{path}: base.seeds is not read by ablate; make the seeds an axis (train.seed: [0, 1, 2])")
    axes = {}
    for name, axis in (spec.get("axes") or {}).items():
        if not isinstance(axis, dict) or len(axis) != 1:
            raise ConfigError(f"axis {name!r} must be one key with a list of values, e.g. {{train.image_shift: [0, 4]}}")
        (key, values), = axis.items()
        if not isinstance(values, list) or len(values) < 2 or len(set(map(json.dumps, values))) != len(values):
            raise ConfigError(f"axis {name!r} ({key}) needs a list of at least two different values, got {values!r}")
        if key in SET_BY_ABLATE:
            raise ConfigError(f"axis {name!r}: {key} is set by the ablation itself")
        for v in values:
            apply_overrides(base, [f"{key}={json.dumps(v)}"])
        axes[name] = (key, values)
    if not axes:
        raise ConfigError(f"grid file {p} has no axes")
    return base, axes


def cells(base: QuickstartConfig, axes: dict[str, tuple[str, list]]) -> list[tuple[dict, QuickstartConfig]]:
    """Every combination of axis values: ({axis: value}, the cell's config)."""
    names = list(axes)
    out = []
    for combo in itertools.product(*(axes[n][1] for n in names)):
        cfg = apply_overrides(base, [f"{axes[n][0]}={json.dumps(v)}" for n, v in zip(names, combo)])
        out.append((dict(zip(names, combo)), cfg))
    return out


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def run_cell(cfg: QuickstartConfig, root: Path, cell_dir: Path, split: str, show_progress: bool) -> dict:
    """Collect (shared by cells with equal collect settings), train and evaluate one cell;
    finished stages are reused."""
    from vlaforge.data.collect import collect
    from vlaforge.eval.rollout import evaluate
    from vlaforge.train.trainer import train

    where = cfg.collect.pool()  # where it runs does not change the data
    data = root / "data" / _digest({k: v for k, v in to_dict(cfg.collect).items() if k not in where})
    if not (data / "done").is_file():
        collect(dataclasses.replace(cfg.collect, output=str(data), resume=(data / "meta").exists()), show_progress)
        (data / "done").write_text("")
    policy = cell_dir / "train" / "policy"
    if not policy.exists():
        train_cfg = dataclasses.replace(cfg.train, dataset=str(data), output_dir=str(cell_dir / "train"),
                                        resume=(cell_dir / "train" / "checkpoints").exists())
        train(train_cfg, show_progress)
    out = cell_dir / "eval" / split
    if (out / "results.json").is_file():
        return json.loads((out / "results.json").read_text())
    return evaluate(dataclasses.replace(cfg.eval, policy=str(policy), split=split, output_dir=str(out)), show_progress)


def ablate(cfg: AblateConfig, show_progress: bool = True) -> dict:
    """Run every cell of the grid; write ablate.json, config.yaml and report.html."""
    if cfg.backend and cfg.backend not in BACKENDS:
        raise ConfigError(f"config key 'backend' must be one of {', '.join(BACKENDS)} (or empty), got {cfg.backend!r}")
    base, axes = load_grid(cfg.grid)
    if cfg.backend:
        pool = {"backend": cfg.backend, "ray_address": cfg.ray_address}
        base = dataclasses.replace(base, collect=dataclasses.replace(base.collect, **pool),
                                   eval=dataclasses.replace(base.eval, **pool))
    split = cfg.split or (base.splits[0] if base.splits else "train")
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, root / "config.yaml")
    (root / "grid.yaml").write_text(Path(cfg.grid).read_text())
    rows = []
    for values, cell_cfg in cells(base, axes):
        name = "_".join(f"{n}={v}" for n, v in values.items()).replace("/", "-")
        cell_dir = root / "cells" / name
        cell_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(cell_cfg, cell_dir / "config.yaml")
        r = run_cell(cell_cfg, root, cell_dir, split, show_progress)
        rows.append({"cell": name, "values": values, "successes": r["successes"], "episodes": r["episodes"],
                     "success_rate": r["success_rate"], "ci95": r["ci95"], "results": str(cell_dir / "eval" / split / "results.json")})
    summary = {"grid": str(cfg.grid), "split": split, "axes": {n: {"key": k, "values": v} for n, (k, v) in axes.items()},
               "cells": rows, "effects": effects(rows, axes)}
    atomic_write_json(root / "ablate.json", summary)
    write_ablate_report(summary, root)
    return summary


def effects(rows: list[dict], axes: dict[str, tuple[str, list]]) -> dict:
    """Per axis: pooled success at each value, and the contribution (last value - first)."""
    out = {}
    for name, (key, values) in axes.items():
        levels = []
        for v in values:
            k = sum(r["successes"] for r in rows if r["values"][name] == v)
            n = sum(r["episodes"] for r in rows if r["values"][name] == v)
            levels.append({"value": v, "successes": k, "episodes": n, "success_rate": k / n, "ci95": list(wilson_interval(k, n))})
        first, last = levels[0], levels[-1]
        out[name] = {"key": key, "levels": levels, "contribution": last["success_rate"] - first["success_rate"],
                     "contribution_ci95": list(difference_interval(last["successes"], last["episodes"],
                                                                   first["successes"], first["episodes"]))}
    return out


def scaling_plot(name: str, e: dict) -> bytes | None:
    """Success against a numeric axis (log x when every value is positive); None otherwise."""
    xs = [lv["value"] for lv in e["levels"]]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
        return None
    levels = e["levels"]
    return rate_curve(xs, [lv["success_rate"] for lv in levels], [lv["ci95"] for lv in levels], e["key"],
                      "success (95% Wilson CI)", name, log_x=all(x > 0 for x in xs))


def write_ablate_report(summary: dict, out: Path) -> Path:
    parts = []
    for name, e in summary["effects"].items():
        levels = ", ".join(f"{html.escape(json.dumps(lv['value']))}: {lv['success_rate']:.1%} [{lv['ci95'][0]:.0%}, "
                           f"{lv['ci95'][1]:.0%}]" for lv in e["levels"])
        lo, hi = e["contribution_ci95"]
        parts.append(f"<tr><td>{html.escape(name)}</td><td><code>{html.escape(e['key'])}</code></td><td>{levels}</td>"
                     f"<td>{e['contribution']:+.1%} [{lo:+.1%}, {hi:+.1%}]</td></tr>")
    plots = []
    for name, e in summary["effects"].items():
        plot = scaling_plot(name, e)
        if plot is not None:
            (out / f"scaling_{name}.png").write_bytes(plot)
            plots.append(plot)
    cells_rows = "".join(f"<tr><td>{html.escape(r['cell'])}</td><td>{r['successes']}/{r['episodes']}</td>"
                         f"<td>{r['success_rate']:.1%} [{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}]</td></tr>" for r in summary["cells"])
    body = (f"<p>Split {html.escape(summary['split'])}; contribution = pooled success at the axis's last value minus its "
            f"first (Newcombe 95%), averaged over the other axes.</p><table><tr><th>axis</th><th>key</th><th>success by value</th>"
            f"<th>contribution</th></tr>{''.join(parts)}</table>{''.join(embed(p) for p in plots)}"
            f"<h2>Cells</h2><table><tr><th>cell</th><th>successes</th><th>success [95% CI]</th></tr>{cells_rows}</table>")
    return write_page(out, "ablation grid", body)
