"""One command that measures a rendered keel service against baselines it writes itself.

    uv run python -m bench            # the full run (about 10 minutes)
    uv run python -m bench --smoke    # seconds; what CI runs so the harness cannot rot

See docs/performance.md for what is measured and how to read the results.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import functools
import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import instructions, report
from bench.database import Database
from bench.load import LoadResult, ensure_wrk, run_wrk
from bench.project import (
    ROOT,
    Process,
    Runtime,
    build_runtime,
    clean_env,
    cpu_times,
    get,
    render_command,
    rss_mb,
    run,
    template_snapshot,
    tree_bytes,
)
from tests.server import free_port

BASELINE = Path(__file__).with_name("baseline.py")
SERVICE_CPU, LOAD_CPU = 0, 1
MIB = 1024 * 1024
# The example's reads by primary key, most preferred first, with the query function behind each;
# the DB baselines call the same function. The balance is the single-row read the issue's
# baselines describe; templates from before it existed fall back to the full account read.
_PK_READS = (
    (
        re.compile(r"^/accounts/\{[A-Za-z_]\w*\}/balance$"),
        "app.ledger.service:get_balance",
        "the account's balance: one primary-key select of one row, in autocommit",
    ),
    (
        re.compile(r"^/accounts/\{[A-Za-z_]\w*\}$"),
        "app.ledger.service:get_account",
        "the account row by primary key plus its latest transfers ({seeded} seeded)",
    ),
)


@dataclass(frozen=True)
class Options:
    """How long and how often to measure."""

    smoke: bool
    out: Path
    rounds: int
    warmup: float
    seconds: float
    connections: int
    cold_starts: int
    admin_dsn: str
    keep: bool
    copy_to_green: bool
    ref: str | None
    count_instructions: bool

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> Options:
        """Read the command line."""
        parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
        parser.add_argument("--smoke", action="store_true", help="a few seconds, for CI")
        parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
        parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5; smoke 1)")
        parser.add_argument("--seconds", type=float, help="wrk seconds per measurement")
        parser.add_argument("--warmup", type=float, help="wrk warm-up seconds before each")
        parser.add_argument("--connections", type=int, default=32, help="wrk connections")
        parser.add_argument(
            "--admin-dsn",
            default=os.environ.get(
                "BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
            ),
            help="PostgreSQL URL allowed to CREATE DATABASE (env BENCH_ADMIN_DSN)",
        )
        parser.add_argument(
            "--ref", help="render this commit (e.g. HEAD) instead of the working tree"
        )
        parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
        parser.add_argument(
            "--no-copy-to-green", action="store_true", help="skip the copy-to-green timing"
        )
        parser.add_argument(
            "--no-instructions",
            action="store_true",
            help="skip the instruction counts (valgrind's callgrind, a few minutes)",
        )
        args = parser.parse_args(argv)
        smoke = bool(args.smoke)
        return cls(
            smoke=smoke,
            out=args.out.resolve(),
            rounds=args.rounds or (1 if smoke else 5),
            warmup=args.warmup if args.warmup is not None else (1.0 if smoke else 3.0),
            seconds=args.seconds or (1.0 if smoke else 10.0),
            connections=args.connections,
            cold_starts=2 if smoke else 5,
            admin_dsn=args.admin_dsn,
            keep=bool(args.keep),
            copy_to_green=not (smoke or args.no_copy_to_green),
            ref=args.ref,
            count_instructions=not args.no_instructions,
        )


@dataclass
class Read:
    """The database read every variant serves: keel's path and the baselines' recipe."""

    kind: str  # "pk": the example API's GET by id; "ping": /readyz's SELECT 1
    keel_path: str
    baseline: dict[str, str]
    description: str


@dataclass
class Bench:
    """State of one harness run."""

    options: Options
    work: Path
    raw: Path
    runtime: Runtime | None = None
    project: Path | None = None
    db: Database | None = None
    read: Read | None = None
    loads: dict[str, list[LoadResult]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    counter: int = 0

    def log_path(self, name: str) -> Path:
        """Return a fresh path for one process's output."""
        self.counter += 1
        return self.work / "logs" / f"{self.counter:03d}-{name}.log"

    # -- processes -------------------------------------------------------------------
    def keel_env(self, port: int, **extra: str) -> dict[str, str]:
        """Return the runtime stage's environment pointed at the benchmark database."""
        assert self.runtime is not None and self.db is not None
        return {
            **self.runtime.env,
            "APP_HOST": "127.0.0.1",
            "APP_PORT": str(port),
            "APP_DB__URL": self.db.sqlalchemy_url,
            # Stops between measurements need no load-balancer drain; step_sigterm measures it.
            "APP_SERVER__DRAIN_DELAY": "0",
            **extra,
        }

    def start_keel(self, port: int, *, log: str = "keel", **extra: str) -> Process:
        """Start the Dockerfile's CMD on the service CPU; its output goes to a ``log`` file."""
        return self.start_keel_wrapped(port, None, log=log, **extra)

    def start_keel_wrapped(
        self,
        port: int,
        wrap: Callable[[list[str]], list[str]] | None,
        *,
        log: str = "keel",
        **extra: str,
    ) -> Process:
        """Start the Dockerfile's CMD behind ``wrap`` (valgrind, for instruction counts)."""
        assert self.runtime is not None
        return Process(
            wrap(self.runtime.argv) if wrap else self.runtime.argv,
            env=self.keel_env(port, **extra),
            cwd=self.runtime.workdir,
            log=self.log_path(log),
            cpu=SERVICE_CPU,
        )

    @contextlib.contextmanager
    def serving_keel(self, port: int, *, log: str) -> Iterator[Process]:
        """Start keel, wait until ``/livez`` answers, and always stop it."""
        keel = self.start_keel(port, log=log)
        try:
            keel.wait_ok(port, "/livez")
            yield keel
        finally:
            keel.stop()

    def start_baseline(
        self,
        kind: str,
        port: int,
        read: dict[str, str] | None = None,
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> Process:
        """Start one of the harness's own baselines with the runtime venv's Python.

        ``read`` replaces the read the database variants serve (default: the run's read);
        ``wrap`` puts a command in front (valgrind, for instruction counts).
        """
        assert self.runtime is not None and self.db is not None and self.read is not None
        argv = [str(self.runtime.python), str(self.work / "baseline.py"), kind, f"--port={port}"]
        if kind != "bare":
            argv += [
                f"--db-url={self.db.sqlalchemy_url}",
                f"--read={json.dumps(read or self.read.baseline)}",
                f"--pool-size={self.figures['pool']['size']}",
                f"--max-overflow={self.figures['pool']['overflow']}",
            ]
        return Process(
            wrap(argv) if wrap else argv,
            env=clean_env(),
            cwd=self.work,
            log=self.log_path(kind),
            cpu=SERVICE_CPU,
        )

    def load(self, key: str, process: Process, port: int, path: str) -> LoadResult:
        """Warm up, then measure ``path``; store the result under ``key``."""
        url = f"http://127.0.0.1:{port}{path}"
        o = self.options
        run_wrk(url, seconds=o.warmup, connections=o.connections, cpu=LOAD_CPU)
        n = len(self.loads.setdefault(key, []))
        raw = self.raw / f"{key.replace('/', '-')}-{n + 1}.txt"
        user_before, system_before = cpu_times(process.pid)
        result = run_wrk(url, seconds=o.seconds, connections=o.connections, cpu=LOAD_CPU, raw=raw)
        user_after, system_after = cpu_times(process.pid)
        per_request = 1e6 / max(result.requests, 1)
        user = (user_after - user_before) * per_request
        system = (system_after - system_before) * per_request
        result = dataclasses.replace(
            result,
            cpu_us_per_request=round(user + system, 1),
            cpu_user_us_per_request=round(user, 1),
            cpu_system_us_per_request=round(system, 1),
        )
        if result.non_2xx or result.socket_errors or result.connect_errors:
            self.notes.append(
                f"{key} run {n + 1}: {result.non_2xx} non-2xx, {result.connect_errors} connect "
                f"errors, {result.socket_errors} read/write/timeout errors"
            )
        self.loads[key].append(result)
        return result


def log(message: str) -> None:
    """Print a progress line."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine() -> dict[str, Any]:
    """Describe the machine: CPU model, CPUs, load, kernel, date."""
    model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


# -- steps ----------------------------------------------------------------------------------
def step_render_and_build(bench: Bench) -> None:
    """Render the working tree and build the image's venv; record its size and pool."""
    template, commit = template_snapshot(bench.work / "template", bench.options.ref)
    bench.figures["template_commit"] = commit
    project = bench.work / "project"
    run(render_command(template, project), cwd=bench.work, env=clean_env())
    bench.project = project
    started = time.perf_counter()
    bench.runtime = build_runtime(project, bench.work / "image")
    bench.figures["venv_build_s"] = round(time.perf_counter() - started, 2)
    bench.figures["venv_mb"] = round(tree_bytes(bench.runtime.venv) / MIB, 1)
    versions = run(
        [
            str(bench.runtime.python),
            "-c",
            (
                "import json, platform, importlib.metadata as m;"
                "print(json.dumps({'python': platform.python_version(), **{p: m.version(p) for p in "
                "('fastapi','starlette','uvicorn','uvloop','httptools','sqlalchemy','asyncpg',"
                "'pydantic','structlog','orjson')}}))"
            ),
        ],
        cwd=bench.work,
        env=clean_env(),
    )
    bench.figures["versions"] = json.loads(versions)
    pool = run(
        [
            str(bench.runtime.python),
            "-c",
            (
                "from app.core.config import DatabaseSettings as D, ServerSettings as S; d = D();"
                "print(d.pool_size, d.max_overflow, int(d.pool_pre_ping), d.pre_ping_idle,"
                " S().drain_delay)"
            ),
        ],
        cwd=bench.runtime.workdir,
        env=bench.runtime.env,
    ).split()
    bench.figures["pool"] = {
        "size": int(pool[0]),
        "overflow": int(pool[1]),
        "pre_ping": bool(int(pool[2])),
        "pre_ping_idle_s": float(pool[3]),
    }
    bench.figures["default_drain_delay_s"] = float(pool[4])
    shutil.copy2(BASELINE, bench.work / "baseline.py")


def step_database(bench: Bench) -> None:
    """Create this run's database and pick (and seed) the read endpoint."""
    assert bench.runtime is not None and bench.project is not None
    bench.db = Database(
        bench.runtime.python, bench.options.admin_dsn, f"keel_bench_{uuid.uuid4().hex[:8]}"
    )
    bench.db.create()
    port = free_port()
    with bench.serving_keel(port, log="keel-discover"):
        answer = get(port, "/openapi.json")
    paths: dict[str, Any] = json.loads(answer[1]) if answer and answer[0] == 200 else {}
    readable = [p for p, ops in paths.get("paths", {}).items() if "get" in ops]
    for pattern, call, what in _PK_READS:
        matching = [p for p in readable if pattern.match(p)]
        if matching:
            bench.read = example_read(bench, matching[0], call, what)
            return
    bench.read = ping_read()


def ping_read() -> Read:
    """The service has no example API: measure /readyz, one SELECT 1 through the pool."""
    return Read(
        kind="ping",
        keel_path="/readyz",
        baseline={"kind": "ping", "path": "/readyz"},
        description="GET /readyz: SELECT 1 through the pool (the rendered service has no "
        "example read endpoint)",
    )


# Creates the tables the ORM models declare but the migrations did not (prints their names).
_CREATE_MISSING = """
import asyncio, importlib, pkgutil
import app.models
from sqlalchemy import inspect
from app.core.config import get_settings
from app.core.db import Base, create_engine

for module in pkgutil.walk_packages(app.models.__path__, "app.models."):
    importlib.import_module(module.name)

async def main():
    engine = create_engine(get_settings())
    async with engine.begin() as connection:
        existing = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
        await connection.run_sync(Base.metadata.create_all)
    await engine.dispose()
    print(*sorted(set(Base.metadata.tables) - existing))

asyncio.run(main())
"""


def example_read(bench: Bench, path: str, call: str, what: str) -> Read:
    """Migrate the schema, seed accounts and transfers, and read one account by id at ``path``.

    ``call`` names the query function behind ``path``; ``what`` describes the read.
    """
    assert bench.runtime is not None and bench.db is not None
    env = {**bench.runtime.env, "APP_DB__URL": bench.db.sqlalchemy_url}
    run(
        [str(bench.runtime.python), "-m", "app.migrate", "upgrade", "head"],
        cwd=bench.runtime.workdir,
        env=env,
    )
    created = run(
        [str(bench.runtime.python), "-c", _CREATE_MISSING], cwd=bench.runtime.workdir, env=env
    ).split()
    if created:
        bench.notes.append(
            f"the migrations did not create {', '.join(created)}; the harness created them from "
            "the ORM metadata"
        )
    port = free_port()
    with bench.serving_keel(port, log="keel-seed"):
        first = post(
            port,
            "/accounts",
            {"owner": "Bench One", "currency": "EUR", "opening_balance": "1000.00"},
        )
        second = post(port, "/accounts", {"owner": "Bench Two", "currency": "EUR"})
        for number in range(SEED_TRANSFERS):
            post(
                port,
                "/transfers",
                {
                    "from_account_id": first["id"],
                    "to_account_id": second["id"],
                    "amount": f"{number + 1}.25",
                    "currency": "EUR",
                },
                headers={"idempotency-key": f"bench-{number}"},
            )
    parameter = re.compile(r"\{[A-Za-z_]\w*\}")
    return Read(
        kind="pk",
        keel_path=parameter.sub(str(first["id"]), path),
        baseline={"kind": "call", "path": parameter.sub("{item_id}", path), "call": call},
        description=f"GET {path} of the example API: {what.format(seeded=SEED_TRANSFERS)}; "
        f"baselines (b) and (c) call the same query function ({call})",
    )


SEED_TRANSFERS = 5


def post(
    port: int, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """POST JSON to the service and return the JSON answer; raise unless it is a 2xx."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "POST", path, json.dumps(body), {"content-type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    if not 200 <= response.status < 300:
        raise RuntimeError(f"POST {path} {body} answered {response.status}: {payload!r}")
    answer: dict[str, Any] = json.loads(payload)
    return answer


def step_cold_start(bench: Bench) -> None:
    """Exec to the first 200 on /livez, ``cold_starts`` times."""
    runs, idle = [], []
    for _ in range(bench.options.cold_starts):
        port = free_port()
        keel = bench.start_keel(port)
        try:
            runs.append(keel.wait_ok(port, "/livez", poll=0.002))
            idle.append(rss_mb(keel.pid))
        finally:
            keel.stop()
    bench.figures["cold_start_s"] = {"median": median(runs), "runs": rounded(runs)}
    bench.figures["rss_idle_mb"] = {"median": median(idle, 1), "runs": rounded(idle, 1)}


# keel's read again with features switched off, each in every round: what the ratio to (b)
# would be without them, measured in the same run rather than argued.
ABLATIONS: dict[str, dict[str, str]] = {
    "keel-quiet/read": {"APP_LOG__ACCESS": "false"},
    "keel-unguarded/read": {
        "APP_LOG__ACCESS": "false",
        "APP_DB__POOL_PRE_PING": "false",
        "APP_DB__STATEMENT_TIMEOUT": "0",
    },
}


def step_rounds(bench: Bench) -> None:
    """Interleave keel and the baselines, one fresh process each, ``rounds`` times."""
    assert bench.read is not None
    read = bench.read
    rss: dict[str, list[float]] = {"keel": [], "bare": [], "pool": [], "naive": []}
    # keel's read with other settings, each in a process of its own after keel's.
    keel_reads: dict[str, dict[str, str]] = {}
    if bench.figures["pool"]["pre_ping_idle_s"] > 0:
        # The same service pinging on every checkout, as SQLAlchemy's pool_pre_ping does.
        keel_reads["keel-ping/read"] = {"APP_DB__PRE_PING_IDLE": "0"}
    keel_reads.update(ABLATIONS)
    for number in range(1, bench.options.rounds + 1):
        log(f"round {number}/{bench.options.rounds}")
        port = free_port()
        with_keel = bench.start_keel(port)
        try:
            with_keel.wait_ok(port, "/livez")
            bench.load("keel/livez", with_keel, port, "/livez")
            bench.load("keel/read", with_keel, port, read.keel_path)
            rss["keel"].append(rss_mb(with_keel.pid))
        finally:
            with_keel.stop()
        for key, settings in keel_reads.items():
            port = free_port()
            variant = bench.start_keel(port, log=key.partition("/")[0], **settings)
            try:
                variant.wait_ok(port, "/livez")
                bench.load(key, variant, port, read.keel_path)
            finally:
                variant.stop()
        for kind, key, path in (
            ("bare", "bare/livez", "/livez"),
            ("pool", "pool/read", read.keel_path),
            ("naive", "naive/read", read.keel_path),
        ):
            port = free_port()
            process = bench.start_baseline(kind, port)
            try:
                process.wait_ok(port, path)
                bench.load(key, process, port, path)
                rss[kind].append(rss_mb(process.pid))
            finally:
                process.stop()
    bench.figures["rss_mb"] = {"median": median(rss["keel"], 1), "runs": rounded(rss["keel"], 1)}
    # The same figure for each baseline, after its own load: what the stack alone holds.
    bench.figures["rss_by_variant_mb"] = {
        kind: {"median": median(runs, 1), "runs": rounded(runs, 1)} for kind, runs in rss.items()
    }


def step_stack_rss(bench: Bench) -> None:
    """RSS after load of the stack alone: FastAPI, uvicorn, SQLAlchemy and asyncpg, no keel code.

    Baseline (b) serving ``SELECT 1`` (no import of the rendered ``app``) through a pool of
    keel's size, under the same warm-up and load as one round's read. keel's RSS above this
    is what its own code and its other dependencies hold.
    """
    path = "/ping"
    port = free_port()
    process = bench.start_baseline("pool", port, read={"kind": "ping", "path": path})
    try:
        process.wait_ok(port, path)
        bench.load("stack/ping", process, port, path)
        bench.figures["rss_stack_mb"] = round(rss_mb(process.pid), 1)
    finally:
        process.stop()


# Instruction counts: (connections, warm-up requests, counted requests) per path. /livez uses more
# connections so that, as under wrk, several requests share an event-loop pass; the DB read
# uses fewer than the pool holds, so no request waits for a connection.
COUNT_LIVEZ, COUNT_READ = (16, 1_600, 2_992), (4, 1_600, 2_000)
SMOKE_COUNT_LIVEZ, SMOKE_COUNT_READ = (16, 64, 64), (4, 64, 64)
# Under valgrind the service starts about fifty times slower than on its own.
VALGRIND_START_BUDGET_S = 600.0


def step_instructions(bench: Bench) -> None:
    """Count instructions per request for keel, (a) and (b) under callgrind.

    keel serves both paths from one process; (a) and (b) one each. Each count follows its
    own warm-up. Skipped, with a note, when valgrind is not installed.
    """
    assert bench.read is not None
    missing = instructions.missing_tools()
    if missing:
        bench.notes.append(
            f"instructions not counted: {', '.join(missing)} not found (Debian package valgrind)"
        )
        return
    livez, read = (
        (SMOKE_COUNT_LIVEZ, SMOKE_COUNT_READ) if bench.options.smoke else (COUNT_LIVEZ, COUNT_READ)
    )
    dumps = bench.work / "callgrind"
    dumps.mkdir(exist_ok=True)
    counted: dict[str, instructions.Count] = {}
    plans: list[tuple[str, Callable[..., Process], list[tuple[str, str, tuple[int, int, int]]]]] = [
        (
            "keel",
            lambda port, wrap: bench.start_keel_wrapped(port, wrap, log="keel-callgrind"),
            [("keel/livez", "/livez", livez), ("keel/read", bench.read.keel_path, read)],
        ),
        (
            "bare",
            functools.partial(bench.start_baseline, "bare"),
            [("bare/livez", "/livez", livez)],
        ),
        (
            "pool",
            functools.partial(bench.start_baseline, "pool"),
            [("pool/read", bench.read.keel_path, read)],
        ),
    ]
    for name, start, paths in plans:
        prefix = dumps / name
        port = free_port()
        process = start(port, wrap=functools.partial(instructions.callgrind_argv, out=prefix))
        try:
            process.wait_ok(port, paths[0][1], budget=VALGRIND_START_BUDGET_S)
            for key, path, (connections, warmup, requests) in paths:
                log(f"instructions: {key}")
                counted[key] = instructions.count(
                    process.pid,
                    prefix,
                    port,
                    path,
                    connections=connections,
                    warmup=warmup,
                    requests=requests,
                    cpu=LOAD_CPU,
                )
        finally:
            process.stop(timeout=VALGRIND_START_BUDGET_S)
    bench.figures["instructions"] = {key: count.to_json() for key, count in counted.items()}


def step_sigterm(bench: Bench) -> None:
    """SIGTERM under load on the read endpoint: seconds to exit, exit code, failed requests."""
    assert bench.read is not None
    results = {}
    variants: dict[str, dict[str, str]] = {"no_drain": {}}
    if not bench.options.smoke:
        variants["default_drain"] = {
            "APP_SERVER__DRAIN_DELAY": str(bench.figures["default_drain_delay_s"])
        }
    for name, extra in variants.items():
        port = free_port()
        keel = bench.start_keel(port, **extra)
        keel.wait_ok(port, "/livez")
        lasting = 2.0 if bench.options.smoke else 10.0
        loaded: list[LoadResult | Exception] = []

        def load(
            port: int = port, lasting: float = lasting, out: list[Any] = loaded, name: str = name
        ) -> None:
            try:
                out.append(
                    run_wrk(
                        f"http://127.0.0.1:{port}{bench.read.keel_path}",  # type: ignore[union-attr]
                        seconds=lasting,
                        connections=bench.options.connections,
                        cpu=LOAD_CPU,
                        raw=bench.raw / f"sigterm-{name}.txt",
                    )
                )
            except Exception as error:  # noqa: BLE001 -- reported, never hidden
                out.append(error)

        thread = threading.Thread(target=load)
        thread.start()
        time.sleep(1.0)
        signalled = time.perf_counter()
        keel.terminate()
        code = keel.popen.wait(timeout=120)
        seconds = time.perf_counter() - signalled
        keel.stop()
        thread.join()
        text = keel.log.read_text(errors="replace")
        server_errors = len(re.findall(r'"status":\s*5\d\d', text))
        outcome = loaded[0] if loaded else None
        results[name] = {
            "exit_s": round(seconds, 3),
            "exit_code": code,
            "access_log_5xx": server_errors,
            "load": outcome.to_json() if isinstance(outcome, LoadResult) else repr(outcome),
        }
    bench.figures["sigterm"] = results


def _timed_suite(
    target: Path, env: dict[str, str], log: Path, *extra: str
) -> tuple[float, str, bool]:
    """Run the rendered project's pytest; return wall seconds, its summary line, and success.

    A failing run's whole output is kept in ``log``.
    """
    mark = time.perf_counter()
    suite = subprocess.run(
        ["uv", "run", "--locked", "pytest", "-q", "-p", "no:cacheprovider", *extra],
        cwd=target,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    seconds = time.perf_counter() - mark
    summary = (suite.stdout.strip().splitlines() or ["(no output)"])[-1]
    if suite.returncode:
        log.write_text(suite.stdout + suite.stderr)
    return seconds, summary, suite.returncode == 0


def step_copy_to_green(bench: Bench) -> None:
    """Warm uv's cache, then time render + ``uv sync --locked`` + the rendered suite.

    The suite is what a new user runs first, a bare ``uv run pytest`` (the fast tier); the
    full run CI makes (``-m "slow or not slow"``) is timed after it, both without a database
    URL, as on a fresh laptop. Bytecode is written as usual: a shell's
    ``PYTHONDONTWRITEBYTECODE`` would make every test process compile its imports again.
    """
    assert bench.project is not None
    template = bench.work / "template"
    env = clean_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    run(["uv", "sync", "--locked", "--quiet"], cwd=bench.project, env=env)  # warm the cache
    target = bench.work / "copy-to-green"
    parts: dict[str, float] = {}
    started = time.perf_counter()
    run(render_command(template, target), cwd=bench.work, env=env)
    parts["render_s"] = time.perf_counter() - started
    mark = time.perf_counter()
    run(["uv", "sync", "--locked", "--quiet"], cwd=target, env=env)
    parts["sync_s"] = time.perf_counter() - mark
    parts["suite_s"], summary, green = _timed_suite(
        target, env, bench.raw / "copy-to-green-suite.txt"
    )
    total = time.perf_counter() - started
    full_s, full_summary, full_green = _timed_suite(
        target, env, bench.raw / "copy-to-green-full-suite.txt", "-m", "slow or not slow"
    )
    bench.figures["copy_to_green_s"] = {
        "total": round(total, 2),
        **{k: round(v, 2) for k, v in parts.items()},
        "green": green,
        "summary": summary,
        "full_suite_s": round(full_s, 2),
        "full_green": full_green,
        "full_summary": full_summary,
    }
    for name, ok, line in (("fast tier", green, summary), ("full run", full_green, full_summary)):
        if not ok:
            bench.notes.append(f"copy-to-green: the rendered suite's {name} was not green: {line}")


def median(values: list[float], digits: int = 3) -> float:
    """Return the median, rounded for the report."""
    return round(statistics.median(values), digits)


def rounded(values: list[float], digits: int = 3) -> list[float]:
    """Round every value for the report."""
    return [round(v, digits) for v in values]


def main(argv: list[str] | None = None) -> int:
    """Run the harness; return the process exit code."""
    options = Options.parse(argv)
    ensure_wrk()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("bench: needs 2 CPUs, one for the service and one for wrk")
    options.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    (work / "logs").mkdir()
    raw = options.out / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir()
    bench = Bench(options=options, work=work, raw=raw)
    info = machine()
    info["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    started = time.perf_counter()
    steps: list[tuple[str, Callable[[Bench], None]]] = [
        ("render the working tree and build the runtime venv", step_render_and_build),
        ("create the database and pick the read endpoint", step_database),
        ("cold starts", step_cold_start),
        ("interleaved load rounds", step_rounds),
        ("the stack's own RSS", step_stack_rss),
        ("SIGTERM under load", step_sigterm),
    ]
    if options.count_instructions:
        steps.append(("instructions per request (callgrind)", step_instructions))
    if options.copy_to_green:
        steps.append(("copy-to-green", step_copy_to_green))
    try:
        for title, step in steps:
            log(title)
            step(bench)
    finally:
        if bench.db is not None:
            bench.db.drop()
        for path in (work / "logs").glob("*.log"):
            shutil.copy2(path, raw / path.name)
        if options.keep:
            log(f"scratch directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    info["duration_s"] = round(time.perf_counter() - started, 1)
    assert bench.read is not None
    results = report.build(
        machine=info,
        options={
            "smoke": options.smoke,
            "rounds": options.rounds,
            "warmup_s": options.warmup,
            "seconds": options.seconds,
            "connections": options.connections,
            "cold_starts": options.cold_starts,
            "service_cpu": SERVICE_CPU,
            "load_cpu": LOAD_CPU,
        },
        read=bench.read.__dict__,
        loads={k: [r.to_json() for r in v] for k, v in bench.loads.items()},
        figures=bench.figures,
        notes=bench.notes,
    )
    report.write(results, options.out)
    log(f"wrote {options.out}/results.json, results.md and results.png")
    print((options.out / "results.md").read_text())
    return 0
