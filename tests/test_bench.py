"""The benchmark harness (bench/) still runs end to end: its smoke mode, checked for sane output.

Timing targets are not asserted here (the machine is shared and noisy); the full run and its
targets live in docs/performance.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.run import ABLATIONS
from tests.helpers import ROOT

VARIANTS = (
    "keel/livez",
    "bare/livez",
    "keel/read",
    "keel-quiet/read",
    "keel-unguarded/read",
    "pool/read",
    "naive/read",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_smoke(out: Path) -> None:
    """Run `python -m bench --smoke` into ``out``; fail with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", f"--out={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def results(out: Path) -> dict[str, Any]:
    """Load results.json."""
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    return data


@pytest.mark.slow
@pytest.mark.xdist_group("saturates-cpus")  # wrk and the service take both CPUs; see test_generated
def test_smoke_run_produces_sane_results(tmp_path: Path) -> None:
    """One smoke run (a single test, so xdist never starts two) yields every output, sanely."""
    if shutil.which("wrk") is None and os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("the benchmark needs wrk: `apt-get install wrk` (CI installs it)")

    run_smoke(tmp_path)

    check_every_variant(tmp_path)
    check_process_figures(tmp_path)
    check_table_chart_and_machine(tmp_path)
    check_instruction_counts(tmp_path)
    check_ablations(tmp_path)


def check_every_variant(smoke: Path) -> None:
    """Every variant served real traffic without errors: positive req/s and ordered latencies."""
    data = results(smoke)

    assert set(VARIANTS) <= set(data["medians"])
    for variant in VARIANTS:
        for run in data["runs"][variant]:
            assert run["requests"] > 0, variant
            assert run["non_2xx"] == 0, variant
            assert run["socket_errors"] == 0, variant
            assert 0 < run["p50_ms"] <= run["p99_ms"], variant
            assert run["cpu_us_per_request"] > 0, variant
            # The split is read from the same two /proc samples as the total.
            user, system = run["cpu_user_us_per_request"], run["cpu_system_us_per_request"]
            assert user > 0, variant
            assert system >= 0, variant
            assert abs(user + system - run["cpu_us_per_request"]) <= 0.2, variant
    assert data["read"]["kind"] in {"pk", "ping"}


def check_process_figures(smoke: Path) -> None:
    """Cold start, RSS, venv size and SIGTERM exit are measured and plausible."""
    figures = results(smoke)["figures"]

    assert 0 < figures["cold_start_s"]["median"] < 60
    assert 10 < figures["rss_mb"]["median"] < 2000
    by_variant = figures["rss_by_variant_mb"]
    assert by_variant["keel"] == figures["rss_mb"]
    for kind in ("bare", "pool", "naive"):
        assert 10 < by_variant[kind]["median"] < 2000, kind
    # (a) imports no SQLAlchemy, so it holds less than any variant that does.
    assert by_variant["bare"]["median"] < min(by_variant[k]["median"] for k in ("keel", "pool"))
    assert by_variant["bare"]["median"] < figures["rss_stack_mb"] < 2000
    (stack_load,) = results(smoke)["runs"]["stack/ping"]
    assert stack_load["requests"] > 0
    assert stack_load["non_2xx"] == stack_load["socket_errors"] == 0
    assert 1 < figures["venv_mb"] < 2000
    sigterm = figures["sigterm"]["no_drain"]
    assert sigterm["exit_code"] == 0
    assert 0 < sigterm["exit_s"] < 30
    assert sigterm["access_log_5xx"] == 0


def check_table_chart_and_machine(smoke: Path) -> None:
    """The markdown table names each variant and target; the chart is a real PNG."""
    data = results(smoke)
    table = (smoke / "results.md").read_text()
    chart = (smoke / "results.png").read_bytes()

    assert data["machine"]["cpu_model"]
    assert data["machine"]["date"]
    assert "| variant | req/s | p50 ms | p99 ms |" in table
    assert "bare FastAPI" in table
    assert "connection per request" in table
    keel = data["medians"]["keel/livez"]
    split = (
        f"| {keel['cpu_us_per_request']:,.0f} ({keel['cpu_user_us_per_request']:,.0f} + "
        f"{keel['cpu_system_us_per_request']:,.0f}) |"
    )
    assert split in table
    assert len(data["targets"]) == 7
    for target in data["targets"]:
        assert f"| {target['name']}" in table
    sizes = {t["name"]: t for t in data["targets"] if t["target"].endswith(" MB")}
    rss = sizes["RSS after load, one worker (median)"]
    assert rss["target"] == "≤ 80 MB"
    assert rss["value"] == round(data["figures"]["rss_mb"]["median"] * 1.048576, 1)
    assert rss["met"] is (rss["value"] <= 80)
    assert "RSS after load, median MiB: keel" in table
    assert "RSS after load of the stack alone" in table
    assert chart.startswith(PNG_MAGIC)
    assert len(chart) > 10_000


def check_instruction_counts(smoke: Path) -> None:
    """callgrind counted every variant's requests, and the target notes carry the ratios."""
    data = results(smoke)
    assert "instructions" in data["figures"], data["notes"]  # valgrind missing, say
    counted = data["figures"]["instructions"]
    table = (smoke / "results.md").read_text()

    assert set(counted) == {"keel/livez", "bare/livez", "keel/read", "pool/read"}
    for key, count in counted.items():
        assert count["requests"] > 0, key
        assert count["requests"] % count["connections"] == 0, key
        # A request through FastAPI and uvicorn takes hundreds of thousands of instructions;
        # a count of the idle process or of the whole run would be far outside this range.
        assert 100_000 < count["per_request"] < 20_000_000, key
        assert count["per_request"] == round(count["instructions"] / count["requests"]), key
    # The database read does strictly more than /livez in the same process.
    assert counted["keel/read"]["per_request"] > counted["keel/livez"]["per_request"]
    ratio = counted["bare/livez"]["per_request"] / counted["keel/livez"]["per_request"]
    assert f"by instructions per request: {ratio:.3f}x" in table
    assert "| instructions per request (callgrind) |" in table


def check_ablations(smoke: Path) -> None:
    """The variants with features off really ran without them, and the table compares them."""
    raw = smoke / "raw"
    keel_logs = sorted(raw.glob("*-keel.log"))
    quiet_logs = sorted(raw.glob("*-keel-quiet.log")) + sorted(raw.glob("*-keel-unguarded.log"))
    assert keel_logs
    assert len(quiet_logs) == 2 * results(smoke)["options"]["rounds"]
    assert all("request.completed" in log.read_text() for log in keel_logs)
    # Served the whole load, yet wrote no access line: the switch took effect.
    assert not any("request.completed" in log.read_text() for log in quiet_logs)
    table = (smoke / "results.md").read_text()
    assert "| keel DB read with features switched off ÷ (b), the same run | access line off: " in (
        table
    )
    assert "; access line, idle pre-ping and statement timeout off: " in table


def test_ablations_name_real_settings() -> None:
    """Each variable an ablation sets is a setting the template documents (no silent typo)."""
    documented = {
        line.partition("=")[0]
        for line in (ROOT / "template" / ".env.example").read_text().splitlines()
        if line.startswith("APP_")
    }
    switched = {name for settings in ABLATIONS.values() for name in settings}

    assert switched
    assert switched <= documented
