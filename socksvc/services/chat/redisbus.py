"""
The chat bus on Redis Streams (L{socksvc.services.chat.bus.BusLink}).

Two connections to one Redis (or Valkey): one reads the stream with
C{XREAD BLOCK} from the last id delivered, the other runs everything else
(the scripts of L{socksvc.services.chat.redisscripts}, each one atomic
step). Both are txredisapi's protocol over our own Twisted endpoints (TCP,
TLS, or a UNIX socket), and reconnecting is ours: when either connection
fails or a reply is late, both are dropped, the node is told
(C{bus_down}), and connecting starts again with backoff; once both are up
the node is told (C{bus_up}) and reading resumes after the last id it
delivered, so nothing the stream still holds is missed.

txredisapi imports the reactor when it is imported: it is imported here
only inside functions that run once the daemon runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksvc.services.chat.bus import Beat, BusHandler, Snapshot
from socksvc.services.chat.redisproto import LinkFactory, call, flat_dict, ready, text
from socksvc.services.chat.redisscripts import SCRIPTS

log = Logger(namespace="socksvc")

CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 5.0
"""Seconds a command may wait for its reply before the link counts as lost (a cut cable sends no RST)."""
BLOCK_MS = 1000
READ_COUNT = 500
BACKOFF_MAX = 5.0
QUIET = 30.0
"""Seconds between the lines that say the bus is still unreachable."""
PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class RedisBus:
    """A L{socksvc.services.chat.bus.BusLink} on one Redis server."""

    def __init__(
        self,
        reactor: Any,
        address: Any,
        password: str | None,
        ca: Any,
        cluster: str,
        node: str,
        retention: Any,
        node_timeout: float,
    ) -> None:
        self.reactor = reactor
        self.address = address
        self.password = password
        self.ca = ca
        self.prefix = f"socksvc:{{{cluster}}}:"
        self.node = node
        self.retention = retention
        self.ttl_ms = str(int(node_timeout * 1000))
        self.up = False
        self.last_id = "0-0"
        self.handler: BusHandler | None = None
        self.cmd: Any = None
        self.reader: Any = None
        self.shas: dict[str, str] = {}
        self.reading = False
        self.stopped = False
        self.attempt = 0
        self.retry: IDelayedCall | None = None
        self.quiet_until = 0.0
        self.told_down = False

    # -- connecting --------------------------------------------------------------

    def endpoint(self, host: str, port: int) -> IStreamClientEndpoint:
        a = self.address
        if a.unix:
            return UNIXClientEndpoint(self.reactor, a.path, timeout=CONNECT_TIMEOUT)
        ep: IStreamClientEndpoint = HostnameEndpoint(self.reactor, host, port, timeout=CONNECT_TIMEOUT)
        if a.tls:
            from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust, trustRootFromCertificates

            trust: Any = platformTrust()
            if self.ca:
                blocks = PEM_BLOCK.findall(self.ca)
                trust = trustRootFromCertificates([Certificate.loadPEM(b) for b in blocks])
            ep = wrapClientTLS(optionsForClientTLS(a.host, trustRoot=trust), ep)
        return ep

    def start(self, handler: BusHandler) -> None:
        self.handler = handler
        self.connect()

    def connect(self) -> None:
        self.retry = None
        if self.stopped:
            return
        if not self.address.sentinels:
            self.connect_to(self.address.host, self.address.port)
            return
        d = Deferred.fromCoroutine(self.find_primary())
        d.addCallbacks(lambda where: self.connect_to(*where), lambda f: self.down(f.getErrorMessage()))

    async def find_primary(self) -> tuple[str, int]:
        """Ask the Sentinels, in turn, where the primary of the service is now."""
        a = self.address
        why = "no Sentinel answered"
        for host, port in a.sentinels:
            p: Any = None
            try:
                p = await self.endpoint(host, port).connect(LinkFactory(None, None, 0, REPLY_TIMEOUT))
                await p.whenConnected()
                reply = await call(p, "SENTINEL", "get-master-addr-by-name", a.service)
                if isinstance(reply, list) and len(reply) == 2:
                    return text(reply[0]), int(text(reply[1]))
                why = f"Sentinel {host}:{port} does not know {a.service!r}"
            except Exception as e:  # a Sentinel down or confused: ask the next
                why = f"Sentinel {host}:{port}: {e}"
            finally:
                if p is not None and p.transport is not None:
                    p.transport.loseConnection()
        raise ConnectionError(why)

    def connect_to(self, host: str, port: int) -> None:
        if self.stopped:
            return
        a = self.address
        factories = [
            LinkFactory(self.password, a.username, a.db, REPLY_TIMEOUT),
            LinkFactory(self.password, a.username, a.db, None),
        ]
        ds: list[Deferred[Any]] = [self.endpoint(host, port).connect(f) for f in factories]
        cmd_d, reader_d = (d.addCallback(ready) for d in ds)
        state: dict[str, Any] = {}

        def got(p: Any, which: str) -> None:
            if "failed" in state or self.stopped:  # the other one failed (or went) first: this one goes too
                p.transport.abortConnection()
                return
            state[which] = p
            p.whenDisconnected().addCallback(lambda _: gone(p))
            if len(state) == 2:
                self.connected(state["cmd"], state["reader"])

        def gone(p: Any) -> None:
            if p is self.cmd or p is self.reader:
                self.lost(p, p.factory.error or "connection lost")
            elif "failed" not in state and len(state) < 2:  # lost before the other one was up
                failed(Failure(ConnectionError("connection lost while connecting")), "")

        def failed(f: Failure, which: str) -> None:
            if "failed" in state:
                return
            state["failed"] = True
            for p in state.values():
                if p is not True and getattr(p, "transport", None) is not None:
                    p.transport.abortConnection()
            why = factories[0].error or factories[1].error or f.getErrorMessage()
            self.down(why)

        cmd_d.addCallbacks(got, failed, callbackArgs=("cmd",), errbackArgs=("cmd",))
        reader_d.addCallbacks(got, failed, callbackArgs=("reader",), errbackArgs=("reader",))

    def connected(self, cmd: Any, reader: Any) -> None:
        if self.stopped:
            cmd.transport.loseConnection()
            reader.transport.loseConnection()
            return
        self.cmd, self.reader = cmd, reader
        self.shas = {}
        loads = [call(cmd, "SCRIPT", "LOAD", body) for body in SCRIPTS.values()]
        if self.address.sentinels:  # what a Sentinel named may have been demoted since: it must be the primary
            loads.append(call(cmd, "ROLE").addCallback(self._primary))
        from twisted.internet.defer import gatherResults

        d = gatherResults(loads, consumeErrors=True)

        def loaded(shas: list[object]) -> None:
            self.shas = dict(zip(SCRIPTS, (text(s) for s in shas[: len(SCRIPTS)]), strict=True))
            self.up = True
            self.attempt = 0
            self.told_down = False
            assert self.handler is not None
            self.handler.bus_up()

        def failed(f: Failure) -> None:
            first = getattr(f.value, "subFailure", None)  # gatherResults' FirstError: say the error, not its repr
            self.lost(cmd, (first if isinstance(first, Failure) else f).getErrorMessage())

        d.addCallbacks(loaded, failed)

    @staticmethod
    def _primary(role: Any) -> None:
        if not (isinstance(role, list) and role and text(role[0]) == "master"):
            raise ConnectionError("the server the Sentinels named is not the primary (a failover under way?)")

    def lost(self, p: Any, why: str) -> None:
        if p is not self.cmd and p is not self.reader:
            return
        for q in (self.cmd, self.reader):
            if q is not None and q.transport is not None and q is not p:
                q.transport.abortConnection()
        self.cmd = self.reader = None
        self.reading = False
        self.down(why)

    def down(self, why: str) -> None:
        was_up, self.up = self.up, False
        if self.stopped:
            return
        if (was_up or not self.told_down) and self.handler is not None:
            self.told_down = True
            self.quiet_until = self.reactor.seconds() + QUIET
            self.handler.bus_down(why)
        elif self.reactor.seconds() >= self.quiet_until:  # still down: say so now and then, with why
            self.quiet_until = self.reactor.seconds() + QUIET
            log.info(
                "{service}: chat bus still unreachable after {n} attempts: {why}",
                n=self.attempt,
                why=why,
                service="chat",
            )
        if self.retry is None:
            self.attempt += 1
            delay = min(BACKOFF_MAX, 0.1 * 2 ** min(self.attempt, 10))
            self.retry = self.reactor.callLater(delay, self.connect)

    def stop(self) -> Deferred[None]:
        self.stopped = True
        self.up = False
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        self.retry = None
        for p in (self.cmd, self.reader):
            if p is not None and p.transport is not None:
                p.transport.loseConnection()
        self.cmd = self.reader = None
        return succeed(None)

    # -- reading -----------------------------------------------------------------

    def read(self) -> None:
        if self.reading or not self.up or self.reader is None:
            return
        self.reading = True
        self._read(self.reader)

    def _read(self, reader: Any) -> None:
        if reader is not self.reader or not self.reading:
            return
        key = self.prefix + "log"
        d = call(reader, "XREAD", "COUNT", str(READ_COUNT), "BLOCK", str(BLOCK_MS), "STREAMS", key, self.last_id)
        d.addCallbacks(self._got, self._read_failed, callbackArgs=(reader,), errbackArgs=(reader,))

    def _got(self, reply: Any, reader: Any) -> None:
        if reader is not self.reader:
            return
        if isinstance(reply, list) and reply:
            stream = reply[0]
            raw = stream[1] if isinstance(stream, list) and len(stream) == 2 else []
            entries: list[tuple[str, Sequence[object]]] = []
            for item in raw if isinstance(raw, list) else []:
                if isinstance(item, list) and len(item) == 2:
                    entries.append((text(item[0]), item[1] if isinstance(item[1], list) else []))
            if entries:
                self.last_id = entries[-1][0]
                assert self.handler is not None
                self.handler.bus_entries(entries)
        self.reactor.callLater(0, self._read, reader)

    def _read_failed(self, failure: Failure, reader: Any) -> None:
        if reader is self.reader:
            self.lost(reader, failure.getErrorMessage())

    # -- commands ----------------------------------------------------------------

    def script(self, name: str, *args: str) -> Deferred[Any]:
        cmd = self.cmd
        if cmd is None or not self.up:
            return fail(ConnectionError("the chat bus is not connected"))
        d = call(cmd, "EVALSHA", self.shas[name], "0", self.prefix, *args)

        def failed(f: Failure) -> Any:
            if "NOSCRIPT" in f.getErrorMessage() and self.cmd is cmd:  # Redis restarted under us
                return call(cmd, "EVAL", SCRIPTS[name], "0", self.prefix, *args)
            if "READONLY" in f.getErrorMessage():  # demoted to a replica (a failover): find the primary again
                self.lost(cmd, "the Redis server became a replica")
                return Failure(ConnectionError(f.getErrorMessage()))
            if type(f.value).__name__ in ("ConnectionError", "TimeoutError"):
                return Failure(ConnectionError(f.getErrorMessage()))
            return f

        d.addErrback(failed)
        return d

    def publish(self, entries: list[tuple[list[str], str, str, str]]) -> Deferred[list[str]]:
        r = self.retention
        maxlen = str(r.lines) if r.lines else "0"
        age = str(int(r.seconds * 1000)) if not r.lines else "0"
        args = [self.node, maxlen, age]
        for fields, hash_op, hash_key, hash_value in entries:
            args += [hash_op, hash_key, hash_value, str(len(fields)), *fields]
        d: Deferred[list[str]] = self.script("publish", *args).addCallback(lambda ids: [text(i) for i in ids])
        return d

    def claim(self, look: str, value: str) -> Deferred[str | None]:
        d = self.script("claim", look, value, self.ttl_ms)
        return d.addCallback(lambda r: None if r is None else text(r))

    def release(self, look: str, value: str) -> Deferred[None]:
        return self.script("release", look, value).addCallbacks(lambda _: None, lambda _: None)

    def beat(self, leases: dict[str, str], nodes: Sequence[str]) -> Deferred[Beat]:
        flat = [x for pair in leases.items() for x in pair]
        d = self.script("beat", self.node, self.ttl_ms, str(len(leases)), *flat, *nodes)

        def parse(r: Any) -> Beat:
            clashes = flat_dict(r[0])
            dead = [text(n) for n in r[1]] if isinstance(r[1], list) else []
            retaken = [text(x) for x in r[4]] if len(r) > 4 and isinstance(r[4], list) else []
            live = int(text(r[5])) if len(r) > 5 else 1
            return Beat(clashes, dead, int(text(r[2]) or 0), text(r[3]) == "1", retaken, live)

        return d.addCallback(parse)

    def snapshot(self) -> Deferred[Snapshot]:
        def parse(r: Any) -> Snapshot:
            nodes = r[2] if isinstance(r[2], list) else []
            members = {text(nodes[i]): flat_dict(nodes[i + 1]) for i in range(0, len(nodes) - 1, 2)}
            return Snapshot(text(r[0]), int(text(r[1]) or 0), members, flat_dict(r[3]))

        return self.script("snapshot").addCallback(parse)

    def tail(self, count: int) -> Deferred[list[tuple[str, Sequence[object]]]]:
        cmd = self.cmd
        if cmd is None:
            return fail(ConnectionError("the chat bus is not connected"))
        d = call(cmd, "XREVRANGE", self.prefix + "log", "+", "-", "COUNT", str(max(1, count)))

        def parse(r: Any) -> list[tuple[str, Sequence[object]]]:
            out: list[tuple[str, Sequence[object]]] = [
                (text(i[0]), i[1]) for i in r if isinstance(i, list) and len(i) == 2 and isinstance(i[1], list)
            ]
            out.reverse()
            return out

        parsed: Deferred[list[tuple[str, Sequence[object]]]] = d.addCallback(parse)
        return parsed

    def forget(self, node: str) -> Deferred[None]:
        return self.script("forget", node, "").addCallbacks(lambda _: None, lambda _: None)

    def leave(self) -> Deferred[None]:
        return self.script("forget", self.node, "leave").addCallbacks(lambda _: None, lambda _: None)
