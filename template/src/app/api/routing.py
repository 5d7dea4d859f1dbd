"""`RouteIndex`: find a request's route by a dictionary lookup instead of trying every route.

FastAPI's router tries its routes one after another, and every route passed over costs a
regular expression and several Python calls: about 9 thousand CPU instructions, nearly 2 %
of a whole ``/livez`` request (measured by ``bench/``). The sixth route of a service pays
that five times on every request; the fortieth, thirty-nine times.
"""

from collections.abc import Sequence

from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.convertors import FloatConvertor, IntegerConvertor, StringConvertor, UUIDConvertor
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

# Convertors whose values never hold "/", so a route's path has a fixed number of segments
# (exact types: a subclass may widen the pattern).
_ONE_SEGMENT = (StringConvertor, IntegerConvertor, FloatConvertor, UUIDConvertor)

Shape = tuple[str | None, int]
"""A path's first segment (None when it holds a parameter) and its number of segments."""


def _path_shape(path: str) -> tuple[str, int]:
    slash = path.find("/", 1)
    return (path[1:slash] if slash > 0 else path[1:]), path.count("/")


def _route_shape(route: BaseRoute) -> Shape | None:
    """Return the only shape of path ``route`` can match, or None when it could match others."""
    if not isinstance(route, APIRoute):
        return None
    convertors = route.param_convertors.values()
    if not all(type(convertor) in _ONE_SEGMENT for convertor in convertors):
        return None
    first, count = _path_shape(route.path_format)
    return (None if "{" in first else first), count


def _fits(shape: Shape | None, first: str | None, count: int) -> bool:
    return shape is None or (shape[1] == count and shape[0] in (None, first))


class RouteIndex(BaseRoute):
    """Stand in front of the routes given and hand each request to the only candidates.

    Every route of the service stays registered as before, after the index, for everything
    else that reads the route list (OpenAPI, ``url_path_for``, 404 and 405 handling). For
    a request, the index looks up the routes that can match a path of its shape (its first
    segment and its number of segments), in their registration order, and asks each one
    whether it matches, as the router would. The first full match is served; otherwise the
    index declines and the router goes through its routes as usual, so a 405 or a 404 gets
    exactly the answer it got before, only later.

    The index therefore never changes which route serves a request; it can only skip
    routes that cannot match. A route whose paths have no fixed shape (a ``{name:path}``
    parameter, a custom convertor, a mount, anything that is not an `APIRoute`) is a
    candidate for every request. Requests carrying FastAPI's native telemetry state are
    left to the router, which records the matched route for the span.
    """

    # Read by the router for telemetry on every match; a class attribute spares getattr() the
    # AttributeError it would raise and catch each time.
    path_format: str | None = None

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.routes = list(routes)
        shapes = [_route_shape(route) for route in self.routes]
        self._by_shape: dict[Shape, list[BaseRoute]] = {}
        self._by_count: dict[int, list[BaseRoute]] = {}
        for shape in shapes:
            if shape is None:
                continue
            first, count = shape
            if first is not None:
                self._by_shape[shape] = self._candidates(shapes, first, count)
            if count not in self._by_count:
                self._by_count[count] = self._candidates(shapes, None, count)
        self._anywhere = [
            route for route, shape in zip(self.routes, shapes, strict=True) if shape is None
        ]

    def _candidates(
        self, shapes: list[Shape | None], first: str | None, count: int
    ) -> list[BaseRoute]:
        # first=None: a path whose first segment no route spells out, so only routes with a
        # parameter there (or of no fixed shape) can match it.
        return [
            route
            for route, shape in zip(self.routes, shapes, strict=True)
            if _fits(shape, first, count)
        ]

    def candidates(self, path: str) -> list[BaseRoute]:
        """Return the routes that can match ``path``, in registration order.

        Args:
            path: The request path, without the root path.

        Returns:
            The candidates.
        """
        shape = _path_shape(path)
        found = self._by_shape.get(shape)
        return found if found is not None else self._by_count.get(shape[1], self._anywhere)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Return the first candidate's full match, or decline (`Match.NONE`)."""
        if scope["type"] != "http" or scope.get("fastapi.telemetry") is not None:
            return Match.NONE, {}
        path = get_route_path(scope) if scope.get("root_path") else scope["path"]
        for route in self.candidates(path):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                child_scope[_MATCHED] = route
                return match, child_scope
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request with the route `matches` found."""
        route: BaseRoute = scope[_MATCHED]
        await route.handle(scope, receive, send)


_MATCHED = "app.matched_route"
