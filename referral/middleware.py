"""Pure ASGI middleware: request id, security headers, and the input guard.

The input guard buffers at most `max_bytes` before the app sees anything, so an oversized
body (declared or chunked without Content-Length) is refused with 413 and never parsed. It
also refuses text holding U+0000 (NUL) with 400, in the path, the query or the body:
PostgreSQL cannot store it in text and failed the request with a 500, while SQLite stored
it, so the same input was an error on one database and garbage on the other.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from referral.errors import PROBLEM_JSON, problem_body
from referral.routing import is_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

API_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
# Swagger UI and ReDoc need their scripts and styles; everything else gets the strict CSP.
DOCS_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"img-src 'self' data: https://fastapi.tiangolo.com; frame-ancestors 'none'"
)


async def _send_problem(send: Send, scope: Scope, status: int, detail: str) -> None:

    body = json.dumps(problem_body(status, instance=scope.get("path", ""), detail=detail)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """Gives each request an id (X-Request-ID if well-formed, else new) and secure headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope.get("path", "")
        is_docs = path in ("/docs", "/redoc") or path.startswith("/docs/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(COMMON_HEADERS)
                if is_docs:
                    headers.append((b"content-security-policy", DOCS_CSP))
                else:
                    headers.extend(API_HEADERS)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


_NUL_TEXT = "Text in a request may not hold the NUL character (U+0000)."
_JSON_NUL = b"\\u0000"


def _holds_nul(raw: bytes, is_json: bool) -> bool:
    """Whether a query string or body carries U+0000: as a raw byte; percent-encoded in a
    query or form; as an escape in JSON, where `\\u0000` is a NUL when the run of
    backslashes it starts with is odd (`\\\\u0000` is a backslash and "u0000")."""
    if b"\x00" in raw:
        return True
    if not is_json:
        return b"%00" in raw
    found = raw.find(_JSON_NUL)
    while found != -1:
        # the backslashes just before this one, counted in place: copying the prefix for
        # each escape made a body full of them cost seconds of the event loop
        start = found
        while start > 0 and raw[start - 1] == 0x5C:
            start -= 1
        if (found - start) % 2 == 0:
            return True
        found = raw.find(_JSON_NUL, found + 1)
    return False


def _body_holds_nul(scope: Scope, body: bytes) -> bool:
    content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
    media_type = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
    if not media_type:  # FastAPI reads a body that names no media type as JSON
        return _holds_nul(body, True) or _holds_nul(body, False)
    return _holds_nul(body, is_json(media_type))


class InputGuardMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope.get("path", "") or _holds_nul(scope.get("query_string", b""), False):
            await _send_problem(send, scope, 400, _NUL_TEXT)
            return
        too_large = f"The request body is larger than {self.max_bytes} bytes."
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_bytes:
                    await _send_problem(send, scope, 413, too_large)
                    return
            except ValueError:
                await _send_problem(send, scope, 400, "Content-Length is not a number.")
                return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_problem(send, scope, 413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break

        body = b"".join(chunks)
        if body and _body_holds_nul(scope, body):
            await _send_problem(send, scope, 400, _NUL_TEXT)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
