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
    def from_stats(cls, stats: dict) -> "Normalizer":
        """From a LeRobot ``meta/stats.json`` dict."""
        try:
            s, a = stats["observation.state"], stats["action"]
            return cls(
                np.asarray(s["mean"], np.float32),
                np.maximum(np.asarray(s["std"], np.float32), MIN_STD),
                np.asarray(a["mean"], np.float32),
                np.maximum(np.asarray(a["std"], np.float32), MIN_STD),
            )
        except KeyError as e:
            raise ValueError(f"normalisation statistics lack {e}") from None

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
    def load(cls, path: str | Path) -> "Normalizer":
        try:
            return cls.from_stats(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read normalisation file {path}: {e}") from None
