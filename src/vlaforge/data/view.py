"""``vlaforge data view``: episodes as a Rerun recording (.rrd), cameras, proprio state, actions and
the instruction on one timeline per episode, for the Rerun viewer (``rerun FILE.rrd``, installed
with rerun-sdk) to scrub through.

Entities: ``episode_<i>/cameras/<camera>`` (images), ``episode_<i>/state/<name>`` and
``episode_<i>/action/<name>`` (one scalar series per dimension, named as in meta/info.json),
``episode_<i>/instruction`` (static text). Timelines: ``frame`` (the episode's frame index) and
``time`` (seconds, frame / fps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlaforge.data.config import DataConfig
from vlaforge.data.dataset import LeRobotDataset
from vlaforge.files import tmp_path


def _rerun():
    try:
        import rerun
    except ImportError as e:
        raise ImportError(f"data view needs rerun-sdk: pip install 'vlaforge[view]' ({e})") from None
    return rerun


def _names(ds: LeRobotDataset, key: str, dim: int) -> list[str]:
    names = ds.features[key].get("names")
    return list(names) if isinstance(names, list) and len(names) == dim else [str(i) for i in range(dim)]


def view(cfg: DataConfig) -> dict:
    """Write the episodes named by ``episodes`` (default: the first) of ``dataset`` to ``output``
    (default ``<dataset>/view.rrd``), atomically."""
    rr = _rerun()
    ds = LeRobotDataset(cfg.dataset)
    chosen = cfg.episodes or [0]
    bad = [i for i in chosen if not 0 <= i < ds.num_episodes]
    if bad:
        raise ValueError(f"--episodes: {bad} not in {cfg.dataset} (episodes 0..{ds.num_episodes - 1})")
    out = Path(cfg.output or Path(cfg.dataset) / "view.rrd")
    if out.suffix != ".rrd":
        raise ValueError(f"--output must name an .rrd file, got {out}")
    data = ds.load(check_finite=False, episodes=chosen)  # only the episodes shown, in dataset order
    shown = sorted(set(chosen))
    starts = dict(zip(shown, np.concatenate([[0], np.cumsum(data.lengths)[:-1]])))
    lengths = dict(zip(shown, data.lengths))
    state_names = _names(ds, "observation.state", data.state.shape[1])
    action_names = _names(ds, "action", data.action.shape[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(out)
    rec = rr.RecordingStream(f"vlaforge {ds.root.name}")
    rec.save(str(tmp))
    for i in chosen:
        s, n, base = int(starts[i]), int(lengths[i]), f"episode_{i}"
        rec.log(f"{base}/instruction", rr.TextDocument(ds.episodes[i]["tasks"][0]), static=True)
        for t in range(n):
            rec.set_time("frame", sequence=t)
            rec.set_time("time", duration=t / ds.fps)
            for v, cam in enumerate(data.cameras):
                rec.log(f"{base}/cameras/{cam}", rr.Image(data.images[s + t, v]))
            for name, value in zip(state_names, data.state[s + t]):
                rec.log(f"{base}/state/{name}", rr.Scalars(float(value)))
            for name, value in zip(action_names, data.action[s + t]):
                rec.log(f"{base}/action/{name}", rr.Scalars(float(value)))
    rec.flush()
    rec.disconnect()
    tmp.replace(out)
    return {"output": str(out), "episodes": chosen, "frames": int(sum(lengths[i] for i in chosen))}
