"""`RouteIndex` never changes which route serves a request; it only skips routes that cannot."""

import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.routing import Match, Mount
from starlette.types import Scope

from app.api.routing import RouteIndex
from app.main import create_app
from tests.conftest import SettingsFactory


class WholePath(StringConvertor):
    """A custom convertor that, unlike its parent, matches across slashes."""

    regex = ".+"


register_url_convertor("whole", WholePath())


def _router() -> APIRouter:
    """Routes whose matching depends on order, methods, convertors and segment counts."""
    router = APIRouter()
    for path, name, methods in [
        ("/", "root", ["GET"]),
        ("/items", "list", ["GET"]),
        ("/items", "create", ["POST"]),
        ("/items/special", "special", ["GET"]),
        ("/items/{item_id}", "item", ["GET"]),
        ("/items/{item_id:int}/parts", "parts", ["GET"]),
        ("/items/{item_id}/parts", "parts-any", ["GET"]),
        ("/{tenant}/items", "tenant-items", ["GET"]),
        ("/files/{rest:path}", "files", ["GET"]),
        ("/raw/{rest:whole}", "raw", ["GET"]),
        ("/ids/{key:uuid}", "by-uuid", ["GET"]),
        ("/prices/{value:float}", "price", ["GET"]),
        ("/v{version}/ping", "versioned", ["GET"]),
        ("/trailing/", "trailing", ["GET"]),
    ]:
        router.add_api_route(path, _answer(name), methods=methods, name=name)
    return router


def _answer(name: str) -> Callable[[Request], Awaitable[dict[str, object]]]:
    async def handler(request: Request) -> dict[str, object]:
        return {"route": name, "params": {k: str(v) for k, v in request.path_params.items()}}

    return handler


def _app(*, indexed: bool) -> FastAPI:
    app = FastAPI()
    routes = list(_router().routes)
    sub = FastAPI()
    sub.add_api_route("/inner", lambda: {"route": "mounted"})
    routes.append(Mount("/mounted", app=sub))
    app.router.routes[:0] = [RouteIndex(routes), *routes] if indexed else routes
    return app


REQUESTS = [
    ("GET", "/"),
    ("GET", "/items"),
    ("POST", "/items"),
    ("PUT", "/items"),  # 405, with Allow
    ("GET", "/items/"),  # redirect to /items
    ("GET", "/items/special"),
    ("GET", "/items/42"),
    ("DELETE", "/items/42"),  # 405
    ("GET", "/items/42/parts"),  # the int route comes first
    ("GET", "/items/abc/parts"),  # falls through to the str route
    ("DELETE", "/items/42/parts"),
    ("POST", "/items/42/parts"),  # 405 from two partial matches
    ("GET", "/acme/items"),
    ("GET", "/items/items"),  # fits both "/items/{item_id}" and "/{tenant}/items"
    ("GET", "/files/a/b/c.txt"),
    ("GET", "/raw/x/y"),
    ("GET", f"/ids/{uuid.UUID(int=7)}"),
    ("GET", "/ids/not-a-uuid"),
    ("GET", "/prices/1.5"),
    ("GET", "/v2/ping"),
    ("GET", "/trailing"),  # redirect to /trailing/
    ("GET", "/mounted/inner"),
    ("GET", "/nothing/here/at/all"),
    ("GET", "/items/42/parts%0A"),  # "$" in a route's pattern also matches before a final newline
]


@pytest.fixture(scope="module")
def clients() -> Iterator[tuple[TestClient, TestClient]]:
    """The same routes with and without the index."""
    with (
        TestClient(_app(indexed=False), follow_redirects=False) as plain,
        TestClient(_app(indexed=True), follow_redirects=False) as indexed,
    ):
        yield plain, indexed


@pytest.mark.parametrize(("method", "path"), REQUESTS, ids=[f"{m}_{p}" for m, p in REQUESTS])
def test_every_request_gets_the_answer_of_the_plain_router(
    clients: tuple[TestClient, TestClient], method: str, path: str
) -> None:
    """Status, headers and body match the router without the index, errors included."""
    plain, indexed = clients

    expected = plain.request(method, path)
    got = indexed.request(method, path)

    assert (got.status_code, got.headers.get("allow"), got.headers.get("location"), got.text) == (
        expected.status_code,
        expected.headers.get("allow"),
        expected.headers.get("location"),
        expected.text,
    )


def test_requests_reach_their_route_through_the_index() -> None:
    """Served requests are matched by the index itself, not by the scan behind it."""
    app = _app(indexed=True)
    index = app.router.routes[0]
    assert isinstance(index, RouteIndex)
    served: list[tuple[str, str]] = []
    original = RouteIndex.matches

    def spy(self: RouteIndex, scope: Scope) -> tuple[Match, Scope]:
        match, child = original(self, scope)
        served.append((scope["path"], match.name))
        return match, child

    with pytest.MonkeyPatch.context() as patch, TestClient(app) as client:
        patch.setattr(RouteIndex, "matches", spy)
        assert client.get("/items/42/parts").json()["route"] == "parts"
        assert client.get("/files/a/b").json()["route"] == "files"
        assert client.put("/items").status_code == 405

    assert served == [("/items/42/parts", "FULL"), ("/files/a/b", "FULL"), ("/items", "NONE")]


def test_candidates_are_only_the_routes_of_the_paths_shape() -> None:
    """A path is tried against its own first segment and length, plus the shapeless routes."""
    index = _app(indexed=True).router.routes[0]
    assert isinstance(index, RouteIndex)

    def names(path: str) -> list[str]:
        return [
            getattr(route, "name", None) or type(route).__name__ for route in index.candidates(path)
        ]

    # In registration order; "files", "raw" and the mount have no fixed shape.
    two_segments_any_first = ["tenant-items", "files", "raw", "versioned", "Mount"]
    assert names("/items/42") == ["special", "item", *two_segments_any_first]
    assert names("/items/items") == ["special", "item", *two_segments_any_first]
    assert names("/acme/items") == two_segments_any_first
    assert names("/v2/ping") == two_segments_any_first
    assert names("/items/42/parts") == ["parts", "parts-any", "files", "raw", "Mount"]
    assert names("/nothing/here/at/all") == ["files", "raw", "Mount"]


def test_the_service_skips_routes_a_path_cannot_match(make_settings: SettingsFactory) -> None:
    """In the service itself, /livez has one candidate and the probes are indexed."""
    app = create_app(make_settings())
    index = app.router.routes[0]
    assert isinstance(index, RouteIndex)

    assert [getattr(route, "path", None) for route in index.candidates("/livez")] == ["/livez"]
    assert [getattr(route, "path", None) for route in index.candidates("/readyz")] == ["/readyz"]
    assert index.candidates("/no/such/route") == []


def test_root_path_is_stripped_before_the_lookup() -> None:
    """Behind a proxy that mounts the service under a prefix, the route is still found."""
    with TestClient(_app(indexed=True), root_path="/api") as client:
        response = client.get("/api/items/7")

    assert response.json() == {"route": "item", "params": {"item_id": "7"}}


def test_openapi_is_unchanged_by_the_index() -> None:
    """The schema lists the same operations: the index is not an API route."""
    assert _app(indexed=True).openapi() == _app(indexed=False).openapi()


def test_telemetry_requests_are_left_to_the_router() -> None:
    """With FastAPI's native telemetry state in the scope the index declines at once."""
    index = _app(indexed=True).router.routes[0]
    assert isinstance(index, RouteIndex)
    scope = {"type": "http", "path": "/items", "method": "GET", "fastapi.telemetry": object()}

    match, child = index.matches(scope)

    assert (match.name, child) == ("NONE", {})
