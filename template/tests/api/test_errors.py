import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy import text
from structlog.typing import EventDict

from app.api.deps import EngineDep, SessionDep
from app.core.concurrency import deadline
from app.main import create_app
from tests.conftest import SettingsFactory
from tests.helpers import unreachable_postgres_url


class Login(BaseModel):
    """A body with a field the client may fill with a secret."""

    user: str
    attempts: int


router = APIRouter()


@router.post("/login")
async def login(body: Login) -> dict[str, str]:
    """Accept a validated body."""
    return {"user": body.user}


@router.get("/boom")
async def boom() -> None:
    """Fail with an unexpected error."""
    raise RuntimeError("unexpected canary-detail")


@router.get("/two-connections")
async def two_connections(engine: EngineDep) -> None:
    """Hold one connection and ask for another (exhausts a pool of one)."""
    async with engine.connect(), engine.connect():
        pass


@router.get("/query")
async def query(session: SessionDep) -> None:
    """Run a trivial query through the request session."""
    await session.execute(text("SELECT 1"))


@router.get("/bad-sql")
async def bad_sql(session: SessionDep) -> None:
    """Run a query with a syntax error: a bug, not an outage."""
    await session.execute(text("SELEKT 1"))


@router.get("/slow")
async def slow() -> None:
    """Exceed a deadline."""
    async with deadline(0.01):
        await asyncio.sleep(1)


def _client(app: FastAPI) -> TestClient:
    app.include_router(router)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def error_client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    """A client for the service plus the failing routes; server errors become responses."""
    settings = make_settings(db={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.1})
    with _client(create_app(settings)) as client:
        yield client


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", "/missing", 404, "not_found"), ("DELETE", "/livez", 405, "method_not_allowed")],
    ids=["404", "405"],
)
def test_http_errors_use_error_shape(
    error_client: TestClient, method: str, path: str, status: int, code: str
) -> None:
    """Framework HTTP errors come back in the service's error shape."""
    response = error_client.request(method, path)

    assert response.status_code == status
    assert _error(response)["code"] == code


def test_validation_error_lists_fields_without_input(error_client: TestClient) -> None:
    """422 names the bad fields but never echoes what the client sent."""
    response = error_client.post("/login", json={"user": "canary-secret", "attempts": "many"})

    error = _error(response)
    assert response.status_code == 422
    assert error["code"] == "validation_error"
    assert error["details"] == [
        {
            "loc": ["body", "attempts"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "type": "int_parsing",
        }
    ]
    assert "canary" not in response.text


def test_unhandled_error_is_500_without_detail(
    error_client: TestClient, logs: list[EventDict]
) -> None:
    """An unexpected exception answers a generic 500 and is logged as such."""
    response = error_client.get("/boom")

    assert response.status_code == 500
    assert _error(response) | {"request_id": None} == {
        "code": "internal_error",
        "message": "internal server error",
        "request_id": None,
    }
    assert "canary" not in response.text
    assert len(response.headers.get_list("x-request-id")) == 1
    assert [e["status"] for e in logs if e["event"] == "request.completed"] == [500]


def test_pool_timeout_is_503_db_busy(error_client: TestClient) -> None:
    """An exhausted pool answers 503 with Retry-After instead of hanging."""
    response = error_client.get("/two-connections")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert _error(response)["code"] == "db_busy"


def test_timeout_is_503(error_client: TestClient) -> None:
    """A deadline that expires inside a request answers 503 with code timeout."""
    response = error_client.get("/slow")

    assert response.status_code == 503
    assert _error(response)["code"] == "timeout"


def test_sql_bug_is_500_not_503(error_client: TestClient, logs: list[EventDict]) -> None:
    """A broken query is a bug: 500, logged with its exception, not disguised as an outage."""
    response = error_client.get("/bad-sql")

    assert response.status_code == 500
    assert len(response.headers.get_list("x-request-id")) == 1
    assert [e["event"] for e in logs if e["event"] == "request.failed"] == ["request.failed"]


@pytest.mark.parametrize(
    "url",
    [unreachable_postgres_url(), "sqlite+aiosqlite:////nonexistent-dir/app.db"],
    ids=["postgres-refused", "sqlite-cannot-open"],
)
def test_database_down_is_503(
    make_settings: SettingsFactory, url: str, logs: list[EventDict], tmp_path: Path
) -> None:
    """A database that cannot be reached answers 503 db_unavailable, without its URL."""
    with _client(create_app(make_settings(db={"url": url, "connect_timeout": 1}))) as client:
        response = client.get("/query")

    assert response.status_code == 503
    assert _error(response)["code"] == "db_unavailable"
    assert "canary-password" not in response.text
    assert "canary-password" not in repr(logs)
    assert not (tmp_path / "nonexistent-dir").exists()
