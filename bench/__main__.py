"""
Run the benchmarks: socksvc against each reference server, side by side.

    python -m bench [--quick] [--only NAME[,NAME]] [--json PATH]

Prints, per benchmark and case, socksvc's figure and each reference's with
the ratio socksvc/reference (reference/socksvc where lower is better), so a
ratio above 1 always means socksvc did better. Writes every row, the ratios
and the machine's description as JSON (default bench/results/latest.json).
--quick is a smoke run of seconds that says nothing about speed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench import harness

BENCHMARKS = ("echo", "greeting", "udp", "chat", "classic", "mail", "chatmix")
ON_REQUEST = ("workers",)
"""Benchmarks run only when asked for (C{--workers N}, or C{--only workers})."""
OPTIONAL = ("attack", "bus")
"""
Run only when named with --only (attack: fairness under a flood, not a
comparison; bus: needs redis-server, and compares socksvc with itself).
"""
DEFAULT_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "latest.json")
ROW_KEYS: dict[str, type | tuple[type, ...]] = {
    "bench": str,
    "case": str,
    "server": str,
    "value": (int, float),
    "unit": str,
    "higher_is_better": bool,
}


# -- rows and ratios ----------------------------------------------------------------


def check_row(row: Any) -> str | None:
    """Why C{row} is not a valid row, or None."""
    if not isinstance(row, dict):
        return f"not a dict: {row!r}"
    for key, kind in ROW_KEYS.items():
        if key not in row:
            return f"missing {key!r}: {row!r}"
        if not isinstance(row[key], kind) or (kind is not bool and isinstance(row[key], bool)):
            return f"{key!r} has the wrong type: {row!r}"
    if not math.isfinite(row["value"]) or row["value"] < 0:
        return f"value is not a finite number >= 0: {row!r}"
    return None


def ratio(socksvc: dict[str, Any], other: dict[str, Any]) -> float | None:
    """socksvc/other (other/socksvc when lower is better): above 1 means socksvc did better."""
    a, b = float(socksvc["value"]), float(other["value"])
    if not socksvc["higher_is_better"]:
        a, b = b, a
    if a <= 0 or b <= 0:
        return None
    return a / b


def server_order(names: Sequence[str]) -> list[str]:
    """socksvc first, then the usual references, then any other (e.g. chat's own)."""
    known = [s for s in harness.SERVERS if s in names]
    return known + sorted(set(names) - set(known))


def group(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """Rows by (bench, case), in first-seen order, then by server."""
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["bench"], row["case"]), {})[row["server"]] = row
    return groups


def ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for (bench, case), by_server in group(rows).items():
        mine = by_server.get(harness.SOCKSVC)
        if mine is None:
            continue
        for server in server_order(list(by_server)):
            if server == harness.SOCKSVC:
                continue
            r = ratio(mine, by_server[server])
            if r is not None:
                out.append({"bench": bench, "case": case, "vs": server, "ratio": round(r, 4)})
    return out


# -- the table -------------------------------------------------------------------------


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(rows: Sequence[dict[str, Any]]) -> str:
    """One block per benchmark: case, unit, socksvc, then each reference with its ratio."""
    lines: list[str] = []
    benches: dict[str, list[tuple[str, dict[str, dict[str, Any]]]]] = {}
    for (bench, case), by_server in group(rows).items():
        benches.setdefault(bench, []).append((case, by_server))
    for bench, cases in benches.items():
        servers = server_order(sorted({s for _, by in cases for s in by}))
        others = [s for s in servers if s != harness.SOCKSVC]
        header = [bench, "unit", harness.SOCKSVC, *others]
        body = []
        for case, by_server in cases:
            mine = by_server.get(harness.SOCKSVC)
            unit = next(iter(by_server.values()))["unit"]
            cells = [case, unit, number(mine["value"]) if mine else "-"]
            for s in others:
                row = by_server.get(s)
                if row is None:
                    cells.append("-")
                    continue
                r = ratio(mine, row) if mine else None
                if r is not None:
                    r = round(r, 4)  # the value the JSON holds, so both show the same figure
                cells.append(number(row["value"]) + (f" ({r:.2f}x)" if r is not None else ""))
            body.append(cells)
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
        if lines:
            lines.append("")
        lines.append(fmt.format(*header))
        lines.append("  ".join("-" * w for w in widths))
        lines.extend(fmt.format(*cells) for cells in body)
    return "\n".join(lines)


def worst(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per benchmark: the lowest ratio against each reference, and where."""
    lowest: dict[str, dict[str, dict[str, Any]]] = {}
    for r in ratios(rows):
        by_ref = lowest.setdefault(r["bench"], {})
        if r["vs"] not in by_ref or r["ratio"] < by_ref[r["vs"]]["ratio"]:
            by_ref[r["vs"]] = r
    lines = []
    for bench, by_ref in lowest.items():
        parts = [f"{vs} {by_ref[vs]['ratio']:.2f}x ({by_ref[vs]['case']})" for vs in server_order(list(by_ref))]
        lines.append(f"{bench}: lowest ratio vs " + "; ".join(parts))
    return lines


# -- the run -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for module in ("twisted", "uvloop"):
        try:
            info[module] = importlib.import_module(module).__version__
        except (ImportError, AttributeError):
            info[module] = None
    return info


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def selected(only: Sequence[str] | None, workers: int | None = None) -> list[str]:
    """
    The benchmarks to run: C{--only}'s, else every one of L{BENCHMARKS}, or
    with C{--workers} alone the workers benchmark (L{ON_REQUEST}: never by default).
    """
    known = BENCHMARKS + ON_REQUEST + OPTIONAL
    if not only:
        return ["workers"] if workers else list(BENCHMARKS)
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"bench: unknown benchmark {', '.join(unknown)} (known: {', '.join(known)})")
    return [n for n in known if n in names]


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def run_one(name: str, quick: bool) -> tuple[list[dict[str, Any]], str | None]:
    """(valid rows, None) or ([], one line saying why not); a missing chat module is not a failure."""
    try:
        module = importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"bench.{name}":
            print(f"{name}: bench/{name}.py is not there yet; skipped", flush=True)
            return [], None
        return [], f"{name}: cannot import bench/{name}.py: {_why(e)}"
    except Exception as e:
        return [], f"{name}: cannot import bench/{name}.py: {_why(e)}"
    try:
        got = module.run(quick)
    except harness.Skipped as e:
        print(f"{name}: {e}; skipped", flush=True)
        return [], None
    except Exception as e:
        return [], f"{name}: failed: {_why(e)}"
    for line in getattr(module, "NOTES", None) or []:  # a module's own notes (e.g. bench/chat.py's)
        harness.note(line if str(line).startswith(name) else f"{name}: {line}")
    rows = []
    for row in got or []:
        why = check_row(row)
        if why is None:
            rows.append(row)
        else:
            harness.note(f"{name}: bad row dropped: {why}")
    if not rows:
        return [], f"{name}: produced no rows"
    return rows, None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description="socksvc against reference servers, side by side")
    p.add_argument("--quick", action="store_true", help="a smoke run of seconds (figures mean nothing)")
    p.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these ({', '.join(BENCHMARKS)}; and {', '.join(OPTIONAL)}, run only when named)",
    )
    p.add_argument(
        "--json", default=DEFAULT_JSON, metavar="PATH", help="where to write the results (default: %(default)s)"
    )
    p.add_argument(
        "--servers", metavar="NAME[,NAME]", help=f"only these servers ({', '.join(harness.SERVERS)}; default: all)"
    )
    p.add_argument("--rounds", type=int, metavar="N", help="runs per cell, the best one counts (default: 7; quick: 1)")
    p.add_argument("--duration", type=float, metavar="S", help="seconds per run (default: 0.7; quick: 0.2)")
    p.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="only one server process exists at a time (default: all started, idle but the one measured)",
    )
    p.add_argument(
        "--reactor",
        metavar="NAME",
        help="run socksvc under twistd --reactor NAME (e.g. epoll: Twisted's own; default: socksvc's choice)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="socksvc runs N worker processes ([daemon] workers); alone, runs the workers benchmark "
        "(N workers against one process and uvloop: scaling, balance, RSS)",
    )
    args = p.parse_args(argv)
    if args.workers is not None and not 1 <= args.workers <= 256:
        p.error("--workers must be 1 to 256")
    names = selected(args.only, args.workers)
    harness.NOTES.clear()
    harness.overrides.servers = None
    if args.servers:
        chosen = [s.strip() for s in args.servers.split(",") if s.strip()]
        unknown = [s for s in chosen if s not in harness.SERVERS]
        if unknown:
            p.error(f"unknown server {', '.join(unknown)} (known: {', '.join(harness.SERVERS)})")
        harness.overrides.servers = chosen
    if args.rounds is not None and args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.duration is not None and not 0 < args.duration <= 600:
        p.error("--duration must be above 0 and at most 600")
    harness.overrides.rounds = args.rounds
    harness.overrides.duration = args.duration
    harness.overrides.one_at_a_time = args.one_at_a_time
    harness.overrides.reactor = args.reactor
    harness.overrides.workers = args.workers

    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    load_before = loadavg()
    info = machine()
    print(
        f"socksvc bench{' (quick: figures mean nothing)' if args.quick else ''}: {', '.join(names)}; "
        f"{info['cpus']} CPUs, Python {info['python']}, Twisted {info['twisted']}, uvloop {info['uvloop']}; "
        f"load average {' '.join(map(str, load_before))}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for name in names:
        t = time.monotonic()
        got, failure = run_one(name, args.quick)
        if failure:
            print(failure, flush=True)
            failures.append(failure)
            continue
        if got:
            print(f"{name}: {len(got)} rows in {time.monotonic() - t:.0f} s", flush=True)
        rows.extend(got)
    wall = time.monotonic() - t0
    load_after = loadavg()

    print()
    print(table(rows) if rows else "no results")
    summary = worst(rows)
    if summary:
        print()
        print("\n".join(summary))
    if harness.NOTES:
        print()
        print("\n".join(f"note: {n}" for n in harness.NOTES))
    print(f"\n{wall:.0f} s; load average before {load_before}, after {load_after}")

    result = {
        "version": 1,
        "command": ["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])],
        "started": started.isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 1),
        "quick": args.quick,
        "schedule": "one at a time" if args.one_at_a_time else "interleaved",
        "socksvc_reactor": args.reactor or "default",
        "socksvc_workers": args.workers or 1,
        "benchmarks": names,
        "machine": info,
        "loadavg": {"before": load_before, "after": load_after},
        "rows": rows,
        "ratios": ratios(rows),
        "notes": list(harness.NOTES),
        "failures": failures,
    }
    directory = os.path.dirname(os.path.abspath(args.json))
    os.makedirs(directory, exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {args.json}")
    return 1 if failures or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
