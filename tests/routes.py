"""Walking the app's effective routes (with router prefixes) and what guards each one."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from referral.authz.dependencies import authorize

try:  # FastAPI >= 0.16x includes routers lazily; this lists their effective routes.
    from fastapi.routing import iter_route_contexts
except ImportError:  # pragma: no cover - older FastAPI has a flat app.routes
    iter_route_contexts = None


@dataclass(frozen=True)
class RouteInfo:
    method: str
    path: str
    route: BaseRoute

    @property
    def is_api(self) -> bool:
        return isinstance(self.route, APIRoute)


def all_routes(app) -> list[RouteInfo]:
    if iter_route_contexts is None:
        pairs = [(r.path, r.methods, r) for r in app.routes]
    else:
        pairs = [(c.path, c.methods, c.original_route) for c in iter_route_contexts(app.routes)]
    return [
        RouteInfo(method, path, route)
        for path, methods, route in pairs
        for method in sorted(methods or ())
        if method != "HEAD"
    ]


def api_routes(app) -> list[RouteInfo]:
    return [info for info in all_routes(app) if info.is_api]


def walk(dependant: Dependant) -> Iterator[object]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from walk(sub)


def guards(route: APIRoute) -> list[authorize]:
    return [call for call in walk(route.dependant) if isinstance(call, authorize)]


def concrete_path(info: RouteInfo) -> str:
    """The route's path with a random id in every parameter."""
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), info.path)
