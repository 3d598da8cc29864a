"""
The benchmark runner: a real smoke run (python -m bench --quick), and its
table, ratios and failure handling on made-up rows. Nothing here asserts
anything about speed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from bench import __main__ as runner
from bench import harness, load

ROOT = Path(__file__).resolve().parent.parent
MINE = ("echo", "greeting", "udp")


def row(bench: str, case: str, server: str, value: float, higher: bool = True, unit: str = "ops/s") -> dict[str, Any]:
    return {"bench": bench, "case": case, "server": server, "value": value, "unit": unit, "higher_is_better": higher}


def bench_run(tmp_path: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], Any]:
    """C{python -m bench --quick ARGS --json ...}, which must succeed: what it printed, and its JSON."""
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


# -- the smoke run --------------------------------------------------------------------


def test_quick_run_prints_rows_and_writes_json(tmp_path: Path) -> None:
    proc, result = bench_run(tmp_path, timeout=180)
    assert result["quick"] is True
    assert result["schedule"] == "interleaved"
    rows = result["rows"]
    servers = ["socksvc", "twisted", "asyncio"]
    if harness.uvloop_missing() is None:
        servers.append("uvloop")
    for bench in MINE:
        got = {r["server"] for r in rows if r["bench"] == bench}
        assert got == set(servers), (bench, got, result["notes"])
        got_cpu = {r["server"] for r in rows if r["bench"] == f"{bench} cpu"}
        assert got_cpu == set(servers), (bench, got_cpu)
        # the table shows each benchmark with socksvc and every reference
        header = next(line for line in proc.stdout.splitlines() if line.startswith(bench + " "))
        assert header.split()[:3] == [bench, "unit", "socksvc"]
        assert all(s in header for s in servers)
    for r in rows:
        assert runner.check_row(r) is None
        assert r["value"] > 0
        if r["bench"].endswith(" cpu"):  # a share of user CPU, or None when the runs held no clock tick
            assert r["user_share"] is None or 0.0 <= r["user_share"] <= 1.0
    assert result["socksvc_reactor"] == "default"
    ratios = result["ratios"]
    for bench in MINE:
        vs = {r["vs"] for r in ratios if r["bench"] == bench}
        assert vs == set(servers) - {"socksvc"}
    assert ratios
    for r in ratios:
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0, r
        assert f"({r['ratio']:.2f}x)" in proc.stdout


def test_user_and_system_cpu_are_read_for_a_process() -> None:
    user, system = harness.user_system_seconds(os.getpid()) or (-1.0, -1.0)
    assert user > 0 and system >= 0  # this test process has surely run a while in user space
    assert harness.user_system_seconds(2**22 + 1) is None  # no such process


def test_user_share_sums_the_runs() -> None:
    assert harness.user_share([(0.3, 0.1), (0.1, 0.1)]) == 0.667
    assert harness.user_share([(0.0, 0.0)]) is None
    assert harness.user_share([]) is None


def test_reactor_option_reaches_twistds_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    class Stop(Exception):
        pass

    def fake_launch(name: str, cmd: list[str], *a: Any, **k: Any) -> Any:
        seen.append(cmd)
        raise Stop

    monkeypatch.setattr(harness, "launch", fake_launch)
    for reactor, expected in ((None, []), ("epoll", ["--reactor", "epoll"])):
        monkeypatch.setattr(harness.overrides, "reactor", reactor)
        with pytest.raises(Stop), harness.server(harness.SOCKSVC, "echo"):
            pass
        cmd = seen[-1]
        assert cmd[cmd.index("--pidfile=") + 1 : cmd.index("socksvc")] == expected


# -- ratios and the table -------------------------------------------------------------


def test_ratio_is_above_one_when_socksvc_does_better_either_way() -> None:
    assert runner.ratio(row("b", "c", "socksvc", 200), row("b", "c", "twisted", 100)) == 2.0
    # lower is better (e.g. CPU per operation): inverted, so above 1 is still better
    assert runner.ratio(row("b", "c", "socksvc", 10, False), row("b", "c", "twisted", 30, False)) == 3.0
    assert runner.ratio(row("b", "c", "socksvc", 0), row("b", "c", "twisted", 100)) is None


def test_table_groups_by_bench_and_case_with_socksvc_first() -> None:
    rows = [
        row("echo", "1 KiB", "asyncio", 50),
        row("echo", "1 KiB", "socksvc", 100),
        row("echo", "1 KiB", "twisted", 80),
        row("echo", "64 KiB", "socksvc", 10),
        row("chat", "fan-out", "textbook", 4),
        row("chat", "fan-out", "socksvc", 12),
    ]
    text = runner.table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["echo", "unit", "socksvc", "twisted", "asyncio"]
    one = next(line for line in lines if line.startswith("1 KiB"))
    assert one.split() == ["1", "KiB", "ops/s", "100", "80", "(1.25x)", "50", "(2.00x)"]
    sixty_four = next(line for line in lines if line.startswith("64 KiB"))
    assert sixty_four.split()[-2:] == ["-", "-"]  # no reference figures for that case
    assert any(line.split()[:4] == ["chat", "unit", "socksvc", "textbook"] for line in lines)
    assert "(3.00x)" in text
    ratios = runner.ratios(rows)
    assert {(r["case"], r["vs"]): r["ratio"] for r in ratios} == {
        ("1 KiB", "twisted"): 1.25,
        ("1 KiB", "asyncio"): 2.0,
        ("fan-out", "textbook"): 3.0,
    }
    assert runner.worst(rows) == [
        "echo: lowest ratio vs twisted 1.25x (1 KiB); asyncio 2.00x (1 KiB)",
        "chat: lowest ratio vs textbook 3.00x (fan-out)",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "not a row",
        {k: v for k, v in row("b", "c", "s", 1).items() if k != "unit"},
        {**row("b", "c", "s", 1), "value": "fast"},
        {**row("b", "c", "s", 1), "value": float("nan")},
        {**row("b", "c", "s", 1), "value": True},
        {**row("b", "c", "s", 1), "higher_is_better": 1},
    ],
)
def test_bad_rows_are_named(bad: Any) -> None:
    assert runner.check_row(bad) is not None
    assert runner.check_row(row("b", "c", "s", 1.5)) is None


def test_only_selects_known_benchmarks_in_order() -> None:
    assert runner.selected(None) == list(runner.BENCHMARKS)
    assert runner.selected(["udp,echo"]) == ["echo", "udp"]
    assert runner.selected(["greeting", "echo"]) == ["echo", "greeting"]
    with pytest.raises(SystemExit, match="unknown benchmark ecko"):
        runner.selected(["ecko"])


def test_clients_are_split_over_at_most_four_processes() -> None:
    assert harness.split_clients(1) == [1]
    assert harness.split_clients(4) == [1, 1, 1, 1]
    assert harness.split_clients(16) == [4, 4, 4, 4]
    assert harness.split_clients(6) == [2, 2, 1, 1]
    for n in range(1, 40):
        assert sum(harness.split_clients(n)) == n


def test_rounds_rotate_who_goes_first() -> None:
    servers = ["socksvc", "twisted", "asyncio"]
    firsts = [harness._rotate(servers, r)[0] for r in range(3)]
    assert firsts == servers
    assert all(sorted(harness._rotate(servers, r)) == sorted(servers) for r in range(5))
    assert harness._rotate([], 3) == []


def test_socksvc_gets_the_default_settings_and_one_free_port() -> None:
    assert harness.socksvc_config("echo", "tcp") == '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
    assert harness.socksvc_config("udp", "udp") == '[services.echo]\nlisten = ["udp:0:interface=127.0.0.1"]\n'
    assert "[services.greeting]" in harness.socksvc_config("greeting", "tcp")


# -- a benchmark that is missing or fails ------------------------------------------------


def _fake(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType | None) -> None:
    monkeypatch.setitem(sys.modules, "bench.chat", module)  # type: ignore[arg-type]


def test_missing_benchmark_is_one_line_and_not_a_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake(monkeypatch, None)
    assert runner.run_one("chat", True) == ([], None)
    assert capsys.readouterr().out == "chat: bench/chat.py is not there yet; skipped\n"


def test_failing_benchmark_is_one_line_and_the_run_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = types.ModuleType("bench.chat")

    def run(quick: bool) -> list[dict[str, Any]]:
        raise RuntimeError("no chat server here\nsecond line")

    broken.run = run  # type: ignore[attr-defined]
    _fake(monkeypatch, broken)
    rows, failure = runner.run_one("chat", True)
    assert rows == []
    assert failure == "chat: failed: RuntimeError: no chat server here"
    out = tmp_path / "r.json"
    assert runner.main(["--quick", "--only", "chat", "--json", str(out)]) == 1
    result = json.loads(out.read_text())
    assert result["rows"] == []
    assert result["failures"] and result["failures"][0].startswith("chat: failed: RuntimeError")
    assert "chat: failed: RuntimeError" in capsys.readouterr().out


def test_a_benchmark_module_with_the_contract_gets_its_table_and_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = types.ModuleType("bench.chat")
    seen: list[bool] = []

    def run(quick: bool) -> list[dict[str, Any]]:
        seen.append(quick)
        return [
            row("chat", "fan-out, 100 clients", "socksvc", 30000, unit="lines/s"),
            row("chat", "fan-out, 100 clients", "textbook", 10000, unit="lines/s"),
            row("chat", "idle RSS", "socksvc", 2.0, higher=False, unit="KiB/client"),
            row("chat", "idle RSS", "textbook", 5.0, higher=False, unit="KiB/client"),
            {"bench": "chat", "value": 1},  # dropped, with a note
        ]

    fake.run = run  # type: ignore[attr-defined]
    _fake(monkeypatch, fake)
    out = tmp_path / "r.json"
    assert runner.main(["--quick", "--only", "chat", "--json", str(out)]) == 0
    assert seen == [True]
    printed = capsys.readouterr().out
    assert "(3.00x)" in printed and "(2.50x)" in printed
    result = json.loads(out.read_text())
    assert len(result["rows"]) == 4
    assert sorted(r["ratio"] for r in result["ratios"]) == [2.5, 3.0]
    assert any("bad row dropped" in n for n in result["notes"])
    assert result["machine"]["cpus"] == os.cpu_count()


# -- the load client ---------------------------------------------------------------------


def test_load_client_reports_setup_errors_as_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    # a port nothing listens on: bind one, note it, close it
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert load.main(["echo", "127.0.0.1", str(port), "--duration", "0.1"]) == 1
    line = capsys.readouterr().out.strip()
    assert json.loads(line)["error"].startswith("setup: ")


def test_without_uvloop_its_column_is_skipped_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # type: ignore[arg-type]
    monkeypatch.setattr(harness, "NOTES", [])
    assert harness.available_servers() == ["socksvc", "twisted", "asyncio"]
    assert len(harness.NOTES) == 1 and harness.NOTES[0].startswith("uvloop: not importable")


def test_workers_benchmark_quick_run(tmp_path: Path) -> None:
    _, result = bench_run(tmp_path, "--workers", "2", timeout=300)
    assert result["benchmarks"] == ["workers"] and result["socksvc_workers"] == 2
    by = {(r["bench"], r["server"]) for r in result["rows"]}
    for bench in ("workers echo", "workers greeting", "workers echo cpu", "workers greeting cpu"):
        assert {(bench, "socksvc"), (bench, "socksvc-1")} <= by, (bench, result["notes"])
    balance = [r for r in result["rows"] if r["bench"] == "workers balance"]
    assert {r["server"] for r in balance} == {"socksvc", "socksvc-unbalanced"}
    for r in balance:
        assert sum(r["spreads"][0]) >= 16  # every client held by some worker (an earlier cell's may still be closing)
    cost = {(r["case"], r["server"]): r["value"] for r in result["rows"] if r["bench"] == "workers cost"}
    assert cost[("one worker, idle", "socksvc")] > 0 and cost[("supervisor, idle", "socksvc")] > 0


def test_socksvc_server_names() -> None:
    assert runner.selected(None, 2) == ["workers"]
    assert runner.selected(["echo"], 2) == ["echo"]
    assert "workers" not in runner.selected(None)
    harness.overrides.workers = None
    assert harness.socksvc_workers("socksvc") == 1
    assert harness.socksvc_workers("socksvc-1") == 1
    assert harness.socksvc_workers("socksvc-w4") == 4
    assert harness.socksvc_workers("uvloop-w2") is None
    assert "workers = 3" in harness.socksvc_config("echo", "tcp", 3)
    assert "[daemon]" not in harness.socksvc_config("echo", "tcp", 1)


# -- the chat bus benchmark ----------------------------------------------------------------


def test_bus_benchmark_quick_run(tmp_path: Path) -> None:
    from bench import busredis

    if busredis.server_path() is None:
        pytest.skip("redis-server not installed")
    _, result = bench_run(tmp_path, "--only", "bus", timeout=300)
    assert result["benchmarks"] == ["bus"]
    by = {(r["bench"], r["case"], r["server"]): r for r in result["rows"]}
    for bench in ("chat bus fan-out", "chat bus fan-out cpu"):
        assert {s for (b, _, s) in by if b == bench} == {"socksvc", "no bus"}, (bench, result["notes"])
    for p in ("p50", "p99"):
        assert {s for (b, c, s) in by if b == "chat bus latency" and c.startswith(p)} == {"socksvc", "no bus"}
    redis_cases = {c for (b, c, _) in by if b == "chat bus redis"}
    assert "used_memory per 10,000 lines retained" in redis_cases
    assert any(c.startswith("commands/line") for c in redis_cases)
    for r in result["rows"]:
        assert runner.check_row(r) is None, r
        assert r["value"] > 0 or r["bench"].endswith(" cpu"), r  # a tiny run may hold no CPU tick
    assert any(n.startswith("bus: fan-out, bus/no bus per pair") for n in result["notes"])


def test_a_benchmark_that_cannot_run_here_is_skipped_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import bus

    monkeypatch.setattr(bus, "server_path", lambda: None)
    assert runner.run_one("bus", True) == ([], None)
    assert capsys.readouterr().out == "bus: redis-server is not installed; skipped\n"
