"""
A line service connection's input: split, charged to the connection, paced.

Every unit of work a client causes is charged to that client, as IRC servers
charge a penalty per command: each byte received (telnet commands and the
bytes of an unfinished line too) from its byte budget, each line (blank ones
too) from its line budget. The budgets are token buckets (C{input_byte_rate}
and C{input_line_rate} a second, C{input_burst} seconds' worth saved up),
read from the policy settings on every use, so a reload applies at once.

 - Work done outside lines (telnet commands) is charged with
   L{LineInput.charge}, a line per command.
 - Over budget, the connection is slowed: its transport stops reading
   (C{pauseProducing}) and a timer resumes it when the budget has refilled.
   Its unread input waits in the kernel, then in its own TCP window: nothing
   grows here.
 - Still over budget C{throttle_kick} seconds after it first went over (an
   episode ends after C{input_burst} seconds within budget), it is
   disconnected with a reason (L{LineOwner.input_refused}).
 - Never more than one slice per reactor turn: a read takes at most
   L{READ_SIZE} bytes from the socket (Twisted's default is 64 KiB, and
   whatever a read brings is filtered and split before anything else), and
   at most L{SLICE_LINES} lines and about L{SLICE_BYTES} bytes of lines are
   handled per turn; the rest waits in the splitter, reading paused, and the
   next slice comes on the next turn (C{callLater(0)}), after every other
   ready connection had its turn.
 - A started line must be finished within C{line_timeout} (nginx's
   client_header_timeout): a timer runs while an unfinished line waits for
   its end, checked again on every read, so a trickling peer and one gone
   quiet mid-line are both closed. Connections between lines (a chat member
   listening) have no timer. The clock stops while reading is paused (then
   the unfinished line is not the client's fault).

The owner (a service's protocol) hands its reads to L{LineInput.received}
and gets complete lines back, a slice at a time, in
L{LineOwner.lines_received}. A protocol whose output backpressure should
stop its reading registers the L{LineInput} as its transport's producer (it
is an C{IPushProducer}): reading then resumes only when neither the output
nor the budget holds it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from zope.interface import implementer

from socksvc.config.schema import PolicySettings
from socksvc.util.lines import LineSplitter, TooLong

READ_SIZE = 16384
"""Bytes one read takes from a line service's socket, at most (TCP; other transports read their own way)."""

SLICE_LINES = 256
"""Lines handled for one connection in one reactor turn, at most."""

SLICE_BYTES = 4096
"""
Bytes of lines handled for one connection in one reactor turn (the line that crosses it ends the
slice): a reverse line of combining marks costs about 40 ns a byte, so 32 connections' slices in
one turn stay near 5 ms.
"""

MIN_WAIT = 0.001
"""The shortest hold for budget: the refill must show in the clock's floats (reactor time is about 2e9)."""

OUTPUT = 1
"""Held: the transport's write buffer is full (only when registered as its producer)."""
BUDGET = 2
"""Held: over budget, or lines wait for the next turn."""


class LineOwner(Protocol):
    """What L{LineInput} needs of the protocol it reads for (L{socksvc.core.protocols.Tracked} and a few more)."""

    transport: Any
    policy: Any
    """The service's L{socksvc.core.policy.Policy}: its settings are read on every wake."""

    def lines_received(self, lines: list[bytes | TooLong]) -> None:
        """A slice of complete lines (L{TooLong} for an over-long one), in order."""

    def input_refused(self, reason: str) -> None:
        """Say C{reason} (a few words) if the service has a way to, and close; no more input is wanted."""


@implementer(IPushProducer)
class LineInput:
    """
    One connection's input: see the module doc. A service whose lines cost
    little each and whose slice is one write to many (chat) may take more
    per turn: a subclass sets L{read_size}, L{slice_lines}, L{slice_bytes}.
    """

    read_size: ClassVar[int] = READ_SIZE
    slice_lines: ClassVar[int] = SLICE_LINES
    slice_bytes: ClassVar[int] = SLICE_BYTES

    __slots__ = (
        "bytes",
        "clock",
        "done",
        "held",
        "last",
        "lines",
        "owner",
        "since",
        "splitter",
        "stamp",
        "started",
        "timer",
        "wake",
    )

    def __init__(self, owner: LineOwner, splitter: LineSplitter, clock: Any, settings: PolicySettings) -> None:
        self.owner = owner
        size = getattr(owner.transport, "bufferSize", None)
        if size is not None and size != self.read_size:
            # Set only when it differs: an instance attribute more costs a transport memory.
            owner.transport.bufferSize = self.read_size
        self.splitter = splitter
        self.clock = clock
        self.stamp = clock.seconds()
        self.lines = settings.input_line_rate * settings.input_burst
        self.bytes = settings.input_byte_rate * settings.input_burst
        self.held = 0
        self.wake: IDelayedCall | None = None
        self.since: float | None = None  # when this throttle episode began
        self.last = 0.0  # when the last throttle ends
        self.done = False
        self.started: float | None = None  # when the unfinished line began (None: between lines, or held)
        self.timer: IDelayedCall | None = None  # line_timeout for that line

    # -- input -----------------------------------------------------------------

    def received(self, data: bytes, settings: PolicySettings) -> None:
        """Bytes from the transport (telnet commands already taken out, but counted by the caller)."""
        self.charge(len(data), settings)
        self.splitter.append(data)
        if self.done:
            return
        if self.wake is None and not self.held & OUTPUT:
            self.run(settings)
        else:
            self._hold(BUDGET, None)  # read while held (a stray resume): hold again, the wake comes

    def charge(self, size: int, settings: PolicySettings, lines: int = 0) -> None:
        """
        Spend C{size} bytes of the byte budget and C{lines} of the line budget
        (work done outside lines: telnet commands); either may go into debt,
        the input is here already.
        """
        self._refill(self.clock.seconds(), settings)
        if settings.input_byte_rate > 0:
            self.bytes -= size
        if lines and settings.input_line_rate > 0:
            self.lines -= lines

    def run(self, settings: PolicySettings) -> None:
        """Handle one slice if the budget allows, then hold or release reading, and keep the line clock."""
        if self.done:
            return
        now = self.clock.seconds()
        self._refill(now, settings)
        splitter = self.splitter
        line_rate, byte_rate = settings.input_line_rate, settings.input_byte_rate
        if self.held & OUTPUT:
            if splitter.ready:
                self.held |= BUDGET  # taken up again when the output drains
            return
        if splitter.ready and not (byte_rate > 0 and self.bytes < 0):
            allowed = self.slice_lines if line_rate <= 0 else min(self.slice_lines, int(self.lines))
            if allowed >= 1:
                lines = splitter.take(allowed, self.slice_bytes)
                if line_rate > 0:
                    self.lines -= len(lines)
                self.owner.lines_received(lines)
                if self.done:
                    return
                now = self.clock.seconds()
        delay = 0.0
        if byte_rate > 0 and self.bytes < 0:
            delay = -self.bytes / byte_rate
        if line_rate > 0:
            short = (1 if splitter.ready else 0) - self.lines  # a line to take, or a debt to pay
            if short > 0:
                delay = max(delay, short / line_rate)
        if delay > 0:
            delay = max(delay, MIN_WAIT)
            if self._throttled(now, delay, settings):
                return
            if settings.throttle_kick > 0 and self.since is not None:
                # Wake by the kick's deadline at the latest: a debt that outlasts it is a disconnect then.
                delay = min(delay, max(MIN_WAIT, self.since + settings.throttle_kick - now))
            self._hold(BUDGET, delay)
        elif splitter.ready:
            self._hold(BUDGET, 0.0)  # the next slice on the next turn
        else:
            self._release(BUDGET)
        if self.held or not splitter.pending:
            self._line_clock(None)
        elif self.started is None:
            self._line_clock(now)
        elif settings.line_timeout > 0 and now - self.started >= settings.line_timeout:
            self._line_expired(settings)

    def _line_clock(self, started: float | None) -> None:
        """Start (at C{started}) or stop (None) the line_timeout clock."""
        self.started = started
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if started is not None:
            timeout = self.owner.policy.settings.line_timeout
            if timeout > 0:
                self.timer = self.clock.callLater(timeout, self._line_timer)

    def _line_timer(self) -> None:
        """A line's time is up (or the timeout changed by a reload: check again)."""
        self.timer = None
        if self.done or self.started is None:
            return
        settings = self.owner.policy.settings
        timeout = settings.line_timeout
        if timeout <= 0:
            return
        left = self.started + timeout - self.clock.seconds()
        if left > 0:
            self.timer = self.clock.callLater(left, self._line_timer)
            return
        self._line_expired(settings)

    def _line_expired(self, settings: PolicySettings) -> None:
        """The started line took longer than line_timeout: the owner says so and closes."""
        self.stop()
        self.owner.input_refused(f"line not finished within {settings.line_timeout:g}s")

    def _throttled(self, now: float, delay: float, settings: PolicySettings) -> bool:
        """Over budget now, held for C{delay} s: True if that went on long enough to disconnect (done here)."""
        if self.since is None or now - self.last > settings.input_burst:
            self.since = now
        self.last = now + delay
        if settings.throttle_kick > 0 and now - self.since >= settings.throttle_kick:
            self.stop()
            self.owner.input_refused("sending too fast")
            return True
        return False

    def _refill(self, now: float, settings: PolicySettings) -> None:
        elapsed = now - self.stamp
        self.stamp = now
        if elapsed <= 0:
            return  # the clock went back: count from here
        burst = settings.input_burst
        rate = settings.input_line_rate
        if rate > 0:
            self.lines = min(rate * burst, self.lines + elapsed * rate)
        rate = settings.input_byte_rate
        if rate > 0:
            self.bytes = min(rate * burst, self.bytes + elapsed * rate)

    # -- holding the transport's reading ---------------------------------------

    def _hold(self, reason: int, delay: float | None) -> None:
        if not self.held:
            self._transport("pauseProducing")
        self.held |= reason
        if delay is not None and self.wake is None:
            self.wake = self.clock.callLater(delay, self._woken)

    def _release(self, reason: int) -> None:
        if self.held & reason:
            self.held &= ~reason
            if not self.held:
                self._transport("resumeProducing")

    def _transport(self, method: str) -> None:
        transport = self.owner.transport
        if transport is not None and not getattr(transport, "disconnecting", False):
            getattr(transport, method)()

    def _woken(self) -> None:
        self.wake = None
        if not self.done:
            self.run(self.owner.policy.settings)

    def stop(self) -> None:
        """No more input is wanted (the connection is closing): cancel the wake, handle nothing more."""
        self.done = True
        for call in (self.wake, self.timer):
            if call is not None and call.active():
                call.cancel()
        self.wake = self.timer = None
        self.started = None

    # -- IPushProducer: the transport's write buffer ---------------------------

    def pauseProducing(self) -> None:
        """The write buffer is full: stop reading (and handling) until it drains."""
        if not self.held:
            self._transport("pauseProducing")
        self.held |= OUTPUT

    def resumeProducing(self) -> None:
        """The write buffer drained: go on with what waits, or read again."""
        if not self.held & OUTPUT:
            return
        self.held &= ~OUTPUT
        if self.held & BUDGET:
            if self.wake is None and not self.done:
                self.wake = self.clock.callLater(0, self._woken)
        elif not self.held:
            self._transport("resumeProducing")

    def stopProducing(self) -> None:
        self.stop()
