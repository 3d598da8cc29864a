"""
The Grafana dashboard (etc/grafana/socksvc-dashboard.json): every query
names metrics the daemon exposes, with labels they carry (read from a real
exposition after the scripted sequence of tests/test_metrics.py, its chat
given a bus's counters).
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from socksvc.daemon import metrics
from socksvc.daemon.service import DaemonService
from tests.support.metrics import scripted, with_bus

DASHBOARD = pathlib.Path(__file__).resolve().parent.parent / "etc" / "grafana" / "socksvc-dashboard.json"
SCRAPE_LABELS = {"instance", "job"}
"""Labels Prometheus adds to every series it scrapes."""
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}

__all__ = ["scripted"]  # the fixture, for the tests below


def queries(node: Any) -> list[str]:
    """Every PromQL expression in the dashboard: panel targets and template variable queries."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                found.append(value)
            elif key == "definition" and isinstance(value, str):
                m = re.fullmatch(r"label_values\((.*),\s*\w+\)", value)
                found.append(m.group(1) if m else value)
            else:
                found += queries(value)
    elif isinstance(node, list):
        for item in node:
            found += queries(item)
    return found


def names_and_labels(expr: str) -> tuple[set[str], dict[str, set[str]], set[str]]:
    """(metric names, {metric: labels its selector matches on}, labels in by/without clauses)."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    grouping: set[str] = set()
    for m in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        grouping |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    expr = re.sub(r"\b(?:by|without)\s*\([^)]*\)", " ", expr)
    selectors: dict[str, set[str]] = {}
    for m in re.finditer(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expr):
        labels = {part.split("=")[0].strip(" !~") for part in m.group(2).split(",") if part.strip()}
        selectors.setdefault(m.group(1), set()).update(labels)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    names = set()
    for m in re.finditer(r"(?<![\w:.])[a-zA-Z_:][\w:]*", expr):
        token = m.group(0)
        following = expr[m.end() :].lstrip()
        if token in KEYWORDS or following.startswith("(") or token[0].isdigit():
            continue
        names.add(token)
    return names, selectors, grouping


def exposed(daemon: DaemonService) -> dict[str, set[str]]:
    """{sample name: the labels it carries} of a real scrape."""
    assert daemon.admin is not None
    body, _ = metrics.render(daemon.admin.factory().registry, None)
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] == "socksvc" and board["uid"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["type"] in ("row", "stat", "table", "timeseries")
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]


def test_every_query_names_a_metric_that_exists(scripted: DaemonService) -> None:
    with_bus(scripted)  # chat's bus families have samples only with a bus
    have = exposed(scripted)
    board = json.loads(DASHBOARD.read_text())
    exprs = queries(board)
    assert len(exprs) > 20
    used: set[str] = set()
    for expr in exprs:
        names, selectors, grouping = names_and_labels(expr)
        assert names, expr
        for name in names:
            assert name in have, f"{name} (in {expr}) is not exposed"
        for name, labels in selectors.items():
            assert labels <= have[name] | SCRAPE_LABELS, (expr, labels - have[name])
        carried = set().union(*(have[n] for n in names)) | SCRAPE_LABELS
        assert grouping <= carried, (expr, grouping - carried)
        used |= names
    # Every socksvc family is on the dashboard somewhere.
    families = {n.removesuffix("_total") for n in metrics.METRIC_NAMES}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    assert families <= shown, families - shown


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (service) (rate(socksvc_x_total{service=~"$s"}[$__rate_interval]))', {"socksvc_x_total"}),
        ("time() - max(a_seconds)", {"a_seconds"}),
        ("process_open_fds / process_max_fds", {"process_open_fds", "process_max_fds"}),
    ],
)
def test_the_query_reader(expr: str, names: set[str]) -> None:
    assert names_and_labels(expr)[0] == names
