"""Exact binomial (Clopper-Pearson) intervals against known values and scipy's beta quantiles."""

from __future__ import annotations

import math

import pytest

from edgevision.core.stats import Rate, clopper_pearson, images_needed, rate


def test_known_values() -> None:
    # 0 escapes on 18 defective images: the true rate is at most 18.5% at 95% (two-sided), not zero
    assert clopper_pearson(0, 18) == (0.0, pytest.approx(0.18530, abs=1e-5))
    assert clopper_pearson(0, 18)[1] == pytest.approx(1 - 0.025 ** (1 / 18), abs=1e-12)
    lo, hi = clopper_pearson(1, 40)
    assert lo == pytest.approx(0.000633, abs=1e-6) and hi == pytest.approx(0.131586, abs=1e-6)
    lo, hi = clopper_pearson(5, 10)  # symmetric around 0.5
    assert lo == pytest.approx(0.187086, abs=1e-6) and hi == pytest.approx(1 - lo, abs=1e-12)
    assert clopper_pearson(10, 10) == (pytest.approx(0.025 ** 0.1, abs=1e-12), 1.0)
    assert clopper_pearson(0, 1) == (0.0, 0.975)
    lo90, hi90 = clopper_pearson(3, 50, level=0.90)  # a narrower level, a narrower interval
    lo95, hi95 = clopper_pearson(3, 50)
    assert lo95 < lo90 < 3 / 50 < hi90 < hi95


def test_agrees_with_scipy_beta_quantiles() -> None:
    beta = pytest.importorskip("scipy.stats").beta
    for k, n in [(0, 5), (1, 5), (4, 5), (7, 123), (50, 100), (3, 2000), (1999, 2000), (25, 100_000)]:
        lo, hi = clopper_pearson(k, n)
        assert lo == pytest.approx(beta.ppf(0.025, k, n - k + 1) if k else 0.0, abs=1e-9)
        assert hi == pytest.approx(beta.ppf(0.975, k + 1, n - k) if k < n else 1.0, abs=1e-9)


def test_images_needed_for_a_limit() -> None:
    assert images_needed(0.01) == 368 and images_needed(0.05) == 72 and images_needed(0.185) == 19
    for limit in (0.01, 0.05, 0.1, 0.3):
        n = images_needed(limit)
        assert clopper_pearson(0, n)[1] <= limit < clopper_pearson(0, n - 1)[1]
    assert images_needed(1.0) == 1 and images_needed(0.0) is None


def test_rate_text_and_dict() -> None:
    r = Rate(1, 40)
    assert r.text() == "2.5% (1/40; 95% CI 0.1-13.2%)"
    assert r.text(pct=False) == "0.025 (1/40; 95% CI 0.001-0.132)"
    d = r.to_dict()
    assert (d["k"], d["n"], d["rate"], d["level"]) == (1, 40, 0.025, 0.95)
    assert math.isclose(d["upper"], 0.131586, abs_tol=1e-6)
    empty = Rate(0, 0)
    assert empty.value is None and empty.upper is None and empty.text() == "- (0 images)"
    assert rate(None, 5) is None and rate(2, 4) == Rate(2, 4)


def test_bad_counts_are_refused() -> None:
    for k, n in [(1, 0), (-1, 5), (6, 5)]:
        with pytest.raises(ValueError, match="0 <= k <= n"):
            clopper_pearson(k, n)
    with pytest.raises(ValueError, match="level"):
        clopper_pearson(1, 5, level=1.0)
