"""Structured logging: structlog for the service; stdlib and uvicorn records share its output."""

import asyncio
import atexit
import contextvars
import datetime
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TextIO

import orjson
import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

from app.core.config import Settings

REDACTED = "[REDACTED]"

# Substrings of field names whose values never reach the logs (OWASP logging cheat sheet,
# "data to exclude"). Matching is case-insensitive and treats "-" like "_".
SENSITIVE_KEY_MARKERS = (
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "credential",
    "dsn",
    "passwd",
    "password",
    "private_key",
    "secret",
    "session_id",
    "sessionid",
    "token",
)

# Libraries whose loggers are routed through the same formatter; their own handlers are removed
# so that every line on stdout is one JSON object.
_BRIDGED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "sqlalchemy")


@functools.lru_cache(maxsize=2048)
def is_sensitive_key(key: str) -> bool:
    """Tell whether values stored under ``key`` must be redacted.

    Args:
        key: A field name of a log event or of a mapping inside one.

    Returns:
        True if the key names a secret or personal data.
    """
    normalised = key.lower().replace("-", "_")
    return any(marker in normalised for marker in SENSITIVE_KEY_MARKERS)


# Values of these types hold no nested keys; checking them first keeps the common case to one
# `type()` lookup instead of an isinstance() against the Mapping ABC (slow) for every field.
_SCALARS = frozenset({str, int, float, bool, type(None), bytes})


def _redact_nested(value: object) -> object:
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and is_sensitive_key(key)
            else _redact_nested(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_nested(item) for item in value]
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace the values of sensitive keys, at any depth, with ``[REDACTED]``.

    Args:
        _logger: Unused; part of the processor protocol.
        _method: Unused; part of the processor protocol.
        event_dict: The event being logged.

    Returns:
        The same event with secrets replaced.
    """
    for key, value in event_dict.items():
        if is_sensitive_key(key):
            event_dict[key] = REDACTED
        elif type(value) not in _SCALARS and isinstance(value, Mapping | list | tuple):
            event_dict[key] = _redact_nested(value)
    return event_dict


class UtcTimestamper:
    """Add ``timestamp``: ISO 8601 UTC with microseconds, e.g. ``2025-01-31T09:30:00.123456Z``.

    structlog's ``TimeStamper(fmt="iso", utc=True)`` builds a timezone-aware datetime
    per event; this formats the date and time once per second and only the microseconds
    per event, which takes it off the hot path of every access line. The cache is one
    tuple, swapped atomically, so threads may share the processor.
    """

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache = (-1, "")

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        """Stamp the event.

        Args:
            _logger: Unused; part of the processor protocol.
            _method: Unused; part of the processor protocol.
            event_dict: The event being logged.

        Returns:
            The event with ``timestamp`` set.
        """
        now = time.time()
        second = int(now)
        cached_second, prefix = self._cache
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._cache = (second, prefix)
        event_dict["timestamp"] = f"{prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event_dict


ACCESS_EVENT: Final = "request.completed"
ACCESS_LOGGER: Final = "app.access"

AccessLine = Callable[[str, str, int, float], None]
"""Writes one access line: method, path, status, seconds taken."""

_5XX: Final = 500


def _milliseconds(seconds: float) -> float:
    # Whole microseconds, as milliseconds: round(x, 3) formats a decimal string internally
    # and costs several times more.
    return int(seconds * 1_000_000) / 1000


# One proxy for the life of the process: with cached loggers it binds once, on first use.
_access_logger = structlog.get_logger(ACCESS_LOGGER)


def _access_via_structlog(method: str, path: str, status: int, seconds: float) -> None:
    log = _access_logger.error if status >= _5XX else _access_logger.info
    log(ACCESS_EVENT, method=method, path=path, status=status, duration_ms=_milliseconds(seconds))


_PREFIX: Final = structlog.contextvars.STRUCTLOG_KEY_PREFIX
_WHOLE_SECOND: Final = "%Y-%m-%dT%H:%M:%S.000000Z"


def bound_context(context: contextvars.Context | None = None) -> dict[str, Any]:
    """Return structlog's context variables, redacted as `redact_secrets` would.

    ``redact_secrets(..., structlog.contextvars.get_contextvars())`` in one pass over the
    context instead of two: those two passes were about a quarter of the access line's
    instructions, the single pass about a fifth.

    Args:
        context: The context to read (a `contextvars.copy_context()` taken earlier);
            the current one when omitted.

    Returns:
        A new dict of the bound keys and their (redacted) values.
    """
    bound: dict[str, Any] = {}
    for var, value in (context if context is not None else contextvars.copy_context()).items():
        name = var.name
        if value is not Ellipsis and name.startswith(_PREFIX):
            key = name[len(_PREFIX) :]
            if is_sensitive_key(key):
                bound[key] = REDACTED
            else:
                bound[key] = value if type(value) in _SCALARS else _redact_nested(value)
    return bound


# What a request leaves for its access line: its context, the time it ended, method, path,
# status and seconds taken. The line itself is built when the loop pass's lines are written.
_Entry = tuple[contextvars.Context, datetime.datetime, str, str, int, float]


_UNRENDERABLE: Final = {"log_error": "the bound context could not be rendered"}


def _render(entry: _Entry) -> bytes:
    try:
        bound = bound_context(entry[0])
        try:
            return _render_with(entry, bound)
        except TypeError:  # orjson.JSONEncodeError: e.g. a bound dict with keys other than str
            return _render_with(entry, {str(key): repr(value) for key, value in bound.items()})
    except Exception:  # noqa: BLE001 -- a bound value whose repr raises: keep the line's own fields
        return _render_with(entry, _UNRENDERABLE)


def _render_with(entry: _Entry, bound: Mapping[str, Any]) -> bytes:
    _context, now, method, path, status, seconds = entry
    failed = status >= _5XX
    return orjson.dumps(
        {
            **bound,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": _milliseconds(seconds),
            "event": ACCESS_EVENT,
            "level": "error" if failed else "info",
            # orjson writes the datetime itself (OPT_UTC_Z: "...Z"), cheaper than any
            # string formatting here, but drops a fraction of zero: that one time in a
            # million gets the string every other line has.
            "timestamp": now if now.microsecond else now.strftime(_WHOLE_SECOND),
        },
        # A value orjson cannot encode becomes its repr, as structlog's JSONRenderer does,
        # rather than losing the line (and the lines written with it).
        default=repr,
        option=orjson.OPT_UTC_Z,
    )


class JsonAccessLine:
    """The access line for JSON output: a short path, and one write per event-loop pass.

    Every request writes one, so it is on the hot path of every request. Three costs are cut:

    - The line holds what structlog's chain would render for the same event (the bound
      context variables, redacted; ``level``; ``timestamp``; the request's fields), but
      the dict is built once and handed to orjson directly.
    - The request itself only keeps what its line needs: its context (a copy is one
      reference, `contextvars.copy_context`), the time, and the four fields. The lines are
      built together, when they are written, so the code that builds them runs hot
      instead of once between two requests' worth of other code.
    - The ``write`` system call, which cost more than building the line (9 µs of kernel
      time per request, measured by ``bench/``): lines finished in one pass of the event
      loop are written together by a callback that runs right after that pass. A line
      waits microseconds, never for a timer; only a process killed outright within that
      pass loses the lines of requests its pass completed. Called outside an event loop,
      the line is written at once.

    Lines go through the same `structlog.BytesLogger` as every other event, so they never
    interleave. A line below the configured level is dropped, as the filtering bound
    logger drops it.
    """

    __slots__ = ("_error", "_info", "_lock", "_pending", "_sink")

    def __init__(self, sink: structlog.BytesLogger, *, level: int) -> None:
        self._sink = sink
        self._info = level <= logging.INFO
        self._error = level <= logging.ERROR
        self._pending: list[_Entry] = []
        self._lock = threading.Lock()

    def __call__(self, method: str, path: str, status: int, seconds: float) -> None:
        """Queue the line; the first line of a loop pass schedules the write.

        Args:
            method: The request's HTTP method.
            path: The request's path, without the query string (it may hold tokens).
            status: The response status; 5xx lines are logged at ``error``.
            seconds: Time from the request's arrival to the end of its response.
        """
        if not (self._error if status >= _5XX else self._info):
            return
        entry = (
            contextvars.copy_context(),
            datetime.datetime.now(datetime.UTC),
            method,
            path,
            status,
            seconds,
        )
        with self._lock:
            self._pending.append(entry)
            first = len(self._pending) == 1
        if first:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop in this thread
                self.flush()

    def flush(self) -> None:
        """Build every queued line and write them, in order, with one write."""
        with self._lock:
            entries, self._pending = self._pending, []
        if entries:
            self._sink.msg(b"\n".join([_render(entry) for entry in entries]))


_access_line: AccessLine = _access_via_structlog


def log_access(method: str, path: str, status: int, seconds: float) -> None:
    """Log the access line of one request (``request.completed``), as configured.

    Args:
        method: The request's HTTP method.
        path: The request's path, without the query string.
        status: The response status; 5xx lines are logged at ``error``.
        seconds: Time from the request's arrival to the end of its response.
    """
    _access_line(method, path, status, seconds)


@atexit.register
def flush_access_lines() -> None:
    """Write access lines still queued (`JsonAccessLine`); also runs at interpreter exit."""
    if isinstance(_access_line, JsonAccessLine):
        _access_line.flush()


def _dumps_text(obj: Any, **kwargs: Any) -> str:
    return orjson.dumps(obj, **kwargs).decode()


def _exception_renderer() -> Processor:
    # structlog's ready-made dict_tracebacks shows local variables, and locals hold secrets.
    return structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))


def _console_renderer(stream: TextIO) -> Processor:
    return structlog.dev.ConsoleRenderer(
        colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
    )


def _use_json(settings: Settings, stream: TextIO) -> bool:
    if settings.log.format == "auto":
        return not stream.isatty()
    return settings.log.format == "json"


def _bridge_stdlib(settings: Settings, stream: TextIO, *, as_json: bool) -> None:
    renderer = (
        [_exception_renderer(), structlog.processors.JSONRenderer(serializer=_dumps_text)]
        if as_json
        else [_console_renderer(stream)]
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            UtcTimestamper(),
            redact_secrets,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log.level)
    for name in _BRIDGED_LOGGERS:
        bridged = logging.getLogger(name)
        bridged.handlers.clear()
        bridged.propagate = True
    # SQLAlchemy logs every statement as soon as its logger allows INFO.
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("sqlalchemy.engine").setLevel(
        logging.INFO if settings.db.echo else logging.WARNING
    )
    # httpx logs each outbound URL at INFO, query strings (and their tokens) included.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.captureWarnings(capture=True)


def configure_logging(
    settings: Settings, *, stream: TextIO | None = None, cache_loggers: bool = True
) -> None:
    """Configure structlog and the standard library once, at startup.

    JSON lines (orjson) go straight to the stream's byte buffer, the fast path from
    structlog's performance guide. Records from `logging` (uvicorn, SQLAlchemy, ...)
    pass through a `ProcessorFormatter` that renders the same fields.

    Args:
        settings: Supplies ``log.level``, ``log.format`` and ``db.echo``.
        stream: Where lines go; defaults to standard output.
        cache_loggers: Freeze loggers on first use and write access lines directly (fast).
            Tests turn this off so that `structlog.testing.capture_logs` sees every event.
    """
    global _access_line  # noqa: PLW0603 -- set once at startup, like structlog's own config
    flush_access_lines()
    out = stream if stream is not None else sys.stdout
    as_json = _use_json(settings, out)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        UtcTimestamper(),
        redact_secrets,
    ]
    if as_json:
        processors: list[Processor] = [
            *shared,
            _exception_renderer(),
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
        factory: Any = structlog.BytesLoggerFactory(file=out.buffer)
    else:
        processors = [*shared, _console_renderer(out)]
        factory = structlog.WriteLoggerFactory(file=out)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(settings.log.level),
        logger_factory=factory,
        cache_logger_on_first_use=cache_loggers,
    )
    _access_line = (
        JsonAccessLine(
            structlog.BytesLogger(out.buffer),
            level=logging.getLevelNamesMapping()[settings.log.level],
        )
        if as_json and cache_loggers
        else _access_via_structlog
    )
    _bridge_stdlib(settings, out, as_json=as_json)
