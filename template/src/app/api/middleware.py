"""Pure ASGI middleware: request id, access line and the request body size limit.

It is a plain ASGI callable, never ``BaseHTTPMiddleware``: that wrapper runs the
app in another task, so context variables bound inside do not flow back out, and it
costs roughly 170 µs per request.
"""

import contextvars
import os
import re
import time
from typing import Any, Final

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import send_error
from app.core.log import log_access

REQUEST_ID_HEADER: Final = b"x-request-id"
# Anything else (newlines, quotes, 1 KB strings) could forge or bloat log lines.
_SAFE_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._-]{1,64}")


def _uuid4_masks(count: int) -> tuple[int, int]:
    """Return the masks that turn ``count`` random 16-byte blocks into version-4 UUIDs.

    Read as one big-endian integer, each block keeps its random bits except the version
    nibble (byte 6, set to 4) and the variant bits (byte 8, set to RFC 4122's ``10``).
    """
    keep_one = (1 << 128) - 1 ^ (0xF0 << 72) ^ (0xC0 << 56)
    set_one = (0x40 << 72) | (0x80 << 56)
    keep = set_ = 0
    for block in range(count):
        keep |= keep_one << (128 * block)
        set_ |= set_one << (128 * block)
    return keep, set_


class _RequestIds:
    """Request ids made in batches: one read of the kernel's random bytes per 128 ids.

    ``uuid.uuid4().hex`` costs a system call and a `uuid.UUID` object for every request;
    here both are paid once per batch, and handing out an id is a ``list.pop()``, which
    is atomic for threads, so no lock is taken. A forked child drops the ids it
    inherited: two workers must never hand out the same one.
    """

    BATCH: Final = 128

    def __init__(self) -> None:
        self._ready: list[str] = []
        self._keep, self._set = _uuid4_masks(self.BATCH)
        os.register_at_fork(after_in_child=self._ready.clear)

    def take(self) -> str:
        """Return an id never handed out before in this process."""
        while True:
            try:
                return self._ready.pop()
            except IndexError:
                self._ready.extend(self._batch())

    def _batch(self) -> list[str]:
        size = 16 * self.BATCH
        blocks = int.from_bytes(os.urandom(size)) & self._keep | self._set
        digits = blocks.to_bytes(size).hex()
        return [digits[start : start + 32] for start in range(0, 2 * size, 32)]


_request_ids = _RequestIds()


def new_request_id() -> str:
    """Return a random RFC 4122 version-4 UUID as 32 lowercase hex digits.

    The same value ``uuid.uuid4().hex`` gives, drawn from the same kernel source, without
    a system call or a `uuid.UUID` object per request (see `_RequestIds`).

    Returns:
        The new id.
    """
    return _request_ids.take()


def _bound_var(key: str) -> "contextvars.ContextVar[Any]":
    # structlog keeps every bound key in a ContextVar of its own and merges all of them
    # into each event. Binding once hands back that variable (Token.var); setting it is
    # then one call, where bind_contextvars() looks it up by name on every request.
    token = structlog.contextvars.bind_contextvars(**{key: None})[key]
    token.var.reset(token)
    return token.var


_REQUEST_ID: Final = _bound_var("request_id")


def _scan_headers(scope: Scope) -> tuple[str | None, int | None, bool]:
    """Read, in one pass: the first X-Request-ID if safe, Content-Length, chunked or not."""
    incoming: str | None = None
    seen_id = False
    declared: int | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if not seen_id and _SAFE_REQUEST_ID.fullmatch(value):
                incoming = value.decode("ascii")
            seen_id = True
        elif name == b"content-length":
            declared = int(value) if value.isdigit() else None
            chunked = chunked or declared is None
        elif name == b"transfer-encoding":
            chunked = True
    return incoming, declared, chunked


class BodyTooLargeError(HTTPException):
    """Raised from ``receive`` once a streamed request body exceeds the limit."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="request body too large")


class RequestContextMiddleware:
    """Request id, one access line, and the request body size limit, in one ASGI layer.

    - **Request id.** An incoming ``X-Request-ID`` is reused when it is 1-64 characters
      of ``A-Z a-z 0-9 . _ -``; otherwise a new uuid4 hex id is made (`new_request_id`).
      It is echoed in the response header, kept in ``request.state.request_id``, and
      bound in structlog's context variables, so every line the request logs carries it.
      Nothing needs clearing first: the server runs each request in a task of its own,
      with its own copy of the context, so what one request binds never reaches another.
    - **Access line.** When the response is done, one ``request.completed`` line records
      method, path, status and duration (`app.core.log.log_access`).
    - **Body size limit.** A declared ``Content-Length`` above ``max_body_bytes`` is
      refused with 413 before the app runs. Bodies without one (chunked) are counted
      while the app reads them; crossing the limit raises `BodyTooLargeError` inside the
      app, which answers 413. Requests with neither header have no body and pass
      straight through, uncounted. Nothing is buffered.

    One layer instead of two keeps the cost every request pays small: each ASGI layer
    is another coroutine and another pass over the headers (``bench/`` measured about
    1 % of a ``/livez`` request per layer).
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, access_log: bool = True) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming, declared, chunked = _scan_headers(scope)
        request_id = incoming or _request_ids.take()
        scope.setdefault("state", {})["request_id"] = request_id
        _REQUEST_ID.set(request_id)
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            if declared is not None and declared > self.max_body_bytes:
                await send_error(scope, send_with_id, 413, "request body too large")
            elif chunked:
                await self._counting_body(scope, receive, send_with_id)
            else:
                # No Transfer-Encoding: the body is exactly the declared Content-Length
                # (checked above) or empty, as the HTTP/1.1 server frames it.
                await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log:
                log_access(scope["method"], scope["path"], status, time.perf_counter() - started)

    async def _counting_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            # Reached here only when the app let the error escape its own handlers.
            if response_started:
                raise
            await send_error(scope, send, 413, "request body too large")
