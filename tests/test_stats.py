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


@pytest.mark.parametrize("n", [1, 3, 7, 10, 20, 49, 50, 100])
def test_wilson_contains_the_rate_exactly(n):
    for k in range(n + 1):
        lo, hi = wilson_interval(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0
