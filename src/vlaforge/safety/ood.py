"""Out-of-distribution observations: Mahalanobis distance of the policy's visual embedding (the
statistics of its encoder's feature map) to the embeddings of its training frames.

Fit on a dataset: the mean and a shrunk covariance of its frames' embeddings; the threshold is
the ``quantile`` of cross-validated distances, each frame measured by a fit that left its whole
episode out (consecutive frames of an episode are near copies, so leaving out frames would set
the threshold too tight). A clean frame of a new scene then exceeds it with probability about
1 - quantile. A corrupted camera (noise,
blackout, occlusion, a different scene) moves the embedding far outside that range. Stored as
``ood.safetensors`` (tensors) beside the policy's files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vlaforge.runtime.policy import Policy


def embed(policy: Policy, images: torch.Tensor, tokens: torch.Tensor) -> np.ndarray:
    """(N, V * 2C) embeddings of uint8 frames (N, V, H, W, 3) with their instruction tokens (N, L):
    per camera the spatial mean and standard deviation of each channel of the encoder's last
    feature map. The mean carries what the scene shows; the spread carries its texture, where
    noise, blur and occlusion show even when they average out."""
    model = policy.model
    n, v = images.shape[:2]
    with torch.no_grad():
        text, mask = model.text(tokens)
        x = model.vision.feature_map(images.flatten(0, 1), text, mask).float().flatten(2)
        feats = torch.cat([x.mean(-1), x.std(-1)], dim=-1)
    return feats.view(n, -1).double().numpy()


class OODDetector:
    def __init__(self, mean: np.ndarray, precision: np.ndarray, threshold: float) -> None:
        self.mean, self.precision, self.threshold = mean, precision, float(threshold)

    @classmethod
    def fit(cls, policy: Policy, dataset: str, samples: int = 2048, quantile: float = 0.995, seed: int = 0,
            shrinkage: float = 0.1, folds: int = 5) -> OODDetector:
        """Mean and shrunk covariance of the dataset's frame embeddings; the threshold is the
        ``quantile`` of cross-validated distances, each frame measured by a fit that left its
        whole episode out."""
        from vlaforge.data.dataset import LeRobotDataset

        if not 0.5 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0.5, 1), got {quantile}")
        data = LeRobotDataset(dataset).load()
        if data.images.shape[1:] != policy.image_shape:
            raise ValueError(f"dataset images {data.images.shape[1:]} differ from the policy's {policy.image_shape}")
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(data.images), size=min(samples, len(data.images)), replace=False))
        episodes = data.episode[idx]
        unique = rng.permutation(np.unique(episodes))
        folds = min(folds, len(unique))
        if folds < 3:
            raise ValueError(f"OOD fitting needs at least 3 episodes, the dataset has {len(unique)}")
        tokens = torch.tensor([policy.tokenizer.encode(data.tasks[data.task_index[i]], policy.cfg.max_text_tokens)
                               for i in idx])
        z = embed(policy, torch.from_numpy(data.images[idx]), tokens)
        held_out = np.empty(len(z))
        for fold in np.array_split(unique, folds):
            test = np.isin(episodes, fold)
            held_out[test] = cls._fit(z[~test], shrinkage).distances(z[test])
        detector = cls._fit(z, shrinkage)
        detector.threshold = float(np.quantile(held_out, quantile))
        return detector

    @classmethod
    def _fit(cls, z: np.ndarray, shrinkage: float) -> OODDetector:
        cov = np.cov(z, rowvar=False)
        cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
        return cls(z.mean(0), np.linalg.inv(cov), 1.0)

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
