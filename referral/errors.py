"""RFC 9457 problem details: the only error format the API speaks.

Every error leaves as application/problem+json with type, title, status, detail and instance.
Validation errors add `errors` (location, message, code), and never echo what was submitted.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("referral.errors")

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://referral.invalid/problems/"


class ProblemError(Exception):
    """An error the client can act on. Subclasses set status, slug and title."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra or {}


class BadRequest(ProblemError):
    pass


class Unauthorized(ProblemError):
    status, slug, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("WWW-Authenticate", "Bearer")


class Forbidden(ProblemError):
    status, slug, title = 403, "forbidden", "Not allowed"


class NotFound(ProblemError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(ProblemError):
    status, slug, title = 409, "conflict", "Conflict"


class PreconditionFailed(ProblemError):
    status, slug, title = 412, "precondition-failed", "The resource has changed"


class PayloadTooLarge(ProblemError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(ProblemError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class Unprocessable(ProblemError):
    status, slug, title = 422, "validation-error", "The request is not valid"


def invalid_field(
    field: str,
    message: str,
    *,
    detail: str | None = None,
    kind: str = "value_error",
    where: str = "body",
) -> Unprocessable:
    """A 422 about one field, shaped like a validation error: location, message, type."""
    return Unprocessable(
        detail or f"{field}: {message}",
        extra={"errors": [{"loc": [where, field], "msg": message, "type": kind}]},
    )


class PreconditionRequired(ProblemError):
    status, slug, title = 428, "precondition-required", "If-Match header required"


class TooManyRequests(ProblemError):
    status, slug, title = 429, "too-many-requests", "Too many requests"


class ServiceUnavailable(ProblemError):
    status, slug, title = 503, "service-unavailable", "Service unavailable"


class Busy(ServiceUnavailable):
    """Up, but a bounded resource is taken: the password hasher's turns. Unlike a database
    that is down, such a refusal can be audited, and is."""

    audit_reason = "busy"


_TITLES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    412: ("precondition-failed", "The resource has changed"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "The request is not valid"),
    428: ("precondition-required", "If-Match header required"),
    429: ("too-many-requests", "Too many requests"),
    500: ("internal-error", "Internal server error"),
    503: ("service-unavailable", "Service unavailable"),
}


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries: each status answered with application/problem+json."""
    return {
        status: {
            "description": _TITLES[status][1],
            "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}},
        }
        for status in statuses
    }


def problem_body(
    status: int,
    *,
    instance: str,
    detail: str | None = None,
    slug: str | None = None,
    title: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    default_slug, default_title = _TITLES.get(status, ("error", "Error"))
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (slug or default_slug),
        "title": title or default_title,
        "status": status,
        "detail": detail or title or default_title,
        "instance": instance,
    }
    if extra:
        body.update(extra)
    return body


def problem_response(
    status: int,
    *,
    instance: str,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, instance=instance, **kwargs),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_JSON,
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only where and what kind: never `input` or `ctx`, which may carry the submitted value.
    return [
        {
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": _safe_message(err),
            "type": err.get("type", "value_error"),
        }
        for err in exc.errors()
    ]


def _safe_message(err: dict[str, Any]) -> str:
    message = str(err.get("msg", "invalid value"))
    value = err.get("input")
    if isinstance(value, str) and value and len(value) >= 3 and value in message:
        return "invalid value"
    return message


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            exc.status,
            instance=request.url.path,
            detail=exc.detail,
            slug=exc.slug,
            title=exc.title,
            extra=exc.extra,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(
            422,
            instance=request.url.path,
            detail="One or more fields are not valid; see `errors`.",
            extra={"errors": _validation_errors(exc)},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(
            exc.status_code,
            instance=request.url.path,
            detail=detail,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            500,
            instance=request.url.path,
            detail="The server could not complete the request; nothing was changed.",
        )
