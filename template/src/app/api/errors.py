"""The one JSON error shape, ``{"error": {"code", "message", "request_id"}}``, and its handlers."""

from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.types import Scope, Send

from app.core.db import failure_fields

_log = structlog.get_logger(__name__)

# Stable codes for clients; the reason phrase of 413 even differs between Python versions.
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}

# Tells clients and load balancers a 503 is temporary.
_RETRY_AFTER = {"retry-after": "1"}


class ErrorDetail(BaseModel):
    """What went wrong, for a client."""

    code: str
    message: str
    request_id: str | None = None
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    """Every error response of the service has this body."""

    error: ErrorDetail


def code_for_status(status: int) -> str:
    """Return the stable error code for an HTTP status.

    Args:
        status: The HTTP status code.

    Returns:
        A snake_case code such as ``not_found``, or ``http_<status>`` for rare ones.
    """
    return _CODES.get(status, f"http_{status}")


def request_id_of(scope: Scope) -> str | None:
    """Return the request id the middleware stored for this request, if any.

    Args:
        scope: The ASGI scope (``request.scope``).

    Returns:
        The id, or None outside of `RequestContextMiddleware`.
    """
    state = scope.get("state")
    return state.get("request_id") if isinstance(state, dict) else None


def error_content(
    code: str,
    message: str,
    request_id: str | None,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Build the error body as plain data.

    Args:
        code: Stable machine-readable code.
        message: Human-readable explanation, safe to show to the client.
        request_id: Correlates the response with the service's log lines.
        details: Optional per-field problems (validation errors).

    Returns:
        The ``{"error": {...}}`` mapping.
    """
    error: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details is not None:
        error["details"] = details
    return {"error": error}


def error_response(
    request: Request,
    status: int,
    message: str,
    *,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Build a JSON error response for a request.

    Args:
        request: The failing request.
        status: HTTP status code.
        message: Human-readable explanation.
        code: Overrides the code derived from ``status``.
        headers: Extra response headers.

    Returns:
        The response, carrying the request id.
    """
    content = error_content(code or code_for_status(status), message, request_id_of(request.scope))
    return JSONResponse(content, status_code=status, headers=headers)


async def send_error(scope: Scope, send: Send, status: int, message: str) -> None:
    """Send a complete JSON error response from pure ASGI code, before any app ran.

    Args:
        scope: The request's ASGI scope.
        send: The ASGI send callable.
        status: HTTP status code.
        message: Human-readable explanation.
    """
    body = orjson.dumps(error_content(code_for_status(status), message, request_id_of(scope)))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        # The unread request body stays on the socket; do not reuse the connection.
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, HTTPException):  # registered for HTTPException only
        return await _unhandled_logged(request, error)
    detail: object = error.detail  # fastapi.HTTPException allows any JSON-able detail
    message = detail if isinstance(detail, str) else code_for_status(error.status_code)
    return error_response(request, error.status_code, message, headers=error.headers)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, RequestValidationError):  # registered for this type only
        return await _unhandled_logged(request, error)
    # Echoing `input` back could repeat a password the client sent; loc/msg/type suffice.
    details = [
        {"loc": list(item["loc"]), "msg": item["msg"], "type": item["type"]}
        for item in error.errors()
    ]
    content = error_content(
        "validation_error", "request validation failed", request_id_of(request.scope), details
    )
    return JSONResponse(content, status_code=422)


# SQLSTATE classes/codes meaning "the database cannot serve right now", not "bad query":
# 08 connection exception, 53300 too many connections, 57P01-57P03 shutdown or starting.
_UNAVAILABLE_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03")
_QUERY_CANCELED = "57014"  # statement_timeout (or pg_cancel_backend) stopped the statement
# SQLite's equivalents (extended codes such as SQLITE_BUSY_TIMEOUT share the prefix); its
# syntax errors are OperationalError too, so the exception class alone proves nothing.
_UNAVAILABLE_SQLITE = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR",
    "SQLITE_FULL",
)


def _sqlstate(error: sa_exc.DBAPIError) -> str:
    code = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    return code if isinstance(code, str) else ""


def _is_unavailable(error: sa_exc.DBAPIError) -> bool:
    if error.connection_invalidated or _sqlstate(error).startswith(_UNAVAILABLE_SQLSTATES):
        return True
    sqlite_error = getattr(error.orig, "sqlite_errorname", None)
    return isinstance(sqlite_error, str) and sqlite_error.startswith(_UNAVAILABLE_SQLITE)


def _unavailable(request: Request, code: str, message: str) -> JSONResponse:
    return error_response(request, 503, message, code=code, headers=_RETRY_AFTER)


async def _db_pool_timeout(request: Request, error: Exception) -> JSONResponse:
    _log.warning("db.pool_timeout", error=type(error).__name__)
    return _unavailable(request, "db_busy", "database busy, retry later")


async def _db_error(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, sa_exc.DBAPIError):  # registered for DBAPIError only
        return await _unhandled_logged(request, error)
    if _sqlstate(error) == _QUERY_CANCELED:
        _log.warning("db.statement_timeout")
        return _unavailable(request, "timeout", "database statement timed out")
    if _is_unavailable(error):
        # Only the type is logged: driver messages may quote connection details.
        _log.warning("db.unavailable", **failure_fields(error))
        return _unavailable(request, "db_unavailable", "database unavailable")
    return await _unhandled_logged(request, error)


async def _connection_refused(request: Request, error: Exception) -> JSONResponse:
    # asyncpg lets OSError subclasses (refused, reset) through untranslated.
    _log.warning("db.unavailable", **failure_fields(error))
    return _unavailable(request, "db_unavailable", "database unavailable")


async def _timeout(request: Request, error: Exception) -> JSONResponse:
    _log.warning("request.timeout", error=type(error).__name__)
    return _unavailable(request, "timeout", "an operation timed out")


async def _unhandled_logged(request: Request, error: Exception) -> JSONResponse:
    # A handled exception never reaches the server's error log: log it here, once.
    _log.error("request.failed", exc_info=error)
    return error_response(request, 500, "internal server error")


async def _unhandled(request: Request, error: Exception) -> JSONResponse:
    # Starlette re-raises after this response is sent; the server logs the traceback once.
    # Its ServerErrorMiddleware sits outside ours, so the request id header is added here.
    request_id = request_id_of(request.scope)
    headers = {"x-request-id": request_id} if request_id else None
    return error_response(request, 500, "internal server error", headers=headers)


def add_exception_handlers(app: FastAPI) -> None:
    """Register handlers so every error, expected or not, gets the JSON error shape.

    Database outages map to 503 with ``Retry-After``: pool exhausted (``db_busy``),
    connection failures (``db_unavailable``), statement timeouts and any other
    `TimeoutError` (``timeout``). Other database errors are logged and answer 500.

    Args:
        app: The application to configure.
    """
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(sa_exc.TimeoutError, _db_pool_timeout)
    app.add_exception_handler(sa_exc.DBAPIError, _db_error)
    app.add_exception_handler(ConnectionError, _connection_refused)
    app.add_exception_handler(TimeoutError, _timeout)
    app.add_exception_handler(Exception, _unhandled)
