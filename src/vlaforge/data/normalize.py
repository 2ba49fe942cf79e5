"""Mean/std normalisation of proprio and actions, saved as normalization.json beside the data/policy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_STD = 1e-2  # keeps near-constant dimensions from exploding


@dataclass
class Normalizer:
    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray

    @classmethod
    def from_stats(cls, stats: dict, state_dim: int | None = None, action_dim: int | None = None,
                   source: str = "normalisation statistics") -> "Normalizer":
        """From a LeRobot ``meta/stats.json`` dict: mean and std of each key finite vectors of
        one length (``state_dim`` / ``action_dim`` where the caller knows it), std >= 0."""
        arrays = []
        for key, dim in (("observation.state", state_dim), ("action", action_dim)):
            for stat in ("mean", "std"):
                try:
                    arr = np.asarray(stats[key][stat], np.float32)
                except (KeyError, TypeError, ValueError) as e:
                    raise ValueError(f"{source}: {key}.{stat} is missing or not a list of numbers ({e!r})") from None
                want = dim if dim is not None else (len(arrays[-1]) if stat == "std" else None)
                if arr.ndim != 1 or (want is not None and len(arr) != want) or not np.isfinite(arr).all() or \
                        (stat == "std" and (arr < 0).any()):
                    raise ValueError(f"{source}: {key}.{stat} must be {want or 'D'} finite numbers"
                                     f"{' >= 0' if stat == 'std' else ''}, got {arr.tolist()}")
                arrays.append(np.maximum(arr, MIN_STD) if stat == "std" else arr)
        return cls(*arrays)

    def norm_state(self, x):
        return (x - self.state_mean) / self.state_std

    def norm_action(self, x):
        return (x - self.action_mean) / self.action_std

    def unnorm_action(self, x):
        return x * self.action_std + self.action_mean

    def to_dict(self) -> dict:
        return {
            "observation.state": {"mean": self.state_mean.tolist(), "std": self.state_std.tolist()},
            "action": {"mean": self.action_mean.tolist(), "std": self.action_std.tolist()},
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path, state_dim: int | None = None, action_dim: int | None = None) -> "Normalizer":
        try:
            stats = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read normalisation file {path}: {e}") from None
        if not isinstance(stats, dict):
            raise ValueError(f"normalisation file {path} must hold an object with observation.state and action")
        return cls.from_stats(stats, state_dim, action_dim, source=str(path))
