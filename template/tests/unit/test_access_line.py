"""The access line's fast path (`JsonAccessLine`) and the request ids the middleware makes."""

import asyncio
import datetime
import io
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import structlog

from app.api.middleware import new_request_id
from app.core import log
from app.core.log import REDACTED, JsonAccessLine, configure_logging
from tests.conftest import SettingsFactory
from tests.helpers import json_lines

UUID4_HEX = re.compile(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}")


class CountingSink(structlog.BytesLogger):
    """A BytesLogger into memory that counts its writes."""

    def __init__(self) -> None:
        self.raw = io.BytesIO()
        self.writes = 0
        super().__init__(self.raw)

    def msg(self, message: bytes) -> None:
        """Count, then write as usual."""
        self.writes += 1
        super().msg(message)

    def lines(self) -> list[dict[str, Any]]:
        """Return the lines written so far, parsed."""
        return json_lines(self.raw.getvalue().decode())


@pytest.fixture
def sink() -> CountingSink:
    """An empty sink."""
    return CountingSink()


@pytest.fixture(autouse=True)
def _bound_context() -> Iterator[None]:
    """Bind what a request binds, plus fields a handler might add; unbind afterwards."""
    structlog.contextvars.clear_contextvars()
    planted = {"api_token": "hunter2", "extra": {"password": "pw", "n": 1}}
    structlog.contextvars.bind_contextvars(request_id="r-1", user="ada", **planted)
    yield
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo a `configure_logging` call that installs the fast path (cached loggers)."""
    saved = structlog.get_config()
    monkeypatch.setattr(log, "_access_line", log._access_line)
    yield
    structlog.configure(**saved)


def test_fast_line_has_the_fields_structlog_renders(
    make_settings: SettingsFactory, sink: CountingSink, restore_logging: None
) -> None:
    """Same keys and values as the structlog chain gives the same event, secrets redacted."""
    through_chain = io.BytesIO()
    configure_logging(
        make_settings(log={"format": "json"}),
        stream=io.TextIOWrapper(through_chain, write_through=True),
        cache_loggers=False,
    )
    log.log_access("GET", "/things", 200, 0.0123456)
    [chain] = json_lines(through_chain.getvalue().decode())

    JsonAccessLine(sink, level=logging.INFO)("GET", "/things", 200, 0.0123456)
    [fast] = sink.lines()

    assert fast.keys() == chain.keys()
    assert {k: v for k, v in fast.items() if k != "timestamp"} == {
        k: v for k, v in chain.items() if k != "timestamp"
    }
    assert fast["api_token"] == REDACTED
    assert fast["extra"] == {"password": REDACTED, "n": 1}
    assert (fast["event"], fast["status"], fast["duration_ms"]) == (
        "request.completed",
        200,
        12.345,  # whole microseconds
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", fast["timestamp"])


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (logging.INFO, [(200, "info"), (503, "error")]),
        (logging.WARNING, [(503, "error")]),
        (logging.CRITICAL, []),
    ],
)
def test_level_filter_drops_lines_below_the_level(
    sink: CountingSink, level: int, expected: list[tuple[int, str]]
) -> None:
    """Successes are info lines, 5xx are error lines; lines below the level are dropped."""
    line = JsonAccessLine(sink, level=level)

    line("GET", "/a", 200, 0.001)
    line("GET", "/b", 503, 0.001)

    assert [(entry["status"], entry["level"]) for entry in sink.lines()] == expected


async def test_lines_of_one_loop_pass_share_one_write(sink: CountingSink) -> None:
    """Nothing is written until the pass ends; then every line, in order, with one write."""
    line = JsonAccessLine(sink, level=logging.INFO)

    for number in range(5):
        line("GET", f"/{number}", 200, 0.001)
    assert sink.writes == 0

    await asyncio.sleep(0)  # lets the loop run the callback scheduled by the first line

    assert sink.writes == 1
    assert [entry["path"] for entry in sink.lines()] == ["/0", "/1", "/2", "/3", "/4"]
    line("GET", "/next", 200, 0.001)
    await asyncio.sleep(0)
    assert sink.writes == 2


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


async def test_a_line_orjson_cannot_encode_loses_nothing(sink: CountingSink) -> None:
    """A bound value orjson cannot encode is written as its repr; its pass's lines all arrive.

    The lines are built when they are written, after their requests ended, so an
    unencodable value must neither raise into the event loop nor take the lines queued
    beside it: an object becomes its repr, and a mapping with keys that are not strings
    (which orjson refuses outright) has every bound value written as its repr.
    """
    line = JsonAccessLine(sink, level=logging.INFO)

    line("GET", "/before", 200, 0.001)
    with structlog.contextvars.bound_contextvars(thing=_Opaque()):
        line("GET", "/object", 200, 0.001)
    with structlog.contextvars.bound_contextvars(counts={1: "one"}):
        line("GET", "/int-keys", 200, 0.001)
    line("GET", "/after", 200, 0.001)
    await asyncio.sleep(0)

    lines = sink.lines()
    assert [entry["path"] for entry in lines] == ["/before", "/object", "/int-keys", "/after"]
    assert lines[1]["thing"] == "<opaque>"
    assert lines[2]["counts"] == "{1: 'one'}"
    assert lines[2]["request_id"] == "'r-1'"  # every bound value, as its repr
    assert lines[2]["api_token"] == repr(REDACTED)  # still redacted first
    assert sink.writes == 1


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


async def test_a_bound_value_that_cannot_even_be_printed_keeps_the_line(
    sink: CountingSink,
) -> None:
    """When a value's repr raises too, the line keeps its own fields and says why."""
    line = JsonAccessLine(sink, level=logging.INFO)

    with structlog.contextvars.bound_contextvars(thing=_Unprintable()):
        line("GET", "/unprintable", 503, 0.001)
    line("GET", "/after", 200, 0.001)
    await asyncio.sleep(0)

    first, after = sink.lines()
    assert (first["path"], first["status"], first["level"]) == ("/unprintable", 503, "error")
    assert first["log_error"] == "the bound context could not be rendered"
    assert "thing" not in first
    assert after["path"] == "/after"


async def test_a_line_holds_the_context_of_its_request(sink: CountingSink) -> None:
    """Built after its request ended, a line still shows what that request had bound."""
    line = JsonAccessLine(sink, level=logging.INFO)

    async def request(request_id: str) -> None:
        structlog.contextvars.bind_contextvars(request_id=request_id)
        await asyncio.sleep(0)
        line("GET", f"/{request_id}", 200, 0.001)

    async with asyncio.TaskGroup() as group:
        for request_id in ("a", "b", "c"):
            group.create_task(request(request_id))
    structlog.contextvars.bind_contextvars(request_id="rebound-later")
    await asyncio.sleep(0)

    assert [(entry["path"], entry["request_id"]) for entry in sink.lines()] == [
        ("/a", "a"),
        ("/b", "b"),
        ("/c", "c"),
    ]


def test_without_an_event_loop_lines_are_written_at_once(sink: CountingSink) -> None:
    """Code outside any event loop (a thread, a script) gets its line written immediately."""
    line = JsonAccessLine(sink, level=logging.INFO)

    line("GET", "/sync", 200, 0.001)

    assert [entry["path"] for entry in sink.lines()] == ["/sync"]


async def test_queued_lines_are_flushed_on_demand_and_at_reconfiguration(
    make_settings: SettingsFactory, restore_logging: None
) -> None:
    """`flush_access_lines` (also run at exit and by `configure_logging`) writes queued lines."""
    out = io.BytesIO()
    stream = io.TextIOWrapper(out, write_through=True)  # kept: collecting it closes `out`
    configure_logging(make_settings(log={"format": "json"}), stream=stream)
    assert isinstance(log._access_line, JsonAccessLine)

    log.log_access("GET", "/queued", 200, 0.001)
    assert out.getvalue() == b""
    configure_logging(
        make_settings(log={"format": "json"}),
        stream=io.TextIOWrapper(io.BytesIO(), write_through=True),
        cache_loggers=False,
    )

    assert [entry["path"] for entry in json_lines(out.getvalue().decode())] == ["/queued"]
    assert log._access_line is log._access_via_structlog


def test_request_ids_are_unique_uuid4_hex() -> None:
    """Ids are version-4 UUIDs (as ``uuid4().hex``), never repeated across buffer refills."""
    ids = [new_request_id() for _ in range(2000)]  # 16 batches of 128

    assert all(UUID4_HEX.fullmatch(request_id) for request_id in ids)
    assert len(set(ids)) == len(ids)


def test_threads_drawing_ids_at_once_never_share_one() -> None:
    """Ids are handed out without a lock; threads racing through refills still get distinct ones."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        batches = list(pool.map(lambda _: [new_request_id() for _ in range(1000)], range(4)))

    ids = [request_id for batch in batches for request_id in batch]
    assert len(set(ids)) == len(ids) == 4000
    assert all(UUID4_HEX.fullmatch(request_id) for request_id in ids)


class _FrozenClock:
    """Stands in for the `datetime` module inside `app.core.log`: `now()` is fixed."""

    UTC = datetime.UTC

    def __init__(self, moment: datetime.datetime) -> None:
        self.datetime = self
        self.moment = moment

    def now(self, tz: datetime.tzinfo) -> datetime.datetime:
        """Return the fixed moment (always UTC here)."""
        assert tz is datetime.UTC
        return self.moment


@pytest.mark.parametrize(
    ("microsecond", "expected"),
    [(7, "2026-01-02T03:04:05.000007Z"), (0, "2026-01-02T03:04:05.000000Z")],
    ids=["fraction", "whole-second"],
)
def test_timestamp_always_has_six_fraction_digits(
    sink: CountingSink, monkeypatch: pytest.MonkeyPatch, microsecond: int, expected: str
) -> None:
    """A zero fraction, which orjson would drop, still gets its six digits in the line."""
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5, microsecond, tzinfo=datetime.UTC)
    monkeypatch.setattr(log, "datetime", _FrozenClock(moment))

    JsonAccessLine(sink, level=logging.INFO)("GET", "/t", 200, 0.001)

    assert sink.lines()[0]["timestamp"] == expected


@pytest.mark.slow  # starts a Python process
def test_a_forked_worker_draws_ids_of_its_own() -> None:
    """After fork the child drops the ids it inherited: parent and child never share one."""
    script = """
import os
from app.api.middleware import new_request_id
new_request_id()  # the batch is now partly used, and would be copied into the child
reader, writer = os.pipe()
child = os.fork()
if child == 0:
    os.write(writer, new_request_id().encode())
    os._exit(0)
os.waitpid(child, 0)
print(new_request_id(), os.read(reader, 64).decode())
"""
    completed = subprocess.run(  # noqa: S603 -- fixed argv, no shell
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )

    parent, child = completed.stdout.split()
    assert UUID4_HEX.fullmatch(parent)
    assert UUID4_HEX.fullmatch(child)
    assert parent != child
