"""Exact binomial confidence intervals for the rates QA signs (escape rate, false-reject rate).

A rate measured on a few images is a count, not a fact: "0 escapes on 18 defective images" means the
true escape rate is at most 18.5% at 95% confidence (two-sided), not zero. `clopper_pearson` gives that
interval: the exact (conservative) binomial interval of Clopper & Pearson (1934), the one regulators and
QA handbooks ask for, computed from the binomial distribution itself (no normal approximation, no scipy):

* lower bound: the ``p`` with ``P(X >= k | n, p) = alpha / 2`` (0 when ``k = 0``);
* upper bound: the ``p`` with ``P(X <= k | n, p) = alpha / 2`` (1 when ``k = n``),

found by bisection on the binomial CDF (summed in log space; agrees with scipy's beta quantiles to 1e-9). `images_needed` answers the
converse: how many images a limit needs before even zero failures can show it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["LEVEL", "Rate", "clopper_pearson", "images_needed", "rate"]

LEVEL = 0.95
"""The confidence level EdgeVision reports (two-sided)."""


def _binom_cdf(k: int, n: int) -> Callable[[float], float]:
    """``p -> P(X <= k)`` for ``X ~ Binomial(n, p)``, summed from the terms' logs (no overflow for large n);
    the log binomial coefficients are computed once, so each evaluation is one vector operation."""
    i = np.arange(k + 1, dtype=np.float64)
    log_coef = np.concatenate([[0.0], np.cumsum(np.log((n - i[1:] + 1) / i[1:]))])

    def cdf(p: float) -> float:
        if p <= 0.0:
            return 1.0
        if p >= 1.0:
            return 1.0 if k >= n else 0.0
        t = log_coef + i * math.log(p) + (n - i) * math.log1p(-p)
        top = float(t.max())
        return min(1.0, math.exp(top) * float(np.exp(t - top).sum()))

    return cdf


def _bisect(f: Callable[[float], float], target: float) -> float:
    """The ``p`` in [0, 1] where the decreasing function ``f(p)`` crosses ``target``."""
    lo, hi = 0.0, 1.0
    for _ in range(60):  # 2^-60: far below any digit printed
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact two-sided ``level`` interval for a binomial proportion ``k / n``.

    Args:
        k: failures counted (0 <= k <= n); n: trials (n >= 1); level: confidence, in (0, 1).

    Returns:
        ``(lower, upper)``, with ``lower <= k / n <= upper``. Known values: 0/18 -> (0, 0.1853);
        1/40 -> (0.00063, 0.1316).

    Raises:
        ValueError: ``n < 1``, ``k`` outside [0, n], or ``level`` outside (0, 1).
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"clopper_pearson: expected 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"clopper_pearson: expected a level in (0, 1), got {level}")
    a = (1.0 - level) / 2
    if k == 0:
        lower = 0.0
    elif k == n:
        lower = a ** (1.0 / n)
    else:  # P(X >= k) = 1 - P(X <= k - 1) increases with p
        lower = _bisect(_binom_cdf(k - 1, n), 1.0 - a)
    if k == n:
        upper = 1.0
    elif k == 0:
        upper = 1.0 - a ** (1.0 / n)
    else:  # P(X <= k) decreases with p
        upper = _bisect(_binom_cdf(k, n), a)
    return lower, upper


def images_needed(limit: float, level: float = LEVEL) -> int | None:
    """The fewest images on which zero failures put the upper bound at or below ``limit``.

    ``1 - (alpha/2)^(1/n) <= limit``, i.e. ``n >= ln(alpha/2) / ln(1 - limit)``; e.g. 1% at 95% needs 368 images,
    5% needs 72. None for ``limit >= 1`` (any count supports it) or ``limit <= 0`` (no count does).
    """
    if limit >= 1.0:
        return 1
    if limit <= 0.0:
        return None
    a = (1.0 - level) / 2
    n = math.ceil(math.log(a) / math.log1p(-limit))
    while n > 1 and 1.0 - a ** (1.0 / (n - 1)) <= limit:  # guard the float rounding of ceil
        n -= 1
    return n


@dataclass(frozen=True)
class Rate:
    """A measured rate with its exact interval: ``k`` failures out of ``n``.

    Attributes:
        k, n: the counts; value: ``k / n`` (None when ``n == 0``); lower, upper: the Clopper-Pearson
        bounds at ``level`` (None when ``n == 0``).
    """

    k: int
    n: int
    level: float = LEVEL

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return clopper_pearson(self.k, self.n, self.level) if self.n else None

    @property
    def lower(self) -> float | None:
        return None if self.n == 0 else self.interval[0]  # type: ignore[index]

    @property
    def upper(self) -> float | None:
        return None if self.n == 0 else self.interval[1]  # type: ignore[index]

    def to_dict(self) -> dict[str, float | int | None]:
        ci = self.interval
        return {"k": self.k, "n": self.n, "rate": self.value, "lower": None if ci is None else ci[0],
                "upper": None if ci is None else ci[1], "level": self.level}

    def text(self, pct: bool = True) -> str:
        """``2.5% (1/40; 95% CI 0.1-13.2%)``, or ``- (0 images)`` when there is nothing to count."""
        if not self.n:
            return "- (0 images)"
        lo, hi = self.interval  # type: ignore[misc]
        if pct:
            return f"{100 * self.k / self.n:.1f}% ({self.k}/{self.n}; {100 * self.level:.0f}% CI " \
                   f"{100 * lo:.1f}-{100 * hi:.1f}%)"
        return f"{self.k / self.n:.3f} ({self.k}/{self.n}; {100 * self.level:.0f}% CI {lo:.3f}-{hi:.3f})"


def rate(k: int | None, n: int | None, level: float = LEVEL) -> Rate | None:
    """`Rate` for counts that may be missing (None when either is None)."""
    if k is None or n is None:
        return None
    return Rate(int(k), int(n), level)
