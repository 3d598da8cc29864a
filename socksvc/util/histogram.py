"""
A fixed-bucket histogram that costs a bisect and two additions per observation.

The daemon counts connection durations with it at close (metrics read it at
scrape time; see docs/observability.md). Counts are kept per bucket, not
cumulative; L{Histogram.cumulative} gives Prometheus' C{le} form, and
L{Histogram.merged} adds two together (the same bounds), as a supervisor
summing its workers would.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

DURATION_BOUNDS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, 86400)
"""Seconds: a greeting takes a millisecond, a chat member stays for hours."""


class Histogram:
    """Observations counted into buckets C{value <= bound}, plus one for anything larger."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = DURATION_BOUNDS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= it) for every bound, then (inf, all of them)."""
        out = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    def copy(self) -> Histogram:
        other = Histogram(self.bounds)
        other.counts = list(self.counts)
        other.sum = self.sum
        return other

    def merged(self, other: Histogram) -> Histogram:
        """The sum of two histograms with the same bounds."""
        if other.bounds != self.bounds:
            raise ValueError("histograms with different bounds")
        out = self.copy()
        out.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        out.sum += other.sum
        return out
