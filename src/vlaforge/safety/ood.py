"""Out-of-distribution observations: Mahalanobis distance of the policy's visual embedding to the
embeddings of its training frames.

Fit on a dataset: the mean and a shrunk covariance come from the frames of 80% of its episodes,
the threshold is the ``quantile`` of the distances of the other 20% of episodes (scenes the fit
never saw; consecutive frames of one episode are near copies, so holding out frames would set
the threshold too tight), so a clean frame of a new scene exceeds it with probability about
1 - quantile. A corrupted camera (noise,
blackout, occlusion, a different scene) moves the embedding far outside that range. Stored as
``ood.safetensors`` (tensors) beside the policy's files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vlaforge.models.policy import Policy


def embed(policy: Policy, images: torch.Tensor, tokens: torch.Tensor) -> np.ndarray:
    """(N, d) embeddings of uint8 frames (N, V, H, W, 3) with their instruction tokens (N, L)."""
    with torch.no_grad():
        feats = policy.model.visual_features(images[:, None], tokens)  # one frame of history
    return feats.view(images.shape[0], -1).double().numpy()


class OODDetector:
    def __init__(self, mean: np.ndarray, precision: np.ndarray, threshold: float) -> None:
        self.mean, self.precision, self.threshold = mean, precision, float(threshold)

    @classmethod
    def fit(cls, policy: Policy, dataset: str, samples: int = 512, quantile: float = 0.995, seed: int = 0,
            shrinkage: float = 0.1) -> OODDetector:
        from vlaforge.data.dataset import LeRobotDataset

        if not 0.5 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0.5, 1), got {quantile}")
        data = LeRobotDataset(dataset).load()
        if data.images.shape[1:] != policy.image_shape:
            raise ValueError(f"dataset images {data.images.shape[1:]} differ from the policy's {policy.image_shape}")
        rng = np.random.default_rng(seed)
        episodes = rng.permutation(np.unique(data.episode))
        held_out = max(1, len(episodes) // 5)
        if len(episodes) - held_out < 2:
            raise ValueError(f"OOD fitting needs at least 3 episodes, the dataset has {len(episodes)}")
        is_held = np.isin(data.episode, episodes[:held_out])

        def embed_frames(mask: np.ndarray) -> np.ndarray:
            idx = np.flatnonzero(mask)
            idx = rng.choice(idx, size=min(samples, len(idx)), replace=False)
            tokens = torch.tensor([policy.tokenizer.encode(data.tasks[data.task_index[i]], policy.cfg.max_text_tokens)
                                   for i in idx])
            return embed(policy, torch.from_numpy(data.images[idx]), tokens)

        fit, held = embed_frames(~is_held), embed_frames(is_held)
        mean = fit.mean(0)
        cov = np.cov(fit, rowvar=False)
        cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
        precision = np.linalg.inv(cov)
        detector = cls(mean, precision, 0.0)
        detector.threshold = float(np.quantile(detector.distances(held), quantile))
        return detector

    def distances(self, z: np.ndarray) -> np.ndarray:
        d = z - self.mean
        return np.sqrt(np.einsum("nd,de,ne->n", d, self.precision, d))

    def score(self, policy: Policy, obs: dict) -> float:
        """The observation's distance (in units of the threshold: > 1 is out of distribution)."""
        tokens = torch.tensor([policy.tokenizer.encode(obs["instruction"], policy.cfg.max_text_tokens)])
        z = embed(policy, torch.from_numpy(np.ascontiguousarray(obs["image"]))[None], tokens)
        return float(self.distances(z)[0] / self.threshold)

    def save(self, path: str | Path) -> None:
        save_file({"mean": torch.from_numpy(self.mean), "precision": torch.from_numpy(self.precision),
                   "threshold": torch.tensor([self.threshold], dtype=torch.float64)}, str(path))

    @classmethod
    def load(cls, path: str | Path) -> OODDetector:
        t = load_file(str(path))
        return cls(t["mean"].numpy(), t["precision"].numpy(), float(t["threshold"][0]))
