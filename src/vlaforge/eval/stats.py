"""Success-rate statistics."""

from __future__ import annotations

import math

import numpy as np


def _check_counts(successes: int, n: int) -> None:
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default).

    Unlike the normal approximation it stays inside [0, 1] and is honest at 0/n and n/n,
    which is where small robot evaluations usually live.
    """
    _check_counts(successes, n)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The interval always contains p; rounding alone can put a bound a hair past it at 0/n or n/n.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def difference_interval(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """95% interval for p1 - p2 of two independent proportions (Newcombe's hybrid Wilson score
    method): how large a transfer gap or an A/B difference can be, given the episode counts."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1)
    l2, u2 = wilson_interval(k2, n2)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)



def clopper_pearson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval: never below its nominal coverage, so wider than Wilson;
    the conservative choice for a claim such as "at least 90% success"."""
    from scipy.stats import beta

    _check_counts(successes, n)
    a = 1 - level
    lo = 0.0 if successes == 0 else float(beta.ppf(a / 2, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta.ppf(1 - a / 2, successes + 1, n - successes))
    return lo, hi


def beta_posterior_interval(successes: int, n: int, level: float = 0.95, prior: tuple[float, float] = (1.0, 1.0)
                            ) -> tuple[float, float]:
    """Equal-tailed credible interval of the success rate under a Beta prior (uniform by
    default; (0.5, 0.5) is Jeffreys'): what the rate plausibly is, given these episodes."""
    from scipy.stats import beta

    _check_counts(successes, n)
    a, b = prior[0] + successes, prior[1] + n - successes
    return float(beta.ppf((1 - level) / 2, a, b)), float(beta.ppf((1 + level) / 2, a, b))


def episodes_for_difference(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Episodes per policy for a two-sided test of p1 vs p2 to detect their difference with
    ``power`` (normal approximation with the pooled variance under the null): how many
    evaluation episodes an A/B comparison needs before it is run."""
    from scipy.stats import norm

    if not (0 <= p1 <= 1 and 0 <= p2 <= 1) or p1 == p2:
        raise ValueError(f"need two different rates in [0, 1], got {p1} and {p2}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha} and {power}")
    mean = (p1 + p2) / 2
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    n = (za * math.sqrt(2 * mean * (1 - mean)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p1 - p2) ** 2
    return math.ceil(n)


def sequential_paired_test(a: list[bool], b: list[bool], alpha: float = 0.05) -> dict:
    """Anytime-valid test of "A and B succeed equally often" on episodes paired by seed, read
    in order, that may stop as soon as it rejects.

    Only discordant pairs (one succeeds, the other fails) carry information; under the null
    each is A's win with probability 1/2. The e-value is the likelihood ratio of a uniform
    mixture over A's win probability against 1/2, E = B(w + 1, l + 1) 2^(w + l), a martingale
    under the null, so by Ville's inequality P(E ever >= 1/alpha) <= alpha: checking after
    every episode and stopping at the first rejection keeps the false-positive rate under alpha."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need equal lengths, got {len(a)} and {len(b)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    wins = losses = 0
    log_e, stopped = 0.0, None
    for i, (x, y) in enumerate(zip(a, b)):
        wins, losses = wins + (bool(x) and not y), losses + (bool(y) and not x)
        log_e = math.lgamma(wins + 1) + math.lgamma(losses + 1) - math.lgamma(wins + losses + 2) + (wins + losses) * math.log(2)
        if stopped is None and log_e >= -math.log(alpha):
            stopped = i + 1
    return {"e_value": math.exp(log_e), "reject": stopped is not None, "stopped_at": stopped,
            "a_only": wins, "b_only": losses, "alpha": alpha}


BETS = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8)  # fractions of the largest safe bet, averaged (a mixture of e-processes)


class NonInferiority:
    """Anytime-valid paired test of "the challenger is not worse than the champion by more than
    ``margin``" (success-rate difference), fed one pair of outcomes at a time (O(1) each).

    Each pair gives X = challenger - champion in {-1, 0, 1} with mean d, the difference in success
    rates. Two betting e-processes (Waudby-Smith & Ramdas 2023, "Estimating means of bounded
    random variables by betting"), each a mixture over the fixed bets ``BETS``:
    K+ = mean_l prod_i (1 + l (X_i + margin)), l < 1 / (1 - margin), a nonnegative supermartingale
    when d <= -margin, and K- = mean_l prod_i (1 - l (X_i + margin)), l < 1 / (1 + margin), one
    when d >= -margin. By Ville's inequality each crosses 1/alpha with probability at most alpha
    under its null, however often it is checked. ``decision``: ``non-inferior`` when K+ crosses
    first (the challenger is worse by more than the margin with probability <= alpha),
    ``inferior`` when K- crosses first, else ``undecided``. With margin 0 they read "better" and
    "worse"."""

    def __init__(self, margin: float, alpha: float = 0.05) -> None:
        if not 0 <= margin < 1 or not 0 < alpha < 1:
            raise ValueError(f"need 0 <= margin < 1 and 0 < alpha < 1, got margin {margin} and alpha {alpha}")
        self.margin, self.alpha = margin, alpha
        self.up, self.down = np.asarray(BETS) / (1 - margin), np.asarray(BETS) / (1 + margin)
        self.log_up, self.log_down = np.zeros(len(BETS)), np.zeros(len(BETS))
        self.pairs = self.challenger_only = self.champion_only = 0
        self.decision, self.stopped_at = "undecided", None

    def add(self, challenger: bool, champion: bool) -> str:
        """One more pair; the decision so far (fixed at the first crossing)."""
        x = float(challenger) - float(champion)
        self.pairs += 1
        self.challenger_only += x > 0
        self.champion_only += x < 0
        self.log_up += np.log1p(self.up * (x + self.margin))
        self.log_down += np.log1p(-self.down * (x + self.margin))
        if self.decision == "undecided":
            threshold = -math.log(self.alpha)
            if self.log_e("non-inferior") >= threshold:
                self.decision, self.stopped_at = "non-inferior", self.pairs
            elif self.log_e("inferior") >= threshold:
                self.decision, self.stopped_at = "inferior", self.pairs
        return self.decision

    def log_e(self, which: str) -> float:
        wealth = self.log_up if which == "non-inferior" else self.log_down
        top = float(wealth.max())  # log of the mean wealth, computed stably
        return top + math.log(float(np.exp(wealth - top).sum()) / len(BETS))

    def result(self) -> dict:
        return {"decision": self.decision, "stopped_at": self.stopped_at, "pairs": self.pairs, "margin": self.margin,
                "alpha": self.alpha, "e_noninferior": math.exp(min(self.log_e("non-inferior"), 700.0)),
                "e_inferior": math.exp(min(self.log_e("inferior"), 700.0)),
                "difference": (self.challenger_only - self.champion_only) / self.pairs if self.pairs else 0.0,
                "challenger_only": int(self.challenger_only), "champion_only": int(self.champion_only)}


def noninferiority_test(challenger: list[bool], champion: list[bool], margin: float, alpha: float = 0.05) -> dict:
    """``NonInferiority`` over paired outcome lists, read in order."""
    if len(challenger) != len(champion):
        raise ValueError(f"paired outcomes need equal lengths, got {len(challenger)} and {len(champion)}")
    test = NonInferiority(margin, alpha)
    for a, b in zip(challenger, champion):
        test.add(bool(a), bool(b))
    return test.result()


def cohen_kappa(a: list, b: list) -> float:
    """Cohen's kappa of two raters' labels on the same items: agreement beyond what their own
    label frequencies would give by chance (1 = perfect, 0 = chance)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"need two equally long, non-empty label lists, got {len(a)} and {len(b)}")
    labels = sorted(set(a) | set(b), key=str)
    n = len(a)
    po = sum(x == y for x, y in zip(a, b)) / n
    pe = sum((a.count(c) / n) * (b.count(c) / n) for c in labels)
    return 1.0 if pe == 1 else (po - pe) / (1 - pe)


def fleiss_kappa(counts: list[list[int]]) -> float:
    """Fleiss' kappa from an items x categories table of how many raters chose each category
    (every item rated by the same number of raters, at least two)."""
    if not counts:
        raise ValueError("need at least one rated item")
    m = sum(counts[0])
    if m < 2 or any(sum(row) != m for row in counts):
        raise ValueError("every item needs the same number (>= 2) of ratings")
    n = len(counts)
    p_cat = [sum(row[j] for row in counts) / (n * m) for j in range(len(counts[0]))]
    p_item = [(sum(c * c for c in row) - m) / (m * (m - 1)) for row in counts]
    pe = sum(p * p for p in p_cat)
    pbar = sum(p_item) / n
    return 1.0 if pe == 1 else (pbar - pe) / (1 - pe)


def seed_summary(results: list[dict]) -> dict:
    """Evaluations of one recipe trained with several seeds (results.json dicts with successes and
    episodes): each seed's success, their mean and sd (the seed-to-seed spread a single run
    hides), and the Wilson interval of every episode pooled (which does not count that spread);
    when every evaluation has ``per_task``, each task's success averaged over seeds too."""
    if not results:
        raise ValueError("seed_summary needs at least one evaluation")
    rates = [r["successes"] / r["episodes"] for r in results]
    k, n = sum(r["successes"] for r in results), sum(r["episodes"] for r in results)
    mean = sum(rates) / len(rates)
    sd = (sum((x - mean) ** 2 for x in rates) / (len(rates) - 1)) ** 0.5 if len(rates) > 1 else 0.0
    out = {"per_seed": rates, "mean": mean, "sd": sd, "pooled": k / n, "pooled_ci95": list(wilson_interval(k, n)),
           "episodes": n}
    if all("per_task" in r for r in results):
        out["per_task_mean"] = {t: sum(r["per_task"][t]["success_rate"] for r in results) / len(results)
                                for t in results[0]["per_task"]}
    return out


def paired(a: list[dict], b: list[dict]) -> dict:
    """A - B over evaluations paired by training seed and scene (``a[i]`` and ``b[i]`` share seed i):
    the pooled paired bootstrap and exact McNemar test over every (seed, scene) pair, and the t
    interval of the per-seed differences (df = seeds - 1), the one that counts the seed draw
    (None with one seed)."""
    import statistics

    import numpy as np
    from scipy import stats as sstats

    from vlaforge.eval.compare import bootstrap_difference, mcnemar_exact, paired_outcomes

    xs, ys, per_seed = [], [], []
    for ra, rb in zip(a, b):
        _, x, y = paired_outcomes(ra, rb)
        xs.append(x), ys.append(y)
        per_seed.append(float(x.mean() - y.mean()))
    x, y = np.concatenate(xs), np.concatenate(ys)
    seed_t = None
    if len(per_seed) > 1:
        mean = statistics.fmean(per_seed)
        half = sstats.t.ppf(0.975, len(per_seed) - 1) * statistics.stdev(per_seed) / len(per_seed) ** 0.5
        seed_t = [mean - half, mean + half]
    return {"difference": float(x.mean() - y.mean()), "per_seed": per_seed, "seed_t_ci95": seed_t,
            "paired_bootstrap_ci95": list(bootstrap_difference(x, y, 10_000, 0, paired=True)),
            "mcnemar_p": mcnemar_exact(x, y), "pairs": int(len(x))}
