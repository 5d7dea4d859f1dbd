import re
from collections.abc import Iterator

import pytest
import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient
from structlog.typing import EventDict

from app.core.config import Settings
from app.main import create_app
from tests.conftest import SettingsFactory

MAX_BODY = 1000


class Probe:
    """Routes that log from inside a request and report what they received."""

    def __init__(self) -> None:
        self.body_handler_calls = 0
        self.router = APIRouter()
        self.router.add_api_route("/log-async", self.log_async)
        self.router.add_api_route("/log-sync", self.log_sync)
        self.router.add_api_route("/body", self.body, methods=["POST"])

    async def log_async(self) -> dict[str, str]:
        """Log from an async handler (runs on the event loop)."""
        structlog.get_logger().info("handler.async")
        return {"ok": "yes"}

    def log_sync(self) -> dict[str, str]:
        """Log from a sync handler (runs in the threadpool)."""
        structlog.get_logger().info("handler.sync")
        return {"ok": "yes"}

    async def body(self, request: Request) -> dict[str, int]:
        """Read the whole body and report its size."""
        self.body_handler_calls += 1
        return {"size": len(await request.body())}


@pytest.fixture
def probe() -> Probe:
    """The probe routes."""
    return Probe()


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    """Settings with a small body limit."""
    return make_settings(server={"max_body_bytes": MAX_BODY})


@pytest.fixture
def app(settings: Settings, probe: Probe) -> FastAPI:
    """The service app plus the probe routes."""
    application = create_app(settings)
    application.include_router(probe.router)
    return application


def _events(logs: list[EventDict], name: str) -> list[EventDict]:
    return [entry for entry in logs if entry["event"] == name]


def test_request_id_generated_when_absent(client: TestClient) -> None:
    """Without X-Request-ID every response gets a new 32-hex-digit id."""
    first = client.get("/livez").headers["x-request-id"]
    second = client.get("/livez").headers["x-request-id"]

    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


@pytest.mark.parametrize("incoming", ["abc", "A.b_c-9", "x" * 64], ids=["short", "mixed", "max"])
def test_safe_request_id_reused(client: TestClient, incoming: str) -> None:
    """An id of 1-64 safe characters is echoed back unchanged."""
    response = client.get("/livez", headers={"X-Request-ID": incoming})

    assert incoming == response.headers["x-request-id"]


@pytest.mark.parametrize(
    "incoming",
    ["x" * 65, "a b", "id;drop", "../etc/passwd", '"quoted"', ""],
    ids=["too-long", "space", "semicolon", "slash", "quote", "empty"],
)
def test_unsafe_request_id_replaced(client: TestClient, incoming: str) -> None:
    """Ids that could forge or bloat log lines are replaced by a generated one."""
    response = client.get("/livez", headers={"X-Request-ID": incoming})

    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [("first-id", "second-id", "first-id"), ("a b", "second-id", None)],
    ids=["first-safe", "first-unsafe"],
)
def test_only_the_first_request_id_header_counts(
    client: TestClient, first: str, second: str, kept: str | None
) -> None:
    """With several X-Request-ID headers the first decides; a later one never replaces it."""
    response = client.get("/livez", headers=[("X-Request-ID", first), ("X-Request-ID", second)])

    if kept is None:
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    else:
        assert response.headers["x-request-id"] == kept


@pytest.mark.parametrize("path", ["/log-async", "/log-sync"], ids=["async", "sync"])
def test_request_id_bound_inside_handler(
    client: TestClient, logs: list[EventDict], path: str
) -> None:
    """Log lines written by a handler, async or in the threadpool, carry the request id."""
    client.get(path, headers={"X-Request-ID": "req-42"})

    [entry] = [e for e in logs if e["event"].startswith("handler.")]
    assert entry["request_id"] == "req-42"


def test_request_context_does_not_leak(client: TestClient, logs: list[EventDict]) -> None:
    """A request without an id does not inherit the previous request's id."""
    client.get("/log-async", headers={"X-Request-ID": "first"})
    second = client.get("/log-async")

    ids = [e["request_id"] for e in _events(logs, "handler.async")]
    assert ids == ["first", second.headers["x-request-id"]]


def test_one_access_line_per_request(client: TestClient, logs: list[EventDict]) -> None:
    """Each request logs exactly one request.completed line with the key fields."""
    client.get("/log-async", headers={"X-Request-ID": "acc-1"})

    [line] = _events(logs, "request.completed")
    assert line["method"] == "GET"
    assert line["path"] == "/log-async"
    assert line["status"] == 200
    assert line["request_id"] == "acc-1"
    assert 0 <= line["duration_ms"] < 10_000


@pytest.fixture
def quiet_client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    """A client for an app with APP_LOG__ACCESS=false."""
    with TestClient(create_app(make_settings(log={"access": False}))) as client:
        yield client


def test_access_line_can_be_disabled(quiet_client: TestClient, logs: list[EventDict]) -> None:
    """APP_LOG__ACCESS=false removes the access line."""
    quiet_client.get("/livez")

    assert _events(logs, "request.completed") == []


def test_body_at_limit_accepted(client: TestClient) -> None:
    """A body of exactly the limit reaches the handler."""
    response = client.post("/body", content=b"x" * MAX_BODY)

    assert response.status_code == 200
    assert response.json() == {"size": MAX_BODY}


def test_body_over_content_length_rejected_before_handler(
    client: TestClient, probe: Probe, logs: list[EventDict]
) -> None:
    """A declared Content-Length over the limit gets 413 JSON and never reaches the handler."""
    response = client.post("/body", content=b"x" * (MAX_BODY + 1), headers={"X-Request-ID": "big"})

    assert response.status_code == 413
    assert response.json() == {
        "error": {
            "code": "payload_too_large",
            "message": "request body too large",
            "request_id": "big",
        }
    }
    assert response.headers["x-request-id"] == "big"
    assert probe.body_handler_calls == 0
    assert _events(logs, "request.completed")[0]["status"] == 413


def _chunks(total: int, size: int = 100) -> Iterator[bytes]:
    for _ in range(total // size):
        yield b"x" * size


def test_chunked_body_over_limit_rejected(client: TestClient) -> None:
    """A body without Content-Length is counted while read and cut off at the limit."""
    response = client.post("/body", content=_chunks(MAX_BODY * 5))

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_chunked_body_under_limit_accepted(client: TestClient) -> None:
    """A streamed body within the limit is read normally."""
    response = client.post("/body", content=_chunks(MAX_BODY))

    assert response.status_code == 200
    assert response.json() == {"size": MAX_BODY}
