"""
C{socksvc status [URL]}: the daemon's figures in the terminal, for an admin over ssh.

Reads the admin listener's C{status.json} (the status page's figures) with
a plain blocking HTTP request: no proxy (credentials go to the daemon and
nowhere else), no redirect followed, at most L{MAX_BODY} bytes. With
C{--user NAME} the password comes from C{SOCKSVC_PASSWORD} or a prompt.
Every name, room and topic is attacker text: it is printed through the
visible-escaping rule, so nothing reaches the terminal as a control.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import http.client
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from socksvc.client.common import (
    EXIT_CONNECT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PROTOCOL,
    EXIT_TIMEOUT,
    ClientError,
    parse_timeout,
    say,
    usage_error,
)
from socksvc.util.visible import UNSAFE_STRICT, visible
from socksvc.wire import ADMIN_PORT, DEFAULT_INTERFACE, STATUS_PATH

DEFAULT_URL = f"http://{DEFAULT_INTERFACE}:{ADMIN_PORT}/"
MAX_BODY = 16 << 20
PASSWORD_ENV = "SOCKSVC_PASSWORD"


def status_url(text: str | None) -> str:
    """
    The status.json URL for what the user typed: a URL (as typed), or HOST or
    HOST:PORT (port L{ADMIN_PORT} when not given). Default: the embedded
    default's admin listener.
    """
    text = (text or DEFAULT_URL).strip()
    shorthand = "://" not in text
    parts = urllib.parse.urlsplit("http://" + text if shorthand else text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise usage_error(f"not an http:// or https:// URL of the admin listener: {text!r}")
    try:
        port = parts.port
    except ValueError:
        raise usage_error(f"bad port in {text!r}") from None
    netloc = f"{parts.netloc}:{ADMIN_PORT}" if shorthand and port is None else parts.netloc
    path = parts.path if parts.path.endswith(".json") else parts.path.rstrip("/") + STATUS_PATH
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, "", ""))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch(url: str, timeout: float, user: str | None = None, password: str | None = None) -> dict[str, Any]:
    """The figures at C{url}, or a L{ClientError} with one line."""
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "socksvc status"})
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(MAX_BODY + 1)
    except urllib.error.HTTPError as e:
        raise _http_error(url, e) from None
    except urllib.error.URLError as e:
        raise _url_error(url, e.reason) from None
    except http.client.HTTPException:  # something else answers there: not HTTP at all
        raise ClientError(f"{url}: not an HTTP reply (is this the admin listener?)", EXIT_PROTOCOL) from None
    except TimeoutError:
        raise ClientError(f"{url}: timed out", EXIT_TIMEOUT) from None
    except OSError as e:
        raise ClientError(f"{url}: {e.strerror or e}", EXIT_CONNECT) from None
    if len(body) > MAX_BODY:
        raise ClientError(f"{url}: the reply is over {MAX_BODY >> 20} MiB", EXIT_PROTOCOL)
    try:
        figures = json.loads(body)
    except ValueError:
        raise ClientError(f"{url}: not socksvc's status JSON", EXIT_PROTOCOL) from None
    if not isinstance(figures, dict) or not isinstance(figures.get("services"), list):
        raise ClientError(f"{url}: not socksvc's status JSON", EXIT_PROTOCOL)
    return figures


def _http_error(url: str, e: urllib.error.HTTPError) -> ClientError:
    if e.code == 401:
        return ClientError(
            f"{url}: the admin listener needs a user name and password (--user NAME; "
            f"the password from {PASSWORD_ENV} or a prompt)",
            EXIT_PROTOCOL,
        )
    try:
        text = e.read(512).decode("utf-8", "replace").strip().splitlines()[0]
    except (OSError, IndexError):
        text = ""
    detail = f": {clean(text)}" if text else ""
    return ClientError(f"{url}: HTTP {e.code} {clean(e.reason or '')}{detail}", EXIT_PROTOCOL)


def _url_error(url: str, reason: Any) -> ClientError:
    if isinstance(reason, socket.gaierror):
        return ClientError(f"{url}: host not found", EXIT_NOT_FOUND)
    if isinstance(reason, TimeoutError | socket.timeout):
        return ClientError(f"{url}: timed out", EXIT_TIMEOUT)
    if isinstance(reason, OSError):
        return ClientError(f"{url}: {reason.strerror or reason}", EXIT_CONNECT)
    return ClientError(f"{url}: {clean(str(reason))}", EXIT_CONNECT)


# -- the text ------------------------------------------------------------------


def clean(value: Any) -> str:
    """Attacker text made safe for a terminal."""
    return visible(str(value), UNSAFE_STRICT)


def size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns


def span(seconds: float) -> str:
    s = int(max(0, seconds))
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    return " ".join(p for p in (f"{d}d" if d else "", f"{h}h" if d or h else "", f"{m}m" if d or h or m else "")) + (
        f" {s % 60}s" if not d else ""
    )


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else "never"


def reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{clean(k)} {v}" for k, v in counts.items() if v) or "none"


def render(f: dict[str, Any], url: str) -> list[str]:
    """The lines C{socksvc status} prints for one figures dict."""
    p = f.get("process") or {}
    rates = f.get("rates") or {}
    per = rates.get("services") or {}
    reload = f.get("reload") or {}
    out = [
        f"socksvc {clean(f.get('version'))} at {clean(url)}: pid {f.get('pid')}, "
        f"up {span(f.get('uptime', 0)).strip()} (since {when(f.get('started'))}), workers {f.get('workers', 1)}",
        f"config {clean(f.get('config'))}; reloads {reload.get('count', 0)}, last {when(reload.get('last_time'))}"
        + ("" if reload.get("last_ok", True) else f" FAILED: {clean(reload.get('last_error'))}"),
        f"process: RSS {size(p.get('rss_bytes'))}, CPU "
        + (f"{rates['cpu_percent']:.1f}% now, " if "cpu_percent" in rates else "")
        + f"{p.get('cpu_seconds', 0):.1f} s in all, descriptors {p.get('open_fds')} of {p.get('max_fds')}",
        "",
        f"{'SERVICE':<16} {'OPEN':>6} {'LIMIT':>6} {'PEAK':>6} {'ACCEPTED':>9} {'REFUSED':>8} "
        f"{'IN':>10} {'OUT':>10} {'IN/S':>10} {'OUT/S':>10}",
    ]
    services = list(f["services"]) + ([f["admin"]] if f.get("admin") else [])
    for s in services:
        r = per.get(s.get("name"), {})
        limit = s.get("limit") or "-"
        out.append(
            f"{clean(s.get('name'))[:16]:<16} {s.get('connections', 0):>6} {limit:>6} {s.get('peak', 0):>6} "
            f"{s.get('accepted', 0):>9} {sum((s.get('refused') or {}).values()):>8} "
            f"{size(s.get('bytes_in')):>10} {size(s.get('bytes_out')):>10} "
            f"{size(r.get('bytes_in')) if r else '-':>10} {size(r.get('bytes_out')) if r else '-':>10}"
        )
    out.append("")
    for s in services:
        name = clean(s.get("name"))
        out.append(f"{name}: " + ", ".join(clean(x) for x in s.get("listeners") or []))
        if any((s.get("refused") or {}).values()):
            out.append(f"  refused: {reasons(s['refused'])}")
        udp = s.get("udp")
        if udp:
            out.append(
                f"  udp: {udp['received']} received, {udp['replied']} replied; dropped: {reasons(udp['dropped'])}"
            )
        chat = s.get("chat")
        if chat:
            lps = per.get(s.get("name"), {}).get("chat_lines")
            rate = f" ({lps:.1f}/s)" if lps is not None else ""
            out.append(
                f"  chat: {chat['members']} members, {chat['rooms']} rooms, {chat['lines']} lines{rate}; "
                f"dropped: {reasons(chat['dropped'])}"
            )
            bus = chat.get("bus")
            if bus:  # a chat with a bus (docs/chat-bus.md)
                state = "up" if bus.get("up") else "DOWN"
                out.append(
                    f"  bus: {state}, {bus.get('nodes', 0)} nodes, {bus.get('queued', 0)} queued, "
                    f"{bus.get('lines_held', 0)} held, {bus.get('lines_lost', 0)} lost, "
                    f"{bus.get('entries_dropped', 0)} bad entries, {bus.get('collisions', 0)} collisions"
                )
            for room in chat.get("room_list") or []:
                topic = f": {clean(room['topic'])}" if room.get("topic") else ""
                out.append(f"    {clean(room['name'])} ({room['members']}){topic}")
    return out


def run_status(args: argparse.Namespace) -> int:
    url = status_url(args.url)
    password = None
    if args.user is not None:
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            if not sys.stdin or not sys.stdin.isatty():
                raise usage_error(f"--user needs the password in {PASSWORD_ENV} when standard input is not a terminal")
            password = getpass.getpass(f"password for {args.user}: ")
    figures = fetch(url, args.timeout, args.user, password)
    if args.json:
        say(json.dumps(figures, indent=2, sort_keys=True))
        return EXIT_OK
    for line in render(figures, url):
        say(line)
    return EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="the daemon's live figures from its admin listener",
        description=(
            "Print the figures of the status page (services, connections, refusals, bytes, UDP drops, "
            f"chat rooms, the process) from the admin listener's {STATUS_PATH}. URL is http[s]://HOST:PORT/ "
            f"(or HOST[:PORT]); default {DEFAULT_URL}."
        ),
    )
    parser.add_argument("url", nargs="?", metavar="URL", help=f"the admin listener (default {DEFAULT_URL})")
    parser.add_argument(
        "--user", "-u", metavar="NAME", help=f"basic auth user; the password from {PASSWORD_ENV} or a prompt"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON itself")
    parser.add_argument("--timeout", "-t", type=parse_timeout, default=10.0, metavar="S", help="seconds (default 10)")
    parser.set_defaults(run=run_status)
