"""
Counts every worker process shares, so that limits hold for the daemon as a whole.

Admission happens in a worker's C{buildProtocol}, many thousand times a
second: asking the supervisor each time would cost a round trip per
connection. Instead the supervisor creates one table per service in shared
memory (a memfd, L{Table.create}) and hands its descriptor to every worker,
which maps it (L{Table.attach}). Each worker owns one column (its slot) and
only ever writes that; admission reads the sum over the columns in use:

- C{conns}: connections open now, per worker -> C{max_connections} on the sum;
- C{sources}: connections open now per source (an IPv4 address or an IPv6
  /64, hashed into L{SOURCE_BUCKETS} buckets), per worker ->
  C{max_per_source} on the sum. Two sources that share a bucket share a
  cap: a collision only makes the cap stricter, never looser. The hash is
  Python's own string hash, which the supervisor seeds alike (and secretly)
  for every worker with C{PYTHONHASHSEED};
- C{live}: does the worker in that slot serve the service now (the accept
  balancer reads it, L{socksvc.daemon.balance});
- C{subnets}: the same for C{max_per_subnet}, keyed by the policy's subnet
  key (IPv4 /24, IPv6 /48 by default) salted with a seeded string, as
  secret as the sources' buckets;
- the C{max_rate} token bucket, which every worker spends from: read,
  refilled and written under an fcntl record lock (about 5 to 10 us a
  connection here, paid only when C{max_rate} is set), so the service gets
  its rate once, not once per worker. (UDP's per-source rate is split
  between the workers instead, L{socksvc.util.ratelimit.SourceLimiter}: a
  lock per datagram would cost as much as the datagram.)

No locks guard the counts: two workers admitting at the same instant may
each see the other's old count, so a cap can be passed by at most one
connection per worker (docs/workers.md). The supervisor writes only the
header (the columns in use) and clears a dead worker's column before its
replacement takes the slot.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import weakref
from collections.abc import Hashable

MAX_SLOTS = 256
"""Columns in a table: the most workers there can be ([daemon] workers is at most 256)."""
SOURCE_BUCKETS = 4096
"""Buckets of the per-source connection counts (a power of two)."""
SUBNET_BUCKETS = 4096
"""Buckets of the per-subnet connection counts (max_per_subnet; a power of two)."""
_SALT = "socksvc subnet"
"""Hashed with a subnet key (a tuple of ints, whose hash no seed changes), so its bucket is the seed's secret too."""
LOCK_TRIES = 200
"""Attempts at a bucket's lock (yielding the CPU between them) before the rate check fails closed."""

_I32 = 4
_F64 = 8
_HEADER = 16  # int32 words: [0] = columns in use
_LIVE = _HEADER
_CONNS = _LIVE + MAX_SLOTS
_SOURCES = _CONNS + MAX_SLOTS
_SUBNETS = _SOURCES + SOURCE_BUCKETS * MAX_SLOTS
_INTS = _SUBNETS + SUBNET_BUCKETS * MAX_SLOTS
_RATE = (_INTS * _I32 + _F64 - 1) // _F64  # float64 words: tokens, stamp, rate, burst
SIZE = (_RATE + 4) * _F64
"""Bytes of one table (memory is only used for the pages workers touch)."""
_LOCK_RATE = 0  # the byte the max_rate bucket's lock covers


class Table:
    """One service's shared counts: a memfd mapped into this process."""

    def __init__(self, fd: int, owner: bool = False) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, SIZE)
        self.ints = memoryview(self._map).cast("i")
        self.floats = memoryview(self._map).cast("d")
        # The descriptor is kept for the rate lock (and, in the supervisor, to hand out);
        # closed with the table, or when it is dropped (a service a reload removed).
        self._closer = weakref.finalize(self, os.close, fd) if owner else None

    @classmethod
    def create(cls, name: str) -> Table:
        """A new zeroed table (the supervisor's); the descriptor is close-on-exec (handed out by AMP)."""
        fd = os.memfd_create(f"socksvc-{name}"[:200], os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, SIZE)
            return cls(fd, owner=True)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def attach(cls, fd: int) -> Table:
        """Map a table handed over by the supervisor (this process owns C{fd} from now on)."""
        size = os.fstat(fd).st_size
        if size != SIZE:
            os.close(fd)
            raise ValueError(f"shared table is {size} bytes, not {SIZE}")
        return cls(fd, owner=True)

    def close(self) -> None:
        """Unmap now (nothing may use the table after this)."""
        if self.fd < 0:
            return
        self.ints.release()
        self.floats.release()
        self._map.close()
        if self._closer is not None:
            self._closer()
        self.fd = -1

    # -- the supervisor's writes ----------------------------------------------------

    @property
    def columns(self) -> int:
        """Columns summed by admission: the highest slot in use, plus one."""
        return self.ints[0]

    @columns.setter
    def columns(self, n: int) -> None:
        self.ints[0] = max(0, min(n, MAX_SLOTS))

    def clear(self, slot: int) -> None:
        """Forget a worker that is gone: its connections went with it."""
        ints = self.ints
        ints[_LIVE + slot] = 0
        ints[_CONNS + slot] = 0
        for row in range(_SOURCES + slot, _INTS, MAX_SLOTS):  # sources and subnets
            ints[row] = 0

    # -- reading -------------------------------------------------------------------

    def connections(self) -> int:
        n = self.ints[0]
        return sum(self.ints[_CONNS : _CONNS + n])

    def per_worker(self) -> list[int]:
        """Open connections by slot (the columns in use)."""
        n = self.ints[0]
        return list(self.ints[_CONNS : _CONNS + n])

    def live(self, slot: int) -> bool:
        return bool(self.ints[_LIVE + slot])


class WorkerCounts:
    """
    One worker's view of a service's table: it writes its own slot and
    reads the sums. Provides L{socksvc.core.policy.SharedCounts}.
    """

    def __init__(self, table: Table, slot: int) -> None:
        if not 0 <= slot < MAX_SLOTS:
            raise ValueError(f"slot {slot} out of range")
        self.table = table
        self.slot = slot
        self.serving = 1
        """Worker processes serving the service (the worker daemon keeps it up to date)."""
        self._ints = table.ints

    # admission

    def connections(self) -> int:
        ints = self._ints
        return sum(ints[_CONNS : _CONNS + ints[0]])

    def from_source(self, source: str) -> int:
        ints = self._ints
        row = _SOURCES + (hash(source) & (SOURCE_BUCKETS - 1)) * MAX_SLOTS
        return sum(ints[row : row + ints[0]])

    def from_subnet(self, subnet: Hashable) -> int:
        ints = self._ints
        row = _SUBNETS + (hash((_SALT, subnet)) & (SUBNET_BUCKETS - 1)) * MAX_SLOTS
        return sum(ints[row : row + ints[0]])

    def opened(self, source: str, subnet: Hashable = None) -> None:
        ints = self._ints
        slot = self.slot
        ints[_CONNS + slot] += 1
        ints[_SOURCES + (hash(source) & (SOURCE_BUCKETS - 1)) * MAX_SLOTS + slot] += 1
        if subnet is not None:
            ints[_SUBNETS + (hash((_SALT, subnet)) & (SUBNET_BUCKETS - 1)) * MAX_SLOTS + slot] += 1

    def closed(self, source: str, subnet: Hashable = None) -> None:
        ints = self._ints
        slot = self.slot
        ints[_CONNS + slot] -= 1
        ints[_SOURCES + (hash(source) & (SOURCE_BUCKETS - 1)) * MAX_SLOTS + slot] -= 1
        if subnet is not None:
            ints[_SUBNETS + (hash((_SALT, subnet)) & (SUBNET_BUCKETS - 1)) * MAX_SLOTS + slot] -= 1

    # the accept balancer

    def set_live(self, live: bool) -> None:
        self._ints[_LIVE + self.slot] = 1 if live else 0

    def mine(self) -> int:
        return self._ints[_CONNS + self.slot]

    def least_other(self) -> int | None:
        """The fewest connections any other live worker holds, or None when no other serves the service."""
        ints = self._ints
        least: int | None = None
        for slot in range(ints[0]):
            if slot != self.slot and ints[_LIVE + slot]:
                n = ints[_CONNS + slot]
                if least is None or n < least:
                    least = n
        return least

    # rates

    def rate_bucket(self, rate: float, burst: float, now: float) -> SharedBucket:
        bucket = SharedBucket(self.table, _RATE)
        bucket.configure(rate, burst, now)
        return bucket

    def workers(self) -> int:
        return self.serving


_FLOCK = struct.Struct("hhqqi")  # struct flock: type, whence, start, len, pid
_LOCK = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, _LOCK_RATE, 1, 0)
_UNLOCK = _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, _LOCK_RATE, 1, 0)


class _Locked:
    """
    An fcntl record lock on the table's rate byte: per process, so workers
    exclude each other, and released by the kernel if the holder dies. A
    holder that cannot be waited for (LOCK_TRIES, yielding the CPU between
    tries) makes the check fail closed; the supervisor's heartbeat replaces
    a worker that hangs.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> bool:
        for _ in range(LOCK_TRIES):
            try:
                fcntl.fcntl(self.fd, fcntl.F_SETLK, _LOCK)
                return True
            except OSError:
                os.sched_yield()  # the holder may be waiting for this CPU
        return False

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETLK, _UNLOCK)
        except OSError:
            pass


def _refill(tokens: float, stamp: float, now: float, rate: float, burst: float) -> float:
    elapsed = now - stamp
    if elapsed > 0:
        return min(burst, tokens + elapsed * rate)
    return tokens


class SharedBucket:
    """A service's max_rate token bucket, spent from by every worker (L{socksvc.core.policy.RateBucket})."""

    def __init__(self, table: Table, word: int) -> None:
        self.table = table
        self.word = word

    def configure(self, rate: float, burst: float, now: float) -> None:
        """New rate and burst (every worker sets the same ones: doing it twice changes nothing)."""
        f = self.table.floats
        w = self.word
        with _Locked(self.table.fd):
            # A bucket never set up has burst 0 (the table starts zeroed): it starts full.
            tokens = _refill(f[w], f[w + 1], now, f[w + 2], f[w + 3]) if f[w + 3] else burst
            f[w] = min(tokens, burst)
            f[w + 1] = now
            f[w + 2] = rate
            f[w + 3] = burst

    def take(self, now: float, amount: float = 1.0) -> bool:
        f = self.table.floats
        w = self.word
        with _Locked(self.table.fd) as locked:
            if not locked:
                return False
            tokens = _refill(f[w], f[w + 1], now, f[w + 2], f[w + 3])
            if now > f[w + 1]:
                f[w + 1] = now
            if tokens >= amount:
                f[w] = tokens - amount
                return True
            f[w] = tokens
            return False
