"""
The chat service type: its settings and how it is built, reloaded and stopped.

See docs/chat.md for the protocol. State (members, rooms, history) lives in
the service context (L{socksvc.services.chat.protocol.chat_state}), so a reload keeps
everyone connected and applies the new settings to the live rooms.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from twisted.internet.protocol import ServerFactory

from socksvc.config.settings import MAX_COUNT, MAX_TIMEOUT, as_bool, as_float, as_int, as_list, as_str, setting
from socksvc.core.protocols import ServiceFactory
from socksvc.core.service import ExtraStream, ServiceContext, ServiceType
from socksvc.services.chat import irc, web
from socksvc.services.chat.busconfig import (
    BusAddress,
    BusPassword,
    CaFile,
    Retention,
    parse_bus,
    parse_ca_file,
    parse_cluster,
    parse_password_file,
    parse_retention,
)
from socksvc.services.chat.joining import join_cluster
from socksvc.services.chat.names import look_key
from socksvc.services.chat.protocol import ChatProtocol
from socksvc.services.chat.sanitize import name_key, room_check
from socksvc.services.chat.state import ChatState

DEFAULT_RESERVED = (
    "server",
    "socksvc",
    "admin",
    "administrator",
    "root",
    "system",
    "operator",
    "sysop",
    "nickserv",
    "chanserv",
    "everyone",
    "all",
)


def parse_rooms(value: Any) -> tuple[str, ...]:
    """
    The configured rooms: valid, distinct names that do not look alike (a
    leading # is dropped), each as it is kept (its PRECIS enforcement).
    """
    names: tuple[str, ...] = as_list(as_str(nonempty=True), nonempty=True)(value)
    out: list[str] = []
    looks: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name in names:
        name = name.removeprefix("#")
        form, problem = room_check(name)
        if problem is not None:
            raise ValueError(f"room {name!r}: {problem}")
        key, look = name_key(form), look_key(form)
        if key in seen:
            raise ValueError(f"rooms {seen[key]!r} and {name!r} are the same name")
        if look in looks:
            raise ValueError(f"rooms {looks[look]!r} and {name!r} look alike")
        seen[key] = looks[look] = name
        out.append(form)
    return tuple(out)


ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def parse_origins(value: Any) -> tuple[str, ...]:
    """Web origins: C{http://} or C{https://}, a host name or address, maybe a port; no path (at most 100)."""
    origins: tuple[str, ...] = as_list(as_str(nonempty=True, max_len=300))(value)
    if len(origins) > 100:
        raise ValueError(f"{len(origins)} origins; at most 100")
    for origin in origins:
        if not ORIGIN.fullmatch(origin.rstrip("/")):
            raise ValueError(f"origin {origin!r}: give scheme and host, as https://chat.example.org[:PORT]")
    return tuple(o.rstrip("/").lower() for o in origins)


@attrs.frozen
class ChatSettings:
    """Keys of a chat service."""

    motd: str = setting("", as_str(max_len=4096), "message of the day: shown after the welcome, one notice a line")
    nick_max: int = setting(24, as_int(minimum=1, maximum=64), "longest nickname in characters")
    rooms: tuple[str, ...] = setting(("lobby",), parse_rooms, "rooms that always exist; members start in the first")
    allow_create: bool = setting(True, as_bool, "/join may create new rooms (they vanish when empty)")
    max_rooms: int = setting(256, as_int(maximum=100_000), "rooms at most, configured ones included; 0 = no limit")
    history: int = setting(20, as_int(maximum=1000), "lines of a room replayed to whoever joins it; 0 = none")
    announce_max: int = setting(
        100,
        as_int(maximum=MAX_COUNT),
        "rooms with more members stop announcing joins, parts, quits and renames; 0 = always announce",
    )
    timestamps: bool = setting(False, as_bool, "start every live line with [HH:MM] (server local time)")
    flood_burst: int = setting(
        10, as_int(minimum=1, maximum=10_000), "lines a client may send at once before flood control"
    )
    flood_rate: float = setting(
        2.0, as_float(maximum=10_000), "lines a second a client may send on average; 0 = no flood control"
    )
    flood_kick: float = setting(
        30.0, as_float(maximum=MAX_TIMEOUT), "seconds of continuous flooding before a disconnect; 0 = never"
    )
    max_line: int = setting(1024, as_int(minimum=16, maximum=1 << 20), "longest input line in bytes")
    send_queue_max: int = setting(
        256 * 1024,
        as_int(minimum=1024, maximum=64 << 20),
        "bytes of unsent output one client may hold before it is stalled",
    )
    stall_timeout: float = setting(
        30.0,
        as_float(minimum=0.1, maximum=MAX_TIMEOUT),
        "seconds a stalled (not reading) client has to catch up before a disconnect",
    )
    reserved_nicks: tuple[str, ...] = setting(
        DEFAULT_RESERVED,
        as_list(as_str(nonempty=True)),
        "nicknames nobody may take, nor any look-alike (case-insensitive; see docs/chat.md)",
    )
    ping_interval: float = setting(
        120.0,
        as_float(maximum=MAX_TIMEOUT),
        "seconds an IRC or web client may be silent before the server pings it; 0 = never ping",
    )
    ping_timeout: float = setting(
        60.0,
        as_float(minimum=1.0, maximum=MAX_TIMEOUT),
        "seconds a pinged IRC or web client has to answer before it is disconnected",
    )
    web_origins: tuple[str, ...] = setting(
        (),
        parse_origins,
        "web pages (origins such as https://chat.example.org) that may open the chat's WebSocket "
        "besides the chat's own page; a page from anywhere else is refused",
    )
    bus: BusAddress | None = setting(
        None,
        parse_bus,
        "the cluster's Redis: redis://[USER@]HOST[:PORT][/DB] (port 6379), rediss://... (TLS), "
        "unix://[USER@]/PATH.sock[?db=N], or redis+sentinel://HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB] "
        "(the primary Sentinel names; port 26379); db 0 to 10000; no password in it (bus_password_file); "
        "empty = no bus: this chat alone, in one process. With a bus, every worker serves the chat",
    )
    bus_password_file: BusPassword | None = setting(
        None,
        parse_password_file,
        "file holding the bus's Redis password (one line, at most 4096 bytes), read at load; empty = no AUTH",
        path=True,
        requires=("bus",),
    )
    bus_ca_file: CaFile | None = setting(
        None,
        parse_ca_file,
        "PEM CA certificates a rediss:// bus's certificate must chain to; empty = the system's",
        path=True,
        requires=("bus",),
    )
    cluster: str = setting(
        "socksvc",
        parse_cluster,
        "the cluster's name, 1 to 64 of A-Z a-z 0-9 _ . -: it prefixes the keys in Redis, so clusters can share one",
        requires=("bus",),
    )
    bus_retention: Retention = setting(
        Retention(lines=10_000),
        parse_retention,
        "how much of the bus's stream Redis keeps: lines (100 to 10_000_000), "
        'or a time ("600s", "30m", "24h", "7d": 10 s to 30 days)',
        requires=("bus",),
    )
    bus_queue: int = setting(
        1000,
        as_int(maximum=100_000),
        "lines this node holds for the bus while Redis is unreachable; then they are not sent",
        requires=("bus",),
    )
    node_timeout: float = setting(
        15.0,
        as_float(minimum=3, maximum=3600),
        "seconds without a heartbeat after which a node's members are gone from the cluster",
        requires=("bus",),
    )

    def __attrs_post_init__(self) -> None:
        # The other bus_* keys without bus: the loader refuses them (requires=).
        if self.bus_ca_file is not None and (self.bus is None or not self.bus.tls):
            _fail("bus_ca_file", "for a rediss:// bus only")


def _fail(key: str, reason: str) -> None:
    """A cross-key refusal: the config loader names C{key}."""
    err = ValueError(reason)
    err.key = key  # type: ignore[attr-defined]
    raise err


def another_bus(old: ChatSettings, new: ChatSettings) -> bool:
    """
    A reload that changes which cluster this chat is a node of (its bus, its
    credentials, the cluster's name) replaces the service: members reconnect
    and register in the new cluster (docs/chat-bus.md).
    """
    return (old.bus, old.bus_password_file, old.bus_ca_file, old.cluster) != (
        new.bus,
        new.bus_password_file,
        new.bus_ca_file,
        new.cluster,
    )


def one_process_unless_bus(settings: ChatSettings) -> bool:
    """Without a bus the rooms are this process's: one worker serves the chat. With one, every worker is a node."""
    return settings.bus is None


ChatContext = ServiceContext[ChatSettings, ChatState]


def make_state(context: ChatContext) -> ChatState:
    """
    Members, rooms and history: made once, kept across reloads
    (L{ChatState.reconfigure}). Its rooms take other services' notices
    (smtp's announce) from the daemon's notice bus.
    """
    state = ChatState(context.settings, context.reactor, context.name)
    state.unsubscribe = context.notices.subscribe(state.post_notice)
    if context.settings.bus is not None and context.serving:  # a supervisor of workers is no node: they are
        join_cluster(state, context.settings, context.reactor)
    return state


def make_factory(context: ChatContext) -> ServerFactory:
    return ServiceFactory(context, ChatProtocol)


SERVICE_TYPE: ServiceType[ChatSettings, ChatState] = ServiceType(
    name="chat",
    settings=ChatSettings,
    doc="multi-room line chat for nc, telnet and `socksvc chat`",
    make_state=make_state,
    stream=make_factory,
    # Idle members are what a chat is for, and cheap (about 2 KiB each, docs/policy.md):
    # the service-wide cap is sized for thousands; per address and per subnet caps stay.
    policy_defaults={"max_connections": 10000},
    extra_streams={
        "irc": ExtraStream(irc.make_factory, "IRC clients (irssi, WeeChat, HexChat): the same rooms as channels"),
        "web": ExtraStream(web.make_factory, "browsers: the chat page (GET /) and its WebSocket (/ws), same rooms"),
    },
    one_process=True,
    one_process_for=one_process_unless_bus,
    replaced_for=another_bus,
)
