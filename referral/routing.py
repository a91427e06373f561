"""The route class of every API route: opens the request's one transaction around the
handler (db.request_transaction), and refuses a body of the wrong media type with 415.

FastAPI on its own would hand a non-JSON body to validation and answer 422, which tells the
client the wrong thing; 415 says "send JSON" (or a form, for the sign-in route).
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine, Iterator
from functools import cached_property
from typing import Any

from fastapi import Request, Response, params
from fastapi.routing import APIRoute, _get_scope_effective_route_context
from starlette.routing import Match
from starlette.types import Scope

from referral.db import request_session, request_transaction
from referral.errors import UnsupportedMediaType, problem_responses

API_PREFIX = "/api/v1"
Handler = Callable[[Request], Coroutine[Any, Any, Response]]
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def media_type_of(request: Request) -> str | None:
    value = request.headers.get("content-type")
    if not value:
        return None
    message = email.message.Message()
    message["content-type"] = value
    return message.get_content_type()


def is_json(media_type: str) -> bool:
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


Lean = Callable[[Request], Coroutine[Any, Any, Response | None]]
ANSWERED_FIRST_BY = "answered_first_by"


def answered_first(by: Lean) -> Callable[[Any], Any]:
    """Mark a route's endpoint: its requests go first to `by`, which answers those it can
    answer exactly as the route would, having changed nothing for those it leaves (None)."""

    def mark(endpoint: Any) -> Any:
        setattr(endpoint, ANSWERED_FIRST_BY, by)
        return endpoint

    return mark


# What any API route may answer: bad or unauthenticated requests, denials, a body too
# large or of the wrong type, validation, rate limits and a busy database.
ALWAYS = (400, 401, 403, 413, 415, 422, 429, 503)
# What a route that names a resource, or changes one, may answer besides.
ADDRESSED = (404,)
CHANGING = (404, 409, 412, 428)


class ProblemRoute(APIRoute):
    """Opens the request's transaction; refuses the wrong media type with 415; documents its
    problem+json error answers."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        methods = set(kwargs.get("methods") or ())
        statuses = set(ALWAYS)
        if "{" in path:
            statuses.update(ADDRESSED)
        if methods - {"GET", "HEAD"}:
            statuses.update(CHANGING)
        kwargs["responses"] = {
            **problem_responses(*sorted(statuses)),
            **(kwargs.get("responses") or {}),
        }
        super().__init__(path, endpoint, **kwargs)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Starlette's match, but a path that does not start with the route's fixed part
        (all of it before the first parameter) is refused at once: the app's routes are
        tried one after another, and a request to a route far down the table paid ~1.3 us
        for each route before it. Left to Starlette whenever the path is taken relative to
        a root path, or FastAPI matches the route in the context of an including router."""
        path = scope.get("path")
        if (
            scope.get("type") == "http"
            and not scope.get("root_path")
            and isinstance(path, str)
            and not path.startswith(self._fixed_prefix)
            and _get_scope_effective_route_context(scope) is None
        ):
            return Match.NONE, {}
        return super().matches(scope)

    @cached_property
    def _fixed_prefix(self) -> str:
        return self.path.split("{", 1)[0]

    def get_route_handler(self) -> Handler:
        handler = self._media_checked(self._in_transaction(super().get_route_handler()))
        return self._answered_first(handler)

    def _answered_first(self, handler: Handler) -> Handler:
        """A route whose endpoint is marked `answered_first(by)` is given first to `by`,
        which answers before any dependency runs or leaves the request to the route (None)."""
        first: Lean | None = getattr(self.endpoint, ANSWERED_FIRST_BY, None)
        if first is None:
            return handler

        async def handler_answered_first(request: Request) -> Response:
            response = await first(request)
            return response if response is not None else await handler(request)

        return handler_answered_first

    def _in_transaction(self, handler: Handler) -> Handler:
        """The request's one transaction around dependencies and handler (db.py)."""
        if not _needs_session(self.dependant):
            return handler

        async def handler_in_transaction(request: Request) -> Response:
            async with request_transaction(request):
                return await handler(request)

        return handler_in_transaction

    def _media_checked(self, handler: Handler) -> Handler:
        if self.body_field is None:
            return handler
        expects_form = isinstance(self.body_field.field_info, params.Form)

        async def checked_handler(request: Request) -> Response:
            media_type = media_type_of(request)
            if media_type is not None:
                ok = media_type in FORM_TYPES if expects_form else is_json(media_type)
                if not ok:
                    wanted = "a form" if expects_form else "application/json"
                    raise UnsupportedMediaType(f"This endpoint accepts {wanted}.")
            return await handler(request)

        return checked_handler


def dependency_calls(dependant: Any) -> Iterator[Any]:
    """Every callable a route depends on, directly or through its dependencies."""
    pending = list(getattr(dependant, "dependencies", []))
    while pending:
        dependency = pending.pop()
        yield dependency.call
        pending.extend(dependency.dependencies)


def _needs_session(dependant: Any) -> bool:
    """Whether the route, or any dependency of it, takes the request's session."""
    return any(call is request_session for call in dependency_calls(dependant))
