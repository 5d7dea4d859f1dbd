import asyncio

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.typing import EventDict

import app.main
from app.core.http import LazyHttpClient
from app.core.lifecycle import Lifecycle
from app.main import create_app
from tests.conftest import SettingsFactory
from tests.helpers import unreachable_postgres_url


def _unreachable_db_client(make_settings: SettingsFactory) -> TestClient:
    settings = make_settings(
        db={"url": unreachable_postgres_url(), "connect_timeout": 1},
        server={"readiness_timeout": 1},
    )
    return TestClient(create_app(settings))


def test_livez_ok(client: TestClient) -> None:
    """/livez answers 200 and must not be cached."""
    response = client.get("/livez")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"


def test_readyz_ok_with_sqlite(client: TestClient) -> None:
    """/readyz answers 200 when the database answers."""
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_503_when_database_unreachable(
    make_settings: SettingsFactory, logs: list[EventDict]
) -> None:
    """/readyz answers 503 in the error shape when the database refuses connections."""
    with _unreachable_db_client(make_settings) as client:
        response = client.get("/readyz", headers={"x-request-id": "probe-1"})

    assert response.status_code == 503
    assert response.json() == {
        "error": {
            "code": "db_unavailable",
            "message": "database unreachable",
            "request_id": "probe-1",
        }
    }
    assert any(entry["event"] == "readiness.db_failed" for entry in logs)


def test_livez_ok_when_database_unreachable(make_settings: SettingsFactory) -> None:
    """/livez never touches the database, so a database outage cannot fail it."""
    with _unreachable_db_client(make_settings) as client:
        response = client.get("/livez")

    assert response.status_code == 200


def test_readyz_503_while_draining(client: TestClient) -> None:
    """Once draining starts, /readyz answers 503 while /livez and other routes still work."""
    lifecycle = client.app_state["lifecycle"]
    assert isinstance(lifecycle, Lifecycle)
    lifecycle.begin_drain()

    ready = client.get("/readyz")
    live = client.get("/livez")

    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "draining"
    assert live.status_code == 200


def test_lifespan_closes_resources(make_settings: SettingsFactory, logs: list[EventDict]) -> None:
    """Leaving the lifespan closes the shared HTTP client and disposes of the engine."""
    with TestClient(create_app(make_settings())) as client:
        client.get("/readyz")
        lazy = client.app_state["http_client"]
        assert isinstance(lazy, LazyHttpClient)
        built_by_probes = lazy.built
        assert client.portal is not None  # set while the client's lifespan runs
        http_client = client.portal.call(lazy.get)
        assert isinstance(http_client, httpx.AsyncClient)
        open_while_serving = not http_client.is_closed

    assert not built_by_probes  # nothing on this path calls out, so nothing was built
    assert open_while_serving
    assert http_client.is_closed
    assert [e["event"] for e in logs if e["event"].startswith("app.")] == [
        "app.started",
        "app.stopped",
    ]


def test_lifespan_drops_a_pool_that_will_not_close(
    make_settings: SettingsFactory, logs: list[EventDict], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool whose connections hang on close is dropped after DISPOSE_TIMEOUT; the stop ends."""
    monkeypatch.setattr(app.main, "DISPOSE_TIMEOUT", 0.05)
    closes: list[bool] = []

    async def hanging_dispose(_engine: AsyncEngine, *, close: bool = True) -> None:
        closes.append(close)
        if close:
            await asyncio.Event().wait()

    monkeypatch.setattr(AsyncEngine, "dispose", hanging_dispose)

    with TestClient(create_app(make_settings())) as client:
        client.get("/livez")

    assert closes == [True, False]
    assert [e["event"] for e in logs if e["event"].startswith("app.")] == [
        "app.started",
        "app.dispose_timeout",
        "app.stopped",
    ]
