"""
/metrics: every metric's value after a scripted sequence of connections,
refusals, UDP drops and chat events (tests/support/metrics.py), read with
prometheus_client's own parsers (Prometheus text and OpenMetrics); scrapes
while a service reloads or stops; the figures a supervisor would sum over
workers.
"""

from __future__ import annotations

import pathlib
import re

import pytest

from socksvc.daemon import figures, metrics
from socksvc.daemon.service import DaemonService
from socksvc.services.catalogue import loads
from tests.support.metrics import CONFIG, open_, scrape, scripted, start, stubborn, value

__all__ = ["scripted"]  # the fixture


def test_connection_metrics(scripted: DaemonService) -> None:
    m = scrape(scripted)
    assert value(m, "socksvc_connections", service="echo") == 1
    assert value(m, "socksvc_connections_limit", service="echo") == 2
    assert value(m, "socksvc_connections_limit", service="chat") == 10000  # chat's own default
    assert value(m, "socksvc_connections_accepted_total", service="echo") == 2
    assert value(m, "socksvc_connections_refused_total", service="echo", reason="max_connections") == 1
    assert value(m, "socksvc_connections_refused_total", service="echo", reason="denied") == 1
    assert value(m, "socksvc_connections_refused_total", service="echo", reason="max_per_source") == 0
    assert value(m, "socksvc_connections_refused_total", service="echo", reason="max_per_subnet") == 0
    assert value(m, "socksvc_connections_refused_total", service="echo", reason="max_rate") == 0
    assert value(m, "socksvc_received_bytes_total", service="echo", transport="stream") == 8
    assert value(m, "socksvc_sent_bytes_total", service="echo", transport="stream") == 8
    assert value(m, "socksvc_received_bytes_total", service="echo", transport="datagram") == 12
    assert value(m, "socksvc_sent_bytes_total", service="echo", transport="datagram") == 4
    assert value(m, "socksvc_connections", service="chat") == 2
    assert value(m, "socksvc_connections", service="admin/http") == 0


def test_duration_histogram(scripted: DaemonService) -> None:
    m = scrape(scripted)
    assert m["socksvc_connection_duration_seconds"].type == "histogram"
    bucket = "socksvc_connection_duration_seconds_bucket"
    assert value(m, bucket, service="echo", le="0.1") == 0
    assert value(m, bucket, service="echo", le="0.5") == 1
    assert value(m, bucket, service="echo", le="+Inf") == 1
    assert value(m, "socksvc_connection_duration_seconds_count", service="echo") == 1
    assert value(m, "socksvc_connection_duration_seconds_sum", service="echo") == pytest.approx(0.2)


def test_udp_metrics(scripted: DaemonService) -> None:
    m = scrape(scripted)
    assert value(m, "socksvc_udp_datagrams_received_total", service="echo") == 3
    assert value(m, "socksvc_udp_replies_total", service="echo") == 1
    assert value(m, "socksvc_udp_dropped_total", service="echo", reason="source_port") == 1
    assert value(m, "socksvc_udp_dropped_total", service="echo", reason="broadcast") == 1
    assert value(m, "socksvc_udp_dropped_total", service="echo", reason="rate") == 0
    assert not [s for s in m["socksvc_udp_replies"].samples if s.labels["service"] != "echo"]


def test_chat_metrics(scripted: DaemonService) -> None:
    m = scrape(scripted)
    assert value(m, "socksvc_chat_members", service="chat") == 2
    assert value(m, "socksvc_chat_rooms", service="chat") == 1
    assert value(m, "socksvc_chat_lines_total", service="chat") == 3
    assert value(m, "socksvc_chat_lines_dropped_total", service="chat", reason="stalled") == 2
    assert value(m, "socksvc_chat_lines_dropped_total", service="chat", reason="flood") == 0
    assert value(m, "socksvc_chat_members", service="chat2") == 1
    assert value(m, "socksvc_chat_lines_total", service="chat2") == 1
    assert value(m, "socksvc_chat_lines_dropped_total", service="chat2", reason="flood") == 3
    assert value(m, "socksvc_chat_lines_dropped_total", service="chat2", reason="too_long") == 1


def test_names_and_types_by_prometheus_clients_parsers(scripted: DaemonService) -> None:
    expected_types = {
        "socksvc_build_info": "gauge",
        "socksvc_config_last_reload_successful": "gauge",
        "socksvc_config_last_reload_success_timestamp_seconds": "gauge",
        "socksvc_connections": "gauge",
        "socksvc_connections_limit": "gauge",
        "socksvc_connections_accepted": "counter",
        "socksvc_connections_refused": "counter",
        "socksvc_received_bytes": "counter",
        "socksvc_sent_bytes": "counter",
        "socksvc_connection_duration_seconds": "histogram",
        "socksvc_udp_datagrams_received": "counter",
        "socksvc_udp_replies": "counter",
        "socksvc_udp_dropped": "counter",
        "socksvc_chat_members": "gauge",
        "socksvc_chat_rooms": "gauge",
        "socksvc_chat_lines": "counter",
        "socksvc_chat_lines_dropped": "counter",
        "socksvc_chat_bus_up": "gauge",
        "socksvc_chat_bus_nodes": "gauge",
        "socksvc_chat_bus_queued": "gauge",
        "socksvc_chat_bus_lines_held": "counter",
        "socksvc_chat_bus_lines_lost": "counter",
        "socksvc_chat_bus_entries_dropped": "counter",
        "socksvc_chat_bus_collisions": "counter",
    }
    for accept in (None, "application/openmetrics-text; version=1.0.0"):
        m = scrape(scripted, accept)
        ours = {name: f.type for name, f in m.items() if name.startswith("socksvc_")}
        assert ours == expected_types
        assert {n.removesuffix("_total") for n in metrics.METRIC_NAMES} == set(expected_types)
        assert any(name.startswith("process_") for name in m), "the process collector"
        assert any(name.startswith("python_") for name in m), "the platform and gc collectors"
        samples = [s for f in m.values() for s in f.samples]
        assert not [s.name for s in samples if s.name.endswith("_created")]
        labels = {k for s in samples if s.name.startswith("socksvc_") for k in s.labels}
        assert labels <= {"service", "reason", "transport", "version", "le"}


def test_openmetrics_is_chosen_by_the_accept_header(scripted: DaemonService) -> None:
    assert scripted.admin is not None
    reg = scripted.admin.factory().registry
    body, content_type = metrics.render(reg, "application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    body, content_type = metrics.render(reg, "text/plain")
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"# EOF" not in body


def test_no_label_is_ever_a_peer_a_nickname_or_a_room(scripted: DaemonService) -> None:
    body, _ = metrics.render(scripted.admin.factory().registry, None)  # type: ignore[union-attr]
    text = body.decode()
    for secret in ("alice", "bob", "carol", "lobby", "127.0.0.1", "192.0.2.7", "40001"):
        assert secret not in text


def test_reload_metrics() -> None:
    daemon = start()
    clock = daemon.reactor
    started = clock.seconds()
    m = scrape(daemon)
    assert value(m, "socksvc_config_last_reload_successful") == 1
    assert value(m, "socksvc_config_last_reload_success_timestamp_seconds") == started
    clock.advance(100)
    daemon.config_path = "/nonexistent/socksvc.toml"
    results: list[bool] = []
    daemon.reload().addCallback(results.append)
    assert results == [False]
    m = scrape(daemon)
    assert value(m, "socksvc_config_last_reload_successful") == 0
    assert value(m, "socksvc_config_last_reload_success_timestamp_seconds") == started
    clock.advance(100)
    daemon.reload(loads(CONFIG, "<test>")).addCallback(results.append)
    assert results == [False, True]
    m = scrape(daemon)
    assert value(m, "socksvc_config_last_reload_successful") == 1
    assert value(m, "socksvc_config_last_reload_success_timestamp_seconds") == started + 200
    daemon.stopService()


def test_scrape_while_a_service_is_removed_by_a_reload_and_stopping() -> None:
    """A removed service closes its connections over its grace period: a scrape meanwhile parses."""
    daemon = start()
    stubborn(*open_(daemon, "chat", port=43001))
    text = CONFIG.replace('[services.chat]\nlisten = ["tcp:0:interface=127.0.0.1"]\nsend_queue_max = 1024\n', "")
    results: list[bool] = []
    daemon.reload(loads(text, "<test>")).addCallback(results.append)
    m = scrape(daemon)  # the reload waits for chat to stop
    assert value(m, "socksvc_connections", service="echo") == 0
    names = {s.labels["service"] for s in m["socksvc_connections"].samples}
    assert "chat2" in names
    daemon.reactor.advance(3)  # the grace period: chat's last connection is aborted
    assert results == [True]
    m = scrape(daemon)
    assert "chat" not in {s.labels["service"] for s in m["socksvc_connections"].samples}
    daemon.stopService()


def test_scrape_while_the_daemon_stops() -> None:
    daemon = start()
    stubborn(*open_(daemon, "echo", port=44001))
    stopped = daemon.stopService()
    m = scrape(daemon)
    assert value(m, "socksvc_connections", service="echo") == 1
    daemon.reactor.advance(3)
    m = scrape(daemon)
    assert value(m, "socksvc_connections", service="echo") == 0
    assert stopped.called


def test_merge_sums_workers_figures(scripted: DaemonService) -> None:
    """With workers the supervisor serves the sum: two identical workers give twice every count."""
    one = figures.daemon_figures(scripted)["services"]
    merged = {s["name"]: s for s in figures.merge_services([one, one])}
    echo = merged["echo"]
    assert echo["accepted"] == 4
    assert echo["refused"]["denied"] == 2
    assert echo["udp"]["dropped"]["source_port"] == 2
    assert echo["duration"]["counts"][5] == 2
    assert merged["chat"]["chat"]["lines"] == 6
    assert echo["listeners"] == next(s for s in one if s["name"] == "echo")["listeners"]


def test_every_family_is_in_the_docs_table() -> None:
    docs = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "observability.md").read_text()
    rows = set(re.findall(r"^\| `(socksvc_\w+)` \|", docs, re.MULTILINE))
    assert rows == set(metrics.METRIC_NAMES)
