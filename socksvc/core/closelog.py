"""
The ceiling on a service's close lines (C{log_close_rate}).

A close line per connection is the access log admins expect, until a
client opens and resets connections as fast as it can: 167,000 cycles in
31 s once wrote 167,534 lines (29 MB). L{CloseCeiling} lets at most
C{rate} lines a second through (C{burst} at once, a token bucket); every
close over that is counted instead, with its bytes, and one summary line
per period (10 s) reports the count and the totals, the way refusals are
summarised (L{socksvc.util.ratelimit.RateLimitedLog}). Nothing is lost: the
count and the byte totals of the closes not logged one by one are in the
summary, and L{CloseCeiling.flush} reports what is held when the service
stops.

A plain object given a clock (anything with C{seconds()} and
C{callLater}), so tests drive it with C{twisted.internet.task.Clock}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from socksvc.util.ratelimit import LOG_PERIOD, TokenBucket, effective_burst

Summary = Callable[[int, int, int, float], None]
"""C{summary(count, bytes_in, bytes_out, seconds)}: closes not logged in the last C{seconds}."""


class CloseCeiling:
    """
    At most C{rate} close lines a second (C{burst} at once; 0 = one second's
    worth); C{rate} 0 = no ceiling. L{admit} says whether a close may have
    its line; a close that may not is L{hold}-ed, and C{summary} is called
    C{period} seconds after the first close held (from a C{callLater}).
    """

    __slots__ = ("_bucket", "_call", "bytes_in", "bytes_out", "clock", "held", "period", "since", "summary")

    def __init__(self, clock: Any, rate: float, burst: int, summary: Summary, period: float = LOG_PERIOD) -> None:
        self.clock = clock
        self.summary = summary
        self.period = period
        self.held = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.since = 0.0
        self._call: Any = None
        self._bucket: TokenBucket | None = None
        self.reconfigure(rate, burst)

    def reconfigure(self, rate: float, burst: int) -> None:
        """A new rate (a reload): tokens already spent stay spent; 0 lifts the ceiling."""
        if rate <= 0:
            self._bucket = None
            return
        size = effective_burst(rate, burst)
        now = self.clock.seconds()
        bucket = self._bucket
        if bucket is None:
            self._bucket = TokenBucket(rate, size, now)
            return
        bucket.take(now, 0.0)
        bucket.rate = rate
        bucket.burst = size
        bucket.tokens = min(bucket.tokens, size)

    def admit(self) -> bool:
        """True when this close may have its own line (spends a token)."""
        bucket = self._bucket
        return bucket is None or bucket.take(self.clock.seconds())

    def hold(self, bytes_in: int, bytes_out: int) -> None:
        """Count a close that gets no line of its own; the summary will report it."""
        if not self.held:
            self.since = self.clock.seconds()
            if self._call is None:
                self._call = self.clock.callLater(self.period, self._due)
        self.held += 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def _due(self) -> None:
        self._call = None
        self._report(self.period)

    def _report(self, seconds: float) -> None:
        held, bytes_in, bytes_out = self.held, self.bytes_in, self.bytes_out
        if not held:
            return
        self.held = self.bytes_in = self.bytes_out = 0
        self.summary(held, bytes_in, bytes_out, seconds)

    def flush(self) -> None:
        """Report what is held now (the service stops): no count is lost."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self._report(max(0.0, self.clock.seconds() - self.since))
