"""Unsupervised domain adaptation by feature alignment (Deep CORAL with a mean term).

Target-domain frames come without actions (images from a target-domain dataset); the policy's
pooled visual features on them are pulled towards the source batch's features by matching
means and covariances, so the encoder stops representing what tells the domains apart:

    L = ||mu_s - mu_t||^2 / (d v) + ||C_s - C_t||_F^2 / (d^2 v^2)     (Sun & Saenko 2016, + means)

with v the source features' mean variance (no gradient): the loss is scale-free, so shrinking
the features cannot satisfy it, and a weight of 1 means the same on any encoder.
"""

from __future__ import annotations

import torch


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distance between the first two moments of (n, d) source and (m, d) target features."""
    if source.shape[0] < 2 or target.shape[0] < 2:
        raise ValueError("feature alignment needs at least 2 source and 2 target frames per batch")
    d = source.shape[1]
    source, target = source.float(), target.float()
    v = source.var(0).mean().detach().clamp(min=1e-12)
    ms, mt = source.mean(0), target.mean(0)
    cs, ct = torch.cov(source.T), torch.cov(target.T)
    return (ms - mt).pow(2).sum() / (d * v) + (cs - ct).pow(2).sum() / (d * d * v * v)
