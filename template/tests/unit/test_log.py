import io
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from app.core.config import Settings
from app.core.log import REDACTED, configure_logging, is_sensitive_key, redact_secrets
from tests.conftest import SettingsFactory
from tests.helpers import json_lines


class Output:
    """A byte-backed text stream like stdout, so both structlog paths can write to it."""

    def __init__(self, *, tty: bool = False) -> None:
        self.raw = io.BytesIO()
        self.tty = tty
        self.stream = _Stream(self.raw, tty=tty)

    def text(self) -> str:
        """Return what was written so far."""
        return self.raw.getvalue().decode()

    def lines(self) -> list[dict[str, Any]]:
        """Return the written lines, each parsed as JSON."""
        return json_lines(self.text())


class _Stream(io.TextIOWrapper):
    def __init__(self, raw: io.BytesIO, *, tty: bool) -> None:
        super().__init__(raw, encoding="utf-8", write_through=True)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.fixture
def output() -> Output:
    """A fresh non-terminal output stream."""
    return Output()


def _configure(settings: Settings, output: Output) -> None:
    configure_logging(settings, stream=output.stream, cache_loggers=False)


def test_json_line_has_timestamp_level_event(
    make_settings: SettingsFactory, output: Output
) -> None:
    """Each event is one JSON object with an ISO UTC timestamp, the level and the event."""
    _configure(make_settings(), output)

    structlog.get_logger().info("order.placed", order_id=7)

    [line] = output.lines()
    assert line["event"] == "order.placed"
    assert line["level"] == "info"
    assert line["order_id"] == 7
    assert datetime.fromisoformat(line["timestamp"]).utcoffset() == UTC.utcoffset(None)


def test_level_below_threshold_dropped(make_settings: SettingsFactory, output: Output) -> None:
    """Events below APP_LOG__LEVEL are not written."""
    _configure(make_settings(log={"level": "WARNING"}), output)

    structlog.get_logger().info("quiet")
    structlog.get_logger().warning("loud")

    assert [line["event"] for line in output.lines()] == ["loud"]


def test_contextvars_are_merged(make_settings: SettingsFactory, output: Output) -> None:
    """Values bound with bind_contextvars appear on every line."""
    _configure(make_settings(), output)

    with structlog.contextvars.bound_contextvars(request_id="r-1"):
        structlog.get_logger().info("inside")

    assert output.lines()[0]["request_id"] == "r-1"


@pytest.mark.parametrize(
    "logger_name", ["uvicorn.error", "uvicorn", "sqlalchemy.pool", "some.library"]
)
def test_stdlib_records_become_json(
    make_settings: SettingsFactory, output: Output, logger_name: str
) -> None:
    """Records from the logging module, uvicorn's included, render as the same JSON."""
    _configure(make_settings(), output)

    logging.getLogger(logger_name).warning("Started %s process", "server")

    [line] = output.lines()
    assert line["event"] == "Started server process"
    assert line["level"] == "warning"
    assert line["logger"] == logger_name
    assert "timestamp" in line


def test_stdlib_records_get_request_id(make_settings: SettingsFactory, output: Output) -> None:
    """Library log lines written during a request carry its request id too."""
    _configure(make_settings(), output)

    with structlog.contextvars.bound_contextvars(request_id="r-2"):
        logging.getLogger("uvicorn.error").error("boom")

    assert output.lines()[0]["request_id"] == "r-2"


def _fail_with_secret_local() -> None:
    password = "canary-hunter2"  # noqa: S105 -- the secret the test looks for
    raise RuntimeError(f"failed after {len(password)} characters")


@pytest.mark.parametrize("source", ["structlog", "stdlib"])
def test_exception_structured_without_locals(
    make_settings: SettingsFactory, output: Output, source: str
) -> None:
    """Tracebacks are structured frames and never include local variables."""
    _configure(make_settings(), output)

    try:
        _fail_with_secret_local()
    except RuntimeError:
        if source == "structlog":
            structlog.get_logger().exception("job.failed")
        else:
            logging.getLogger("worker").exception("job failed")

    [line] = output.lines()
    assert "canary-hunter2" not in output.text()
    assert line["exception"][0]["exc_type"] == "RuntimeError"
    assert line["exception"][0]["frames"][-1]["name"] == "_fail_with_secret_local"
    assert "locals" not in line["exception"][0]["frames"][-1]


@pytest.mark.parametrize(
    "key",
    ["password", "DB_PASSWORD", "Authorization", "api_key", "X-Api-Key", "set-cookie", "token"],
)
def test_sensitive_keys_detected(key: str) -> None:
    """Secret-looking keys are recognised in any case and with dashes."""
    assert is_sensitive_key(key)


@pytest.mark.parametrize("key", ["user_id", "path", "status", "duration_ms"])
def test_ordinary_keys_kept(key: str) -> None:
    """Ordinary keys are not redacted."""
    assert not is_sensitive_key(key)


def test_redaction_reaches_nested_values() -> None:
    """Secrets inside dicts and lists are replaced, the rest is kept."""
    event = {
        "event": "call",
        "password": "canary",
        "headers": {"Authorization": "Bearer canary", "accept": "json"},
        "items": [{"token": "canary", "id": 1}],
    }

    redacted = redact_secrets(None, "info", event)

    assert redacted == {
        "event": "call",
        "password": REDACTED,
        "headers": {"Authorization": REDACTED, "accept": "json"},
        "items": [{"token": REDACTED, "id": 1}],
    }


def test_redaction_in_written_output(make_settings: SettingsFactory, output: Output) -> None:
    """A logged secret never reaches the stream, from structlog or from logging."""
    _configure(make_settings(), output)

    structlog.get_logger().info("login", password="canary-1", user="ann")  # noqa: S106 -- test secret
    with structlog.contextvars.bound_contextvars(api_key="canary-2"):
        logging.getLogger("lib").info("call")

    assert "canary" not in output.text()
    assert output.lines()[0]["user"] == "ann"


@pytest.mark.parametrize(
    ("log_format", "tty", "expect_json"),
    [("auto", False, True), ("auto", True, False), ("json", True, True), ("console", False, False)],
    ids=["auto-pipe", "auto-tty", "json-forced", "console-forced"],
)
def test_format_choice(
    make_settings: SettingsFactory, log_format: str, *, tty: bool, expect_json: bool
) -> None:
    """Format auto means JSON unless the stream is a terminal; json/console force a renderer."""
    output = Output(tty=tty)
    _configure(make_settings(log={"format": log_format}), output)

    structlog.get_logger().info("hello", n=1)
    logging.getLogger("lib").warning("from stdlib")

    text = output.text()
    assert text.startswith("{") is expect_json
    assert "hello" in text
    assert "from stdlib" in text


@pytest.mark.parametrize(("echo", "level"), [(True, logging.INFO), (False, logging.WARNING)])
def test_db_echo_controls_sqlalchemy_logger(
    make_settings: SettingsFactory, output: Output, *, echo: bool, level: int
) -> None:
    """APP_DB__ECHO turns SQL statement logging on through the shared pipeline."""
    _configure(make_settings(db={"echo": echo}), output)

    assert logging.getLogger("sqlalchemy.engine").level == level


def test_uvicorn_loggers_propagate_to_root(make_settings: SettingsFactory, output: Output) -> None:
    """The uvicorn loggers lose their own handlers, so only the root handler writes."""
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler(io.StringIO()))
    _configure(make_settings(), output)

    logger = logging.getLogger("uvicorn.error")

    assert logger.handlers == []
    assert logger.propagate
