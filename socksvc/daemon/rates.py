"""
Rates for the status page: the difference between the last two samples of
the figures (bytes, connections, datagrams, chat lines a second; CPU %).

The admin service samples every few seconds (L{socksvc.daemon.admin}); a
scrape or a page load reads the rates of the last interval, so nothing is
computed per event and nothing depends on how often anyone polls.
"""

from __future__ import annotations

from typing import Any

Sample = tuple[float, float, dict[str, dict[str, float]]]
"""(time, CPU seconds, {service: {figure: total}})."""


def totals(figures: dict[str, Any]) -> Sample:
    """The monotonic totals of one figures dict (L{socksvc.daemon.figures.daemon_figures})."""
    services: dict[str, dict[str, float]] = {}
    entries = list(figures["services"])
    if figures.get("admin") is not None:
        entries.append(figures["admin"])
    for svc in entries:
        t = {"accepted": svc["accepted"], "bytes_in": svc["bytes_in"], "bytes_out": svc["bytes_out"]}
        udp = svc.get("udp")
        if udp is not None:
            t["udp_received"] = udp["received"]
        chat = svc.get("chat")
        if chat is not None:
            t["chat_lines"] = chat["lines"]
        services[svc["name"]] = t
    return figures["now"], figures["process"]["cpu_seconds"], services


class RateMeter:
    """The last two samples, and the rates between them."""

    def __init__(self) -> None:
        self.previous: Sample | None = None
        self.latest: Sample | None = None

    def sample(self, figures: dict[str, Any]) -> None:
        self.previous, self.latest = self.latest, totals(figures)

    def rates(self) -> dict[str, Any]:
        """{"interval": s, "cpu_percent": %, "services": {name: {figure: per second}}}; {} before two samples."""
        if self.previous is None or self.latest is None:
            return {}
        t0, cpu0, before = self.previous
        t1, cpu1, after = self.latest
        dt = t1 - t0
        if dt <= 0:
            return {}
        services = {}
        for name, now in after.items():
            then = before.get(name)
            if then is None:
                continue  # added by a reload since: no rate yet
            # max(0, ...): a service re-created by a reload starts its counts again.
            services[name] = {k: max(0.0, (v - then.get(k, 0)) / dt) for k, v in now.items()}
        return {"interval": dt, "cpu_percent": max(0.0, 100.0 * (cpu1 - cpu0) / dt), "services": services}
