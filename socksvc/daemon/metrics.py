"""
Prometheus metrics, made at scrape time from the daemon's figures.

L{SocksvcCollector} turns one figures dict (L{socksvc.daemon.figures}) into
metric families: nothing is counted per event for metrics, the services'
own counters are read when Prometheus asks. Names follow Prometheus'
conventions and the daemons operators know (HAProxy, Envoy); labels are only
bounded, operator-chosen values (service names, reasons from a fixed list):
never a peer address, a nickname or a room name. Counters carry no
C{_created} series. L{registry} adds the C{process_*} and C{python_*}
collectors of prometheus_client; L{render} picks Prometheus text or
OpenMetrics from the Accept header (prometheus_client's C{choose_encoder}).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from socksvc.daemon.figures import Figures

ADMIN_SERVICE = "admin/http"
"""The admin listener's C{service} label and log name (a slash: no [services.NAME] can take it)."""

METRIC_NAMES = (
    "socksvc_build_info",
    "socksvc_config_last_reload_successful",
    "socksvc_config_last_reload_success_timestamp_seconds",
    "socksvc_connections",
    "socksvc_connections_limit",
    "socksvc_connections_accepted_total",
    "socksvc_connections_refused_total",
    "socksvc_received_bytes_total",
    "socksvc_sent_bytes_total",
    "socksvc_connection_duration_seconds",
    "socksvc_udp_datagrams_received_total",
    "socksvc_udp_replies_total",
    "socksvc_udp_dropped_total",
    "socksvc_chat_members",
    "socksvc_chat_rooms",
    "socksvc_chat_lines_total",
    "socksvc_chat_lines_dropped_total",
    "socksvc_chat_bus_up",
    "socksvc_chat_bus_nodes",
    "socksvc_chat_bus_queued",
    "socksvc_chat_bus_lines_held_total",
    "socksvc_chat_bus_lines_lost_total",
    "socksvc_chat_bus_entries_dropped_total",
    "socksvc_chat_bus_collisions_total",
)
"""Every family the collector makes (names as exposed; counters end in _total)."""


BUS_FAMILIES = (
    ("up", "socksvc_chat_bus_up", "1 while the chat bus is reachable (with workers: by every worker)"),
    ("nodes", "socksvc_chat_bus_nodes", "Chat nodes on the bus this node sees, itself included"),
    ("queued", "socksvc_chat_bus_queued", "Chat bus entries waiting to be sent now"),
    ("lines_held", "socksvc_chat_bus_lines_held_total", "Chat lines held while the bus was unreachable"),
    ("lines_lost", "socksvc_chat_bus_lines_lost_total", "Chat lines this node learnt it missed (gone from the bus)"),
    ("entries_dropped", "socksvc_chat_bus_entries_dropped_total", "Malformed chat bus entries dropped"),
    ("collisions", "socksvc_chat_bus_collisions_total", "Chat members renamed for a nickname collision"),
)
"""A chat bus's figures (the chat's C{bus} figures key, family, help): only chats with a bus have samples."""


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    # prometheus_client adds _total itself: give the name without it.
    return CounterMetricFamily(name.removesuffix("_total"), doc, labels=labels)


class SocksvcCollector(Collector):
    """
    socksvc's own metrics from C{figures()}, a function called once per
    scrape (L{socksvc.daemon.figures.daemon_figures} today; with workers, one
    that sums them).
    """

    def __init__(self, figures: Callable[[], Figures]) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        f = self.figures()
        info = GaugeMetricFamily("socksvc_build_info", "socksvc's version (always 1)", labels=["version"])
        info.add_metric([f["version"]], 1)
        yield info
        reload = f["reload"]
        yield GaugeMetricFamily(
            "socksvc_config_last_reload_successful",
            "1 if the last config reload applied (or none was tried), 0 if it failed",
            value=1 if reload["last_ok"] else 0,
        )
        yield GaugeMetricFamily(
            "socksvc_config_last_reload_success_timestamp_seconds",
            "When the config in force was loaded (start-up or the last good reload), Unix time",
            value=reload["last_success_time"],
        )
        services = list(f["services"])
        if f.get("admin") is not None:
            services.append({**f["admin"], "name": ADMIN_SERVICE})
        yield from self._connections(services)
        yield from self._udp(services)
        yield from self._chat(services)
        yield from self._bus(services)

    def _connections(self, services: list[Figures]) -> Iterator[Metric]:
        open_ = GaugeMetricFamily("socksvc_connections", "Connections open now", labels=["service"])
        limit = GaugeMetricFamily(
            "socksvc_connections_limit", "max_connections of the service (0 = no limit)", labels=["service"]
        )
        accepted = _counter("socksvc_connections_accepted_total", "Connections admitted", ["service"])
        refused = _counter(
            "socksvc_connections_refused_total",
            "Connections refused, by the rule that refused them (denied, max_connections, max_per_source, max_rate)",
            ["service", "reason"],
        )
        received = _counter("socksvc_received_bytes_total", "Bytes received from clients", ["service", "transport"])
        sent = _counter("socksvc_sent_bytes_total", "Bytes sent to clients", ["service", "transport"])
        durations = HistogramMetricFamily(
            "socksvc_connection_duration_seconds", "How long closed connections lasted", labels=["service"]
        )
        for svc in services:
            name = svc["name"]
            open_.add_metric([name], svc["connections"])
            limit.add_metric([name], svc["limit"])
            accepted.add_metric([name], svc["accepted"])
            for reason, n in sorted(svc["refused"].items()):
                refused.add_metric([name, reason], n)
            received.add_metric([name, "stream"], svc["bytes_in"])
            sent.add_metric([name, "stream"], svc["bytes_out"])
            udp = svc.get("udp")
            if udp is not None:
                received.add_metric([name, "datagram"], udp["bytes_in"])
                sent.add_metric([name, "datagram"], udp["bytes_out"])
            d = svc["duration"]
            cumulative = 0
            buckets = []
            for bound, n in zip([*d["bounds"], float("inf")], d["counts"], strict=True):
                cumulative += n
                buckets.append((floatToGoString(bound), cumulative))
            durations.add_metric([name], buckets, d["sum"])
        yield from (open_, limit, accepted, refused, received, sent, durations)

    def _udp(self, services: list[Figures]) -> Iterator[Metric]:
        received = _counter("socksvc_udp_datagrams_received_total", "UDP datagrams received", ["service"])
        replies = _counter("socksvc_udp_replies_total", "UDP replies sent", ["service"])
        dropped = _counter(
            "socksvc_udp_dropped_total", "UDP datagrams not answered, by reason (docs/udp.md)", ["service", "reason"]
        )
        for svc in services:
            udp = svc.get("udp")
            if udp is None:
                continue
            received.add_metric([svc["name"]], udp["received"])
            replies.add_metric([svc["name"]], udp["replied"])
            for reason, n in sorted(udp["dropped"].items()):
                dropped.add_metric([svc["name"], reason], n)
        yield from (received, replies, dropped)

    def _chat(self, services: list[Figures]) -> Iterator[Metric]:
        members = GaugeMetricFamily("socksvc_chat_members", "Chat members with a nickname", labels=["service"])
        rooms = GaugeMetricFamily("socksvc_chat_rooms", "Chat rooms that exist now", labels=["service"])
        lines = _counter("socksvc_chat_lines_total", "Chat lines members said (rooms, actions, private)", ["service"])
        dropped = _counter(
            "socksvc_chat_lines_dropped_total",
            "Chat lines dropped: flood (flood control), too_long (over max_line), stalled (not sent to a member "
            "that stopped reading, one per member), bus_full (the chat bus unreachable and its queue full)",
            ["service", "reason"],
        )
        for svc in services:
            chat = svc.get("chat")
            if chat is None:
                continue
            members.add_metric([svc["name"]], chat["members"])
            rooms.add_metric([svc["name"]], chat["rooms"])
            lines.add_metric([svc["name"]], chat["lines"])
            for reason, n in sorted(chat["dropped"].items()):
                dropped.add_metric([svc["name"], reason], n)
        yield from (members, rooms, lines, dropped)

    def _bus(self, services: list[Figures]) -> Iterator[Metric]:
        families: list[tuple[str, GaugeMetricFamily | CounterMetricFamily]] = []
        for key, name, doc in BUS_FAMILIES:
            if name.endswith("_total"):
                families.append((key, _counter(name, doc, ["service"])))
            else:
                families.append((key, GaugeMetricFamily(name, doc, labels=["service"])))
        for svc in services:
            bus = (svc.get("chat") or {}).get("bus")
            if bus is None:
                continue
            for key, family in families:
                family.add_metric([svc["name"]], bus.get(key, 0))
        yield from (family for _, family in families)


def registry(figures: Callable[[], Figures]) -> CollectorRegistry:
    """socksvc's collector plus prometheus_client's process_* and python_* ones, in a registry of our own."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SocksvcCollector(figures))
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg


def render(reg: Any, accept: str | None) -> tuple[bytes, str]:
    """The exposition the Accept header asks for (Prometheus text by default, or OpenMetrics) and its type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(reg), content_type
