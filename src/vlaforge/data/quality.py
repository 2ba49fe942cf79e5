"""Dataset quality control: ``vlaforge data check`` finds defects, ``vlaforge data clean`` writes a
new dataset without them (the input is never modified).

| rule | flags | clean |
|---|---|---|
| ``nan`` | an episode with NaN/inf in state, action or privileged state | drops it |
| ``failed`` | an episode recorded as unsuccessful (``vlaforge/success`` false) | drops it (or relabel it: ``data relabel``) |
| ``truncated`` | shorter than ``min_length`` frames, or cut off at the time limit | drops it |
| ``idle`` | ``idle_steps`` or more frames in a row in which the proprio state does not move | trims the segment to its first frame |
| ``jerky`` | ``jerk_steps`` or more frames in a row whose translation jerk (second difference of the action) exceeds ``jerk`` | drops it |
| ``duplicate`` | an episode whose content equals an earlier one's, or whose embedding (thumbnails of three frames + resampled actions) lies within ``duplicate_distance`` RMS of it | drops the later copy |
| ``outlier`` | an action more than ``outlier_z`` robust standard deviations from the dataset median | drops it |

Thresholds default to values calibrated on the scripted experts' data (every rule passes the
built-in suite's clean collections; tests plant each defect and check it is caught).
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path

import numpy as np

from vlaforge.data.config import DataConfig
from vlaforge.data.dataset import LeRobotDataset
from vlaforge.data.episodes import Episode, load_episodes, write_episodes
from vlaforge.data.manifest import episode_hashes
from vlaforge.files import atomic_write_json
from vlaforge.registry import Registry

RULES: Registry = Registry("quality rule")


def _runs(mask: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """[start, end) of every run of True of at least ``min_len``."""
    out, start = [], None
    for i, v in enumerate(np.append(mask, False)):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start >= min_len:
                out.append((start, i))
            start = None
    return out


def _finding(rule: str, ep: Episode, detail: str, frames: tuple[int, int] | None = None) -> dict:
    return {"rule": rule, "episode": ep.index, "task": ep.task, "frames": list(frames) if frames else None, "detail": detail}


@RULES.register("nan")
def nan_rule(eps: list[Episode], cfg: DataConfig, ctx: dict) -> list[dict]:
    out = []
    for ep in eps:
        for name, arr in (("state", ep.state), ("action", ep.action), ("env_state", ep.env_state)):
            if arr is not None and not np.all(np.isfinite(arr)):
                frame = int(np.argwhere(~np.isfinite(arr))[0][0])
                out.append(_finding("nan", ep, f"{name} is NaN/inf from frame {frame}", (frame, frame + 1)))
                break
    return out


@RULES.register("failed")
def failed_rule(eps: list[Episode], cfg: DataConfig, ctx: dict) -> list[dict]:
    out = []
    for ep in eps:
        if ep.row.get("vlaforge/success", ep.row.get("success", True)) is False:
            done = json.loads(ep.row.get("vlaforge/achieved") or "[]")
            out.append(_finding("failed", ep, "recorded as unsuccessful" + (f"; it achieved {done}" if done else "")))
    return out


@RULES.register("truncated")
def truncated_rule(eps: list[Episode], cfg: DataConfig, ctx: dict) -> list[dict]:
    out = []
    for ep in eps:
        n = len(ep.action)
        if n < cfg.min_length:
            out.append(_finding("truncated", ep, f"{n} frames, fewer than min_length {cfg.min_length}"))
        elif ctx["max_steps"] and n >= ctx["max_steps"] and ep.row.get("vlaforge/success") is not True:
            out.append(_finding("truncated", ep, f"{n} frames: cut off at the time limit ({ctx['max_steps']} steps)"))
    return out


@RULES.register("idle")
def idle_rule(eps: list[Episode], cfg: DataConfig, ctx: dict) -> list[dict]:
    out = []
    for ep in eps:
        still = np.abs(np.diff(ep.state, axis=0)).max(axis=1) < cfg.idle_eps  # step t -> t+1 moved nothing
        for a, b in _runs(still, cfg.idle_steps):
            out.append(_finding("idle", ep, f"{b - a} steps without motion", (a + 1, b + 1)))
    return out


@RULES.register("jerky")
def jerky_rule(eps: list[Episode], cfg: DataConfig, ctx: dict) -> list[dict]:
    out = []
    dims = ctx["translation_dims"]
    for ep in eps:
        if len(ep.action) < 3:
            continue
        a = ep.action[:, dims]
        jerk = np.linalg.norm(a[2:] - 2 * a[1:-1] + a[:-2], axis=1)
        for s, e in _runs(jerk > cfg.jerk, cfg.jerk_steps):
            out.append(_finding("jerky", ep, f"jerk above {cfg.jerk} for {e - s} frames (max {jerk[s:e].max():.2f})",
                                (s + 1, e + 1)))
    return out


def embedding(ep: Episode) -> np.ndarray:
    """Thumbnails (8 x 8 grey, [0, 1]) of the first, middle and last frames of the first camera
    and the actions resampled to 16 steps: what makes two demonstrations the same."""
    grey = ep.images[:, 0].mean(-1) / 255.0
    h, w = grey.shape[1:]
    n = len(grey)
    thumbs = [grey[k][: h // 8 * 8, : w // 8 * 8].reshape(8, h // 8, 8, w // 8).mean((1, 3)).ravel()
              for k in (0, n // 2, n - 1)]
    idx = np.linspace(0, n - 1, 16).round().astype(int)
    return np.concatenate(thumbs + [np.nan_to_num(ep.action[idx]).ravel()])


@RULES.register("duplicate")
def duplicate_rule(eps: list[Episode], cfg: DataConfig, ctx: dict) -> list[dict]:
    out, seen = [], {}
    emb = np.stack([embedding(ep) for ep in eps])
    hashes = [e["sha256"] for e in episode_hashes(ctx["dataset"])]  # read only when this rule runs
    for i, ep in enumerate(eps):
        h = hashes[i]
        if h in seen:
            out.append(_finding("duplicate", ep, f"same content as episode {seen[h]}"))
            continue
        seen.setdefault(h, ep.index)
        if i:
            d = np.sqrt(((emb[:i] - emb[i]) ** 2).mean(axis=1))
            j = int(np.argmin(d))
            if d[j] < cfg.duplicate_distance:
                out.append(_finding("duplicate", ep, f"near-duplicate of episode {eps[j].index} (RMS distance {d[j]:.4f})"))
    return out


@RULES.register("outlier")
def outlier_rule(eps: list[Episode], cfg: DataConfig, ctx: dict) -> list[dict]:
    out = []
    median, scale = ctx["action_median"], ctx["action_scale"]
    for ep in eps:
        z = np.abs(np.nan_to_num(ep.action, nan=0.0) - median) / scale
        if (z > cfg.outlier_z).any():
            frame, dim = (int(v) for v in np.argwhere(z > cfg.outlier_z)[0])
            out.append(_finding("outlier", ep, f"action[{dim}] = {ep.action[frame, dim]:.3g} at frame {frame} is "
                                               f"{z[frame, dim]:.1f} robust sd from the median", (frame, frame + 1)))
    return out


def _context(ds: LeRobotDataset, eps: list[Episode]) -> dict:
    actions = np.concatenate([ep.action for ep in eps])
    actions = actions[np.isfinite(actions).all(axis=1)]
    median = np.median(actions, axis=0)
    mad = 1.4826 * np.median(np.abs(actions - median), axis=0)
    names = ds.features["action"].get("names") or []
    return {
        "max_steps": (ds.info.get("vlaforge", {}).get("env") or {}).get("max_steps"),
        "action_median": median,
        # A bimodal dimension (gripper open/close) has MAD 0: its standard deviation stands in.
        "action_scale": np.maximum(np.maximum(mad, actions.std(axis=0)), 1e-6),
        "translation_dims": [i for i, n in enumerate(names) if "grip" not in n] or list(range(actions.shape[1])),
        "dataset": ds,
    }


def check_dataset(cfg: DataConfig) -> tuple[dict, list[Episode], LeRobotDataset]:
    """Run the rules; returns the report, the episodes and the dataset."""
    rules = cfg.rules or RULES.names()
    for name in rules:
        RULES.get(name)
    ds = LeRobotDataset(cfg.dataset)
    eps = load_episodes(ds)
    ctx = _context(ds, eps)
    findings = {name: RULES.get(name)(eps, cfg, ctx) for name in rules}
    flagged = sorted({f["episode"] for fs in findings.values() for f in fs})
    integrity = ds.manifest_problems() + ds.metadata_problems()
    report = {
        "dataset": str(cfg.dataset), "episodes": len(eps), "frames": int(sum(len(e.action) for e in eps)),
        "clean": not flagged and not integrity, "flagged_episodes": flagged, "integrity": integrity,
        "rules": {name: {"episodes": len({f["episode"] for f in fs}), "findings": fs} for name, fs in findings.items()},
        "tasks": {t: sum(e.task == t for e in eps) for t in sorted({e.task for e in eps})},
        "thresholds": {k: getattr(cfg, k) for k in ("min_length", "idle_steps", "idle_eps", "jerk", "jerk_steps",
                                                     "duplicate_distance", "outlier_z")},
    }
    return report, eps, ds


def write_check_report(report: dict, eps: list[Episode], out: Path) -> Path:
    """qc.json and qc.html (a table per rule, with the first, middle and last frame of each flagged episode)."""
    from PIL import Image

    from vlaforge.files import atomic_write_json
    from vlaforge.webpage import embed, write_page

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "qc.json", report)
    strips = {}
    for i in report["flagged_episodes"]:
        frames = eps[i].images[:, 0]
        strip = np.concatenate([frames[k] for k in (0, len(frames) // 2, len(frames) - 1)], axis=1)
        buf = io.BytesIO()
        Image.fromarray(strip).save(buf, format="PNG")
        strips[i] = embed(buf.getvalue())
    rows = "".join(f"<tr><td>{name}</td><td>{r['episodes']}</td></tr>" for name, r in report["rules"].items())
    body = [f"<p>{report['episodes']} episodes, {report['frames']} frames; "
            f"{len(report['flagged_episodes'])} flagged.</p>",
            "<table><tr><th>rule</th><th>episodes flagged</th></tr>" + rows + "</table>"]
    if report["integrity"]:
        body.append("<h2>integrity</h2><ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in report["integrity"]) + "</ul>")
    for name, r in report["rules"].items():
        if r["findings"]:
            body.append(f"<h2>{name}</h2><table><tr><th>episode</th><th>task</th><th>frames</th><th>detail</th>"
                        "<th>first / middle / last frame</th></tr>")
            body += [f"<tr><td>{f['episode']}</td><td>{f['task']}</td><td>{f['frames'] or ''}</td><td>{f['detail']}</td>"
                     f"<td>{strips[f['episode']]}</td></tr>" for f in r["findings"]]
            body.append("</table>")
    return write_page(out, f"Quality control: {report['dataset']}", "\n".join(body), "qc.html")


def clean_dataset(cfg: DataConfig) -> dict:
    """Drop the episodes flagged by ``cfg.drop`` rules, trim idle segments; write the new dataset."""
    if not cfg.output:
        raise ValueError("data clean needs --output=DIR (a new dataset; the input is never modified)")
    for name in cfg.drop:
        RULES.get(name)
    report, eps, ds = check_dataset(cfg)
    dropped: dict[int, str] = {}
    for name in cfg.drop:
        for f in report["rules"].get(name, {}).get("findings", []):
            dropped.setdefault(f["episode"], name)
    keep, trimmed = {}, 0
    for ep in eps:
        if ep.index in dropped:
            continue
        cut = set()
        for f in report["rules"].get("idle", {}).get("findings", []):
            if f["episode"] == ep.index:
                a, b = f["frames"]
                cut |= set(range(a, b))  # the run's first still frame (a - 1) stays
        trimmed += len(cut)
        keep[ep.index] = {"frames": [t for t in range(len(ep.action)) if t not in cut] if cut else None}
    if not keep:
        raise ValueError(f"every episode of {cfg.dataset} is flagged; nothing to write")
    write_episodes([(ds, eps, keep)], cfg.output)
    summary = {"dataset": cfg.dataset, "output": cfg.output, "kept": len(keep), "dropped": len(dropped),
               "dropped_by_rule": {n: sum(r == n for r in dropped.values()) for n in cfg.drop}, "frames_trimmed": trimmed,
               "dropped_episodes": {str(k): v for k, v in sorted(dropped.items())}}
    atomic_write_json(Path(cfg.output) / "clean.json", summary)
    return summary
