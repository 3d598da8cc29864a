"""
A chat with a bus (issue 14): its counters as the chat's C{bus} figures,
the socksvc_chat_bus_* families (read with prometheus_client's parsers),
the figures summed over workers; a chat without a bus shows none of it.
The counters are those of tests/support/metrics.py's BUS, and once those a
real cluster on the in-memory bus gives.
"""

from __future__ import annotations

import copy

from socksvc.daemon import figures
from socksvc.daemon.metrics import BUS_FAMILIES
from socksvc.daemon.service import DaemonService
from tests.support.chatbus import cluster, settle
from tests.support.metrics import BUS, scrape, scripted, value, with_bus

__all__ = ["scripted"]  # the fixture

FIGURES = {
    "up": 1,
    "linked": 1,
    "nodes": 3,
    "lines_held": 7,
    "lines_lost": 2,
    "entries_dropped": 1,
    "collisions": 5,
    "queued": 6,
}


def services(daemon: DaemonService) -> dict[str, figures.Figures]:
    return {s["name"]: s for s in figures.daemon_figures(daemon)["services"]}


def test_bus_figures(scripted: DaemonService) -> None:
    with_bus(scripted)
    chat = services(scripted)["chat"]
    assert chat["chat"]["bus"] == FIGURES
    assert chat["chat"]["dropped"]["bus_full"] == 4
    assert chat["chat"]["members"] == 2 and chat["chat"]["lines"] == 3
    assert not [k for k in chat["counters"] if k.startswith("chat_")]


def test_a_chat_without_a_bus_has_no_bus_figures(scripted: DaemonService) -> None:
    with_bus(scripted)
    got = services(scripted)
    assert "bus" not in got["chat2"]["chat"] and "bus_full" not in got["chat2"]["chat"]["dropped"]
    assert "bus" not in got["echo"] and "chat" not in got["echo"]


def test_bus_metrics(scripted: DaemonService) -> None:
    with_bus(scripted, counters={**BUS, "chat_bus_up": 0})
    for accept in (None, "application/openmetrics-text; version=1.0.0"):
        m = scrape(scripted, accept)
        assert value(m, "socksvc_chat_bus_up", service="chat") == 0
        assert value(m, "socksvc_chat_bus_nodes", service="chat") == 3
        assert value(m, "socksvc_chat_bus_queued", service="chat") == 6
        assert value(m, "socksvc_chat_bus_lines_held_total", service="chat") == 7
        assert value(m, "socksvc_chat_bus_lines_lost_total", service="chat") == 2
        assert value(m, "socksvc_chat_bus_entries_dropped_total", service="chat") == 1
        assert value(m, "socksvc_chat_bus_collisions_total", service="chat") == 5
        assert value(m, "socksvc_chat_lines_dropped_total", service="chat", reason="bus_full") == 4
        for _, name, _ in BUS_FAMILIES:
            family = m[name.removesuffix("_total")]
            assert family.type == ("counter" if name.endswith("_total") else "gauge")
            assert {s.labels["service"] for s in family.samples} == {"chat"}, "chat2 has no bus"


def test_without_a_bus_the_bus_families_have_no_sample(scripted: DaemonService) -> None:
    m = scrape(scripted)
    for _, name, _ in BUS_FAMILIES:
        assert m[name.removesuffix("_total")].samples == []
    assert not [s for s in m["socksvc_chat_lines_dropped"].samples if s.labels["reason"] == "bus_full"]


def test_summed_over_workers(scripted: DaemonService) -> None:
    """Counts of this node's own (lines among them) add up; the cluster's (nodes, members, rooms) are the largest."""
    with_bus(scripted)
    one = figures.daemon_figures(scripted)["services"]
    two = copy.deepcopy(one)
    chat2 = next(s for s in two if s["name"] == "chat")
    chat2["chat"]["bus"].update(up=0, linked=0, nodes=4, lines_lost=1, entries_dropped=3)
    chat2["chat"]["members"] = 5
    merged = {s["name"]: s for s in figures.merge_services([one, two, copy.deepcopy(one)])}
    chat = merged["chat"]["chat"]
    assert chat["bus"] == {
        "up": 0,  # one worker's link is down
        "linked": 2,
        "nodes": 4,
        "lines_lost": 2,
        "entries_dropped": 3,
        "lines_held": 21,
        "collisions": 15,
        "queued": 18,
    }
    assert chat["members"] == 5 and chat["rooms"] == 1 and chat["lines"] == 9  # lines count where said: summed
    assert chat["dropped"]["bus_full"] == 12 and chat["dropped"]["stalled"] == 6
    assert "bus" not in merged["chat2"]["chat"] and merged["chat2"]["chat"]["lines"] == 3  # no bus: summed
    assert next(s for s in one if s["name"] == "chat")["chat"]["bus"] == FIGURES, "the workers' figures stay"
    up = figures.merge_services([one, copy.deepcopy(one)])
    assert next(s for s in up if s["name"] == "chat")["chat"]["bus"]["up"] == 1


def test_a_real_clusters_counters(scripted: DaemonService) -> None:
    """What socksvc.services.chat's Cluster gives is what the figures read: every key lands in bus or dropped."""
    hub, (a, b) = cluster(2)
    a.connect("alice")
    b.connect("bob")  # (the cluster counts the nodes it knows members of)
    settle(hub.clock)
    with_bus(scripted, counters=dict(a.state.status().counters))
    chat = services(scripted)["chat"]
    assert chat["chat"]["bus"]["up"] == 1 and chat["chat"]["bus"]["nodes"] == 2
    assert set(chat["chat"]["bus"]) == set(FIGURES)
    assert "bus_full" in chat["chat"]["dropped"]
    assert chat["counters"] == {}
