import pytest

from vlaforge.eval.stats import wilson_interval


@pytest.mark.parametrize(
    "k,n,lo,hi",
    [(0, 10, 0.0, 0.27753), (5, 10, 0.23659, 0.76341), (10, 10, 0.72247, 1.0), (45, 50, 0.78640, 0.95652), (1, 1, 0.20654, 1.0)],
)
def test_wilson_values(k, n, lo, hi):
    a, b = wilson_interval(k, n)
    assert a == pytest.approx(lo, abs=1e-4) and b == pytest.approx(hi, abs=1e-4)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


@pytest.mark.parametrize("n", [20, 50, 100])
def test_wilson_covers_the_true_rate_95_percent_of_the_time(n):
    """Exact coverage under the binomial: P(lo <= p <= hi) summed over every outcome k. Wilson's
    95% interval covers 93-98% at each p (it oscillates with n and p) and ~95% on average; a wrong
    z or a too-narrow interval drops it to ~90% or below."""
    from scipy.stats import binom

    bounds = [wilson_interval(k, n) for k in range(n + 1)]
    coverage = []
    for p in [i / 40 for i in range(2, 39)]:
        coverage.append(sum(binom.pmf(k, n, p) for k, (lo, hi) in enumerate(bounds) if lo <= p <= hi))
    assert min(coverage) > 0.92 and max(coverage) < 0.985
    assert sum(coverage) / len(coverage) == pytest.approx(0.95, abs=0.01)


def test_exact_and_posterior_intervals_against_known_values():
    from vlaforge.eval.stats import beta_posterior_interval, clopper_pearson_interval

    assert clopper_pearson_interval(5, 10) == pytest.approx((0.18709, 0.81291), abs=1e-5)
    assert clopper_pearson_interval(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))  # closed form at 0/n
    assert clopper_pearson_interval(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0))
    # Uniform prior, 0/10: posterior Beta(1, 11), whose quantiles are 1 - (1 - q)^(1/11).
    assert beta_posterior_interval(0, 10) == pytest.approx((1 - 0.975 ** (1 / 11), 1 - 0.025 ** (1 / 11)))
    lo, hi = clopper_pearson_interval(7, 20)
    wlo, whi = wilson_interval(7, 20)
    assert lo < wlo and hi > whi  # exact is the wider
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson_interval(11, 10)


def test_episodes_needed_for_a_difference_matches_the_textbook_case():
    from vlaforge.eval.stats import episodes_for_difference

    assert episodes_for_difference(0.5, 0.7) == 93  # alpha 0.05 two-sided, power 0.8, no continuity correction
    assert episodes_for_difference(0.5, 0.7, power=0.9) > 93 > episodes_for_difference(0.3, 0.7)
    with pytest.raises(ValueError, match="different rates"):
        episodes_for_difference(0.5, 0.5)


def test_sequential_test_keeps_its_false_positive_rate_and_finds_a_real_gap():
    import numpy as np

    from vlaforge.eval.stats import sequential_paired_test

    rng = np.random.default_rng(0)
    # Equal policies checked after every one of 300 paired episodes: rejections stay under alpha.
    false = sum(sequential_paired_test(rng.random(300) < 0.6, rng.random(300) < 0.6, 0.05)["reject"] for _ in range(400))
    assert false / 400 <= 0.05
    gap = [sequential_paired_test(rng.random(300) < 0.8, rng.random(300) < 0.4, 0.05) for _ in range(50)]
    assert all(g["reject"] for g in gap) and np.median([g["stopped_at"] for g in gap]) < 60
    r = sequential_paired_test([True, False, True], [False, False, True])
    assert (r["a_only"], r["b_only"], r["e_value"]) == (1, 0, pytest.approx(1.0))  # B(2, 1) * 2 = 1
    with pytest.raises(ValueError, match="equal lengths"):
        sequential_paired_test([True], [])


def test_cohen_kappa_textbook_case():
    from vlaforge.eval.stats import cohen_kappa

    # 50 items: 20 both yes, 15 both no, 5 + 10 disagreements: po 0.7, pe 0.5 -> 0.4.
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == 1.0
    with pytest.raises(ValueError):
        cohen_kappa(a, b[:-1])


def test_fleiss_kappa_textbook_case():
    from vlaforge.eval.stats import fleiss_kappa

    # Fleiss (1971) as worked on Wikipedia: 10 items, 14 raters, 5 categories -> 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-3)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[1, 1], [2, 1]])
