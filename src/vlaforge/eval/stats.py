"""Success-rate statistics."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default).

    Unlike the normal approximation it stays inside [0, 1] and is honest at 0/n and n/n,
    which is where small robot evaluations usually live.
    """
    if n <= 0:
        raise ValueError("wilson_interval needs n >= 1 trials")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The interval always contains p; rounding alone can put a bound a hair past it at 0/n or n/n.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))
