"""The population stability index (PSI): how far one distribution has moved from another.

PSI = sum over bins of (actual - expected) * ln(actual / expected), on the shares of each
distribution per bin. Under 0.1 the two barely differ, 0.1-0.25 moderately, above 0.25 a
lot. The shadow report compares two models' scores with it (`population_stability`); the
drift watch compares the champion's live inputs and scores with the bins its bundle carries
(`QuantileBins`).
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

PSI_BINS = 10
# An empty bin would make ln(actual / expected) infinite: shares are floored at this, so a
# bin that empties (or appears) still weighs heavily without dominating every other bin.
SHARE_FLOOR = 1e-6


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two vectors of shares over the same bins (each summing to 1)."""
    e = np.clip(np.asarray(expected, dtype=float), SHARE_FLOOR, None)
    a = np.clip(np.asarray(actual, dtype=float), SHARE_FLOOR, None)
    if e.shape != a.shape:
        raise ValueError(f"PSI needs the same bins on both sides: {e.shape} vs {a.shape}")
    return float(np.sum((a - e) * np.log(a / e)))


def population_stability(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """PSI of `actual` against `expected`, on `expected`'s quantile bins (equal-width bins
    over [0, 1] when `expected` has too few distinct values to cut into quantiles)."""
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    if len(edges) < bins // 2 + 1:
        edges = np.linspace(0.0, 1.0, bins + 1)
    edges[0], edges[-1] = -np.inf, np.inf
    share_e = np.histogram(expected, edges)[0] / len(expected)
    share_a = np.histogram(actual, edges)[0] / len(actual)
    return psi(share_e, share_a)


@dataclass(frozen=True)
class QuantileBins:
    """Bins cut at a reference sample's quantiles, and the reference's share in each.

    Each cut point is a bin of its own, between open intervals: (-inf, c1), [c1], (c1, c2),
    ..., [ck], (ck, inf), then a last bin for missing values (NaN). A count that is mostly 0
    thus keeps its zeros apart from its ones, a constant feature has bins below, at and above
    its value (a move either way shows), and a feature that starts to go missing shows too.
    """

    cuts: tuple[float, ...]
    shares: tuple[float, ...]  # 2 * len(cuts) + 1 value bins, then the missing bin

    def __post_init__(self) -> None:
        if list(self.cuts) != sorted(set(self.cuts)):
            raise ValueError("the cut points must be distinct and increasing")
        if len(self.shares) != 2 * len(self.cuts) + 2:
            raise ValueError(
                f"{len(self.cuts)} cut points make {2 * len(self.cuts) + 2} bins, "
                f"not {len(self.shares)}"
            )

    @classmethod
    def of(cls, values: np.ndarray, bins: int = PSI_BINS) -> "QuantileBins":
        """Cut at the interior `bins`-quantiles (deciles by default) of the non-missing
        values; the shares are the reference's own. The cut points are values the reference
        took (not interpolated), so the point masses of a count fall on them."""
        values = np.asarray(values, dtype=float)
        present = values[~np.isnan(values)]
        inner = np.linspace(0, 1, bins + 1)[1:-1]
        cuts = np.array([])
        if len(present):
            cuts = np.unique(np.quantile(present, inner, method="inverted_cdf"))
        empty = cls(tuple(float(c) for c in cuts), (0.0,) * (2 * len(cuts) + 2))
        return cls(empty.cuts, tuple(float(s) for s in empty.share_of(values)))

    def counts(self, values: np.ndarray) -> np.ndarray:
        """How many of `values` fall in each bin (the missing bin last)."""
        values = np.asarray(values, dtype=float)
        missing = np.isnan(values)
        present = values[~missing]
        cuts = np.asarray(self.cuts, dtype=float)
        # below: cut points < x; at_or_below: cut points <= x. On a cut point they differ
        # by one, giving the odd (point) bins; between cut points they agree, the even ones.
        below = np.searchsorted(cuts, present, side="left")
        at_or_below = np.searchsorted(cuts, present, side="right")
        counts = np.bincount(below + at_or_below, minlength=2 * len(cuts) + 1)
        return np.append(counts, missing.sum())

    def share_of(self, values: np.ndarray) -> np.ndarray:
        """The share of `values` in each bin; all zeros for no values."""
        counts = self.counts(values)
        total = counts.sum()
        return counts / total if total else counts.astype(float)

    def psi(self, values: np.ndarray) -> float:
        """PSI of `values` against the reference these bins were cut from."""
        if len(values) == 0:
            raise ValueError("PSI of no values")
        return psi(np.asarray(self.shares), self.share_of(values))

    def labels(self) -> list[str]:
        """A short name for each bin: '<a', 'a', 'a..b', ..., '>z', 'missing'."""
        cuts = [f"{c:.3g}" for c in self.cuts]
        if not cuts:
            return ["any", "missing"]
        names = [f"<{cuts[0]}"]
        for i, cut in enumerate(cuts):
            names.append(cut)
            names.append(f"{cut}..{cuts[i + 1]}" if i + 1 < len(cuts) else f">{cut}")
        return [*names, "missing"]

    def to_dict(self) -> dict[str, Any]:
        return {"cuts": list(self.cuts), "shares": list(self.shares)}

    @classmethod
    def from_dict(cls, raw: Any) -> "QuantileBins":
        """From `to_dict`'s form; ValueError saying what is wrong otherwise."""
        if not isinstance(raw, dict) or not {"cuts", "shares"} <= raw.keys():
            raise ValueError("bins need 'cuts' and 'shares'")
        try:
            cuts = tuple(float(c) for c in raw["cuts"])
            shares = tuple(float(s) for s in raw["shares"])
        except (TypeError, ValueError):
            raise ValueError("bins' cuts and shares must be lists of numbers") from None
        return cls(cuts, shares)
