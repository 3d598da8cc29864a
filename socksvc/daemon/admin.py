"""
The admin HTTP listener: C{[daemon] http = [listen specs]}.

twisted.web serves, in the reactor thread, C{/metrics} (Prometheus text or
OpenMetrics, L{socksvc.daemon.metrics}), C{/} (the status page,
L{socksvc.daemon.statuspage}) and C{/status.json} (the figures it shows,
L{socksvc.daemon.figures}). Nothing here changes the daemon: only GET and
HEAD are served.

The listener goes through the policy layer like any service (allow/deny,
caps, rate, idle timeout, a close line per connection, under the name
L{ADMIN_SERVICE}): L{AdminSite} asks a L{Policy} in C{buildProtocol} and
refused peers get one HTTP error response. With C{http_auth}, every request
needs HTTP basic auth (L{socksvc.daemon.auth}). Every response carries a
strict Content-Security-Policy, C{Cache-Control: no-store} and nosniff.

L{AdminService} binds through the same L{Listener} as services (systemd
socket activation and C{ssl:} included). A reload applies the new policy and
password file; a changed C{http} list takes effect at the next restart.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server

from socksvc.config.loader import Config
from socksvc.config.schema import DaemonSettings
from socksvc.core.policy import DENIED, Policy
from socksvc.core.protocols import Refuser
from socksvc.core.service import NoState, ServiceContext, ServiceType
from socksvc.daemon import auth, figures, metrics, statuspage
from socksvc.daemon.listener import Listener
from socksvc.daemon.rates import RateMeter
from socksvc.util.addresses import format_peer, peer_facts

log = Logger(namespace="socksvc")

ADMIN_SERVICE = metrics.ADMIN_SERVICE

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
HEADERS: dict[bytes, bytes] = {
    b"Server": b"socksvc",
    b"Cache-Control": b"no-store",
    b"Content-Security-Policy": CSP.encode("ascii"),
    b"X-Content-Type-Options": b"nosniff",
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"no-referrer",
    b"Cross-Origin-Opener-Policy": b"same-origin",
    b"Cross-Origin-Resource-Policy": b"same-origin",
    b"Permissions-Policy": b"camera=(), microphone=(), geolocation=()",
}
REALM = b'Basic realm="socksvc", charset="UTF-8"'
RATE_INTERVAL = 5.0
"""Seconds between the samples the status page's rates (bytes/s, lines/s, CPU %) come from."""


class _CountingTransport:
    """The channel's transport, counting what is written (headers included) into C{bytes_out}."""

    def __init__(self, transport: Any, conn: AdminChannel) -> None:
        self._transport = transport
        self._conn = conn

    def write(self, data: bytes) -> None:
        self._conn.bytes_out += len(data)
        self._transport.write(data)

    def writeSequence(self, seq: Any) -> None:
        seq = list(seq)
        self._conn.bytes_out += sum(len(x) for x in seq)
        self._transport.writeSequence(seq)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class AdminChannel(http.HTTPChannel):
    """An HTTP connection the policy layer tracks (the fields of L{socksvc.core.policy.Connection})."""

    policy: Policy
    peer = ""
    source = "local"
    bytes_in = 0
    bytes_out = 0
    started = 0.0
    last_seen = 0.0
    touched = False
    idle_sweeps = 0
    idle_aborted = False
    close_reason = ""
    idle_exempt = False

    def makeConnection(self, transport: Any) -> None:
        from zope.interface import directlyProvides, providedBy

        counting = _CountingTransport(transport, self)
        directlyProvides(counting, providedBy(transport))
        super().makeConnection(counting)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.policy.opened(self)

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.touched = True
        super().dataReceived(data)

    def pauseProducing(self) -> None:
        """
        Our send buffer is full: stop reading and stop parsing pipelined requests.

        Twisted's channel leaves the socket reading when the pause comes
        while a request is handled (every response here is synchronous), so
        a peer that pipelines requests and never reads would be answered
        without end: responses piling up in memory, the reactor busy for
        minutes. Here nothing more is read or parsed until the peer reads.
        """
        super().pauseProducing()
        self.paused = True  # LineReceiver: leave the rest of the buffer unparsed
        if self._networkProducer is not None:
            self._networkProducer.pauseProducing()

    def resumeProducing(self) -> None:
        super().resumeProducing()
        if self.paused:
            self.paused = False
            if self._networkProducer is not None and not self._handlingRequest:
                self._networkProducer.resumeProducing()
            http.HTTPChannel.dataReceived(self, b"")  # parse what was left buffered

    def connectionLost(self, reason: Failure = Failure(Exception("connection lost"))) -> None:
        super().connectionLost(reason)
        self.policy.closed(self, reason)


class HTTPRefuser(Refuser):
    """A refused admin peer reads one HTTP response (403, or 503 for a cap or the rate), then the close."""

    def message(self) -> bytes:
        code, phrase = (b"403", b"Forbidden") if self.reason == DENIED else (b"503", b"Service Unavailable")
        body = f"socksvc: {self.reason}\r\n".encode()
        head = b"HTTP/1.1 %s %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n" % (code, phrase)
        return head + b"Content-Length: %d\r\nCache-Control: no-store\r\n\r\n" % len(body) + body


class AdminRequest(server.Request):
    """A request: the admin headers on every response, then basic auth (when configured), then the resource."""

    def render(self, resrc: Any) -> None:
        for name, value in HEADERS.items():
            self.setHeader(name, value)
        channel: Any = self.channel
        checker = channel.site.auth
        if checker is not None:
            verdict = checker.check(self.getHeader(b"authorization"), channel.source)
            if verdict != auth.OK:
                self._deny(verdict)
                return
        super().render(resrc)

    def _deny(self, verdict: str) -> None:
        if verdict == auth.LIMITED:
            self.setResponseCode(429)
            self.setHeader(b"Retry-After", b"1")
            body = b"socksvc: too many password checks, try again in a moment\n"
        else:
            self.setResponseCode(http.UNAUTHORIZED)
            self.setHeader(b"WWW-Authenticate", REALM)
            body = b"socksvc: this admin listener needs a user name and password\n"
        self.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        self.setHeader(b"Content-Length", b"%d" % len(body))
        if self.method != b"HEAD":
            self.write(body)
        self.finish()


class Static(resource.Resource):
    """One fixed body."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: bytes) -> None:
        super().__init__()
        self.body = body
        self.content_type = content_type

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", self.content_type)
        return self.body


class MetricsPage(resource.Resource):
    """/metrics: the exposition format the Accept header asks for."""

    isLeaf = True

    def __init__(self, site: AdminSite) -> None:
        super().__init__()
        self.site = site

    def render_GET(self, request: server.Request) -> bytes:
        accept = request.getHeader(b"accept")
        body, content_type = metrics.render(self.site.registry, accept.decode("latin-1") if accept else None)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        request.setHeader(b"Vary", b"Accept")
        return body


class StatusJSON(resource.Resource):
    """/status.json: the figures of the status page."""

    isLeaf = True

    def __init__(self, site: AdminSite) -> None:
        super().__init__()
        self.site = site

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(self.site.status(), separators=(",", ":")).encode("ascii")


class AdminSite(server.Site):
    """The admin listener's factory: admission through its policy, then twisted.web."""

    protocol = AdminChannel  # type: ignore[assignment]  # plain HTTP/1.1: no HTTP/2 switch
    requestFactory = AdminRequest
    displayTracebacks = False
    noisy = False

    def __init__(self, service: AdminService) -> None:
        root = resource.Resource()
        super().__init__(root, reactor=service.reactor)
        self.service = service
        self.registry = metrics.registry(service.daemon_figures)
        root.putChild(b"", Static(statuspage.HTML, b"text/html; charset=utf-8"))
        root.putChild(b"status.css", Static(statuspage.CSS, b"text/css; charset=utf-8"))
        root.putChild(b"status.js", Static(statuspage.JS, b"text/javascript; charset=utf-8"))
        root.putChild(b"favicon.svg", Static(statuspage.FAVICON, b"image/svg+xml"))
        root.putChild(b"metrics", MetricsPage(self))
        root.putChild(b"status.json", StatusJSON(self))

    @property
    def auth(self) -> auth.BasicAuth | None:
        return self.service.auth

    def status(self) -> figures.Figures:
        out = self.service.daemon_figures()
        out["rates"] = self.service.rates.rates()
        return out

    def buildProtocol(self, addr: IAddress | None) -> Any:
        policy = self.service.context.policy
        ip, source = peer_facts(addr)
        reason = policy.check_ip(ip, source)
        if reason is not None:
            policy.refuse(addr, reason)
            return HTTPRefuser(reason)
        channel = super().buildProtocol(addr)
        channel.policy = policy
        channel.peer = format_peer(addr)
        channel.source = source
        return channel

    def log(self, request: Any) -> None:
        """No combined-log line per request: the policy logs one line per connection, as for every service."""


def restart_keys(settings: DaemonSettings) -> DaemonSettings:
    """[daemon] without the admin keys, which L{AdminService.reconfigure} deals with on a reload."""
    return attrs.evolve(settings, http=(), http_auth=None)


def _no_stream(context: Any) -> Any:
    raise AssertionError("the admin listener's factory is its site")


ADMIN_TYPE: ServiceType[None, NoState] = ServiceType(
    name="admin", settings=type(None), doc="the admin HTTP listener", stream=_no_stream
)


class AdminService(MultiService):
    """
    The admin listeners: one L{Listener} per C{[daemon] http} spec, one
    policy, one site. Quacks like a service instance to L{Listener}
    (C{context}, C{stype}, C{factory()}, C{adopt}).
    """

    adopt = None
    """The supervisor itself serves the admin listener: it never adopts sockets from anyone."""

    def __init__(self, daemon: Any, config: Config) -> None:
        super().__init__()
        self.setName(ADMIN_SERVICE)
        self.daemon = daemon
        self.reactor = daemon.reactor
        self.stype = ADMIN_TYPE
        policy = Policy(ADMIN_SERVICE, config.admin_policy, daemon.reactor)
        self.context: ServiceContext[None, NoState] = ServiceContext(
            name=ADMIN_SERVICE, type="admin", settings=None, policy=policy, reactor=daemon.reactor, state=NoState()
        )
        password_file = config.daemon.http_auth
        self.auth = auth.BasicAuth(password_file, daemon.reactor) if password_file is not None else None
        self.specs = config.daemon.http
        self.rates = RateMeter()
        self._sampler: LoopingCall | None = None
        self._site: AdminSite | None = None
        for index, spec in enumerate(config.daemon.http):
            Listener(self, spec, index).setServiceParent(self)

    def factory(self) -> AdminSite:
        if self._site is None:
            self._site = AdminSite(self)
        return self._site

    def listeners(self) -> list[Listener]:
        return [s for s in self if isinstance(s, Listener)]

    def daemon_figures(self) -> figures.Figures:
        return figures.daemon_figures(self.daemon)

    def figures(self) -> figures.Figures:
        """The admin listener's own connection figures (a service-like entry)."""
        out: figures.Figures = {
            "name": ADMIN_SERVICE,
            "type": "admin",
            "listeners": figures.listeners_of(self.listeners()),
        }
        out.update(figures.connection_figures(self.context.policy))
        return out

    def sample(self) -> None:
        """Take a sample for the rates (every L{RATE_INTERVAL} seconds)."""
        try:
            self.rates.sample(self.daemon_figures())
        except Exception:
            log.failure("{service}: sampling the figures failed", service=ADMIN_SERVICE)

    def reconfigure(self, config: Config) -> None:
        """A reload: the new policy and password file apply now; a changed http list at the next restart."""
        self.context.policy.reconfigure(config.admin_policy)
        password_file = config.daemon.http_auth
        if password_file is None:
            self.auth = None
        elif self.auth is None:
            self.auth = auth.BasicAuth(password_file, self.reactor)
        else:
            self.auth.reconfigure(password_file)
        if config.daemon.http != self.specs:
            log.warn("socksvc: [daemon] http changes take effect at the next restart", event="reload")

    def startService(self) -> None:
        super().startService()
        self.context.policy.start()
        self.sample()
        self._sampler = LoopingCall(self.sample)
        self._sampler.clock = self.reactor
        self._sampler.start(RATE_INTERVAL, now=False)

    def stopService(self) -> Deferred[Any]:
        if self._sampler is not None and self._sampler.running:
            self._sampler.stop()
        self._sampler = None
        self.context.policy.stop()
        d: Deferred[Any] = super().stopService()  # releases the listeners
        for conn in list(self.context.policy.connections):
            if conn.transport is not None:
                conn.transport.loseConnection()
        return d
