"""
Rate limits: token buckets, and a log that says a thing at most once per period.

Plain objects given a clock (anything with C{seconds()} and C{callLater}),
so tests drive them with C{twisted.internet.task.Clock}.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

LOG_PERIOD = 10.0
"""Seconds between two lines for the same key, by default."""


class TokenBucket:
    """A token bucket: C{rate} tokens a second, at most C{burst} saved up."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Spend C{amount} tokens if there are that many."""
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        elif elapsed < 0:
            self.stamp = now  # the clock went back: start counting from here
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False


def effective_burst(rate: float, burst: int) -> float:
    """A bucket's size: C{burst}, or one second's worth of C{rate} (at least 1) when it is 0."""
    if burst > 0:
        return float(burst)
    return float(max(1, math.ceil(rate)))


class RateLimitedLog:
    """
    At most one log line per key per C{period} seconds.

    C{emit(held)} is called for a line that gets through, with the number
    of lines held back for that key since the last one. When C{summary} is
    given, held-back lines are not left waiting for the next line (which may
    never come): at the end of the period C{summary(key, held)} is called
    (from a C{callLater} on C{clock}), and that counts as the key's line for
    the next period.
    """

    MAX_KEYS = 4096
    """Keys remembered at most (idle ones are forgotten first), so any key set is safe."""

    def __init__(
        self,
        clock: Any,
        period: float = LOG_PERIOD,
        summary: Callable[[str, int], None] | None = None,
    ) -> None:
        self.clock = clock
        self.period = period
        self.summary = summary
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._flush: dict[str, Any] = {}

    def __call__(self, key: str, emit: Callable[[int], None]) -> bool:
        """Call C{emit(suppressed_count)} unless C{key} logged recently."""
        now = self.clock.seconds()
        last = self._last.get(key)
        if last is not None and 0 <= now - last < self.period:
            self._held[key] = self._held.get(key, 0) + 1
            if self.summary is not None and key not in self._flush:
                self._flush[key] = self.clock.callLater(last + self.period - now, self._flush_key, key)
            return False
        if len(self._last) >= self.MAX_KEYS and key not in self._last:
            self._forget(now)
        self._last[key] = now
        self._cancel(key)
        emit(self._held.pop(key, 0))
        return True

    def held(self, key: str) -> int:
        """Lines held back for C{key} and not reported yet."""
        return self._held.get(key, 0)

    def _flush_key(self, key: str) -> None:
        self._flush.pop(key, None)
        held = self._held.pop(key, 0)
        if held and self.summary is not None:
            self._last[key] = self.clock.seconds()
            self.summary(key, held)

    def _cancel(self, key: str) -> None:
        call = self._flush.pop(key, None)
        if call is not None and call.active():
            call.cancel()

    def _forget(self, now: float) -> None:
        for key, last in list(self._last.items()):
            if now - last >= self.period and key not in self._held:
                del self._last[key]
        if len(self._last) >= self.MAX_KEYS:
            # Still full of recent keys: forget the oldest half (their held counts go with them).
            for key in sorted(self._last, key=self._last.__getitem__)[: self.MAX_KEYS // 2]:
                del self._last[key]
                self._held.pop(key, None)
                self._cancel(key)

    def flush(self) -> None:
        """Report everything held now (on stop): no count is lost."""
        for key in list(self._flush):
            self._cancel(key)
            self._flush_key(key)
        for key in list(self._held):
            self._flush_key(key)


def _shared(rate: float, burst: int, share: int) -> tuple[float, float]:
    """
    One of C{share} processes' part of a rate and its burst: 1/share of
    each, but at least one token of burst (a bucket that can never hold a
    whole token would never let anything through).
    """
    whole = effective_burst(rate, burst)
    if share <= 1:
        return rate, whole
    return rate / share, max(1.0, whole / share)


class SourceLimiter:
    """
    Per-source token buckets in a table of at most C{max_sources} entries.

    With C{share} > 1 this is one of that many worker processes' tables,
    each given 1/share of the rate and of the burst (L{_shared}): a source
    whose traffic the workers share gets the whole rate between them, never
    more (but for a burst below one token per worker), and may get less when
    its traffic lands unevenly.

    The table is kept in least-recently-seen order: a new source evicts the
    one not heard from for longest (a source that keeps sending stays, with
    its empty bucket). An evicted source comes back with a full bucket,
    which is what it would have had after a quiet spell anyway.
    """

    def __init__(self, rate: float, burst: int, max_sources: int, share: int = 1) -> None:
        self.rate, self.burst = _shared(rate, burst, share)
        self.max_sources = max(1, max_sources)
        self.table: OrderedDict[str, TokenBucket] = OrderedDict()
        self.evicted = 0

    def allow(self, key: str, now: float) -> bool:
        """Spend one token of C{key}'s bucket, if it has one."""
        table = self.table
        bucket = table.get(key)
        if bucket is None:
            while len(table) >= self.max_sources:
                table.popitem(last=False)
                self.evicted += 1
            bucket = table[key] = TokenBucket(self.rate, self.burst, now)
        else:
            table.move_to_end(key)
        return bucket.take(now)

    def reconfigure(self, rate: float, burst: int, max_sources: int, share: int = 1) -> None:
        """New limits; known sources keep their tokens (capped to the new burst)."""
        self.rate, self.burst = _shared(rate, burst, share)
        self.max_sources = max(1, max_sources)
        for bucket in self.table.values():
            bucket.rate = self.rate
            bucket.burst = self.burst
            bucket.tokens = min(bucket.tokens, self.burst)
        while len(self.table) > self.max_sources:
            self.table.popitem(last=False)
            self.evicted += 1
