"""What every response looks like: problem+json errors, headers, body limits, media types."""

from __future__ import annotations

import httpx
import pytest

from referral.main import create_app
from referral.models.enums import Role

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status
    return body


async def test_unknown_route_is_404_problem(client):
    assert_problem(await client.get("/api/v1/nothing-here"), 404)


async def test_wrong_method_is_405_problem(client):
    assert_problem(await client.delete("/api/v1/auth/token"), 405)


async def test_validation_error_lists_fields_and_never_echoes_values(client, signed_in):
    _, admin = await signed_in(Role.admin)
    secret_looking = "Synthetic-Subject-Name-1984"
    response = await client.post(
        "/api/v1/admin/municipalities",
        json={"code": secret_looking, "name": "", "region": secret_looking},
        headers=admin,
    )
    body = assert_problem(response, 422)
    assert {tuple(e["loc"]) for e in body["errors"]} >= {("body", "code"), ("body", "region")}
    assert secret_looking not in response.text


async def test_malformed_json_is_422_problem(client, signed_in):
    _, admin = await signed_in(Role.admin)
    response = await client.post(
        "/api/v1/admin/municipalities",
        content=b'{"code": "Synthetic-Value-xyz", ',
        headers={**admin, "Content-Type": "application/json"},
    )
    assert_problem(response, 422)
    assert "Synthetic-Value-xyz" not in response.text


async def test_wrong_media_type_is_415(client, signed_in):
    _, admin = await signed_in(Role.admin)
    response = await client.post(
        "/api/v1/admin/municipalities",
        content=b"code=x&name=y",
        headers={**admin, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 415)
    json_login = await client.post("/api/v1/auth/token", json={"username": "a", "password": "b"})
    assert_problem(json_login, 415)


async def test_body_over_1_mib_is_413_with_content_length(client):
    response = await client.post(
        "/api/v1/auth/refresh",
        content=b"x" * (1024 * 1024 + 1),
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 413)


async def test_chunked_body_over_1_mib_is_413(client):
    async def chunks():
        for _ in range(20):
            yield b"x" * (64 * 1024)

    response = await client.post(
        "/api/v1/auth/refresh", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)


async def test_body_at_the_limit_is_read(client):
    body = b'{"refresh_token": "' + b"x" * 1000 + b'"}'
    response = await client.post(
        "/api/v1/auth/refresh", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401  # parsed, and refused as a token


async def test_security_headers_and_no_store_on_api_responses(client, signed_in):
    _, headers = await signed_in(Role.referrer)
    for response in (
        await client.get("/api/v1/auth/me", headers=headers),
        await client.get("/api/v1/auth/me"),
        await client.get("/livez"),
    ):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "strict-transport-security" in response.headers
        assert response.headers["x-request-id"]


async def test_request_id_is_kept_when_well_formed_and_replaced_otherwise(client):
    kept = await client.get("/livez", headers={"X-Request-ID": "abc-12345678"})
    assert kept.headers["x-request-id"] == "abc-12345678"
    replaced = await client.get("/livez", headers={"X-Request-ID": "<script>"})
    assert replaced.headers["x-request-id"] != "<script>"


async def test_docs_can_be_switched_off(settings):
    app = create_app(settings.model_copy(update={"docs_enabled": False}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/docs")).status_code == 404
        assert (await c.get("/openapi.json")).status_code == 404
    await app.state.engine.dispose()


async def test_docs_are_served_when_enabled(client):
    assert (await client.get("/docs")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    assert "/api/v1/auth/token" in schema["paths"]


async def test_unexpected_error_is_500_problem_without_details(settings):
    app = create_app(settings)

    @app.get("/api/v1/test-only/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail that must not leak")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        response = await c.get("/api/v1/test-only/boom")
    body = assert_problem(response, 500)
    assert "internal detail" not in response.text
    assert body["title"] == "Internal server error"
    await app.state.engine.dispose()


@pytest.mark.parametrize("limit", [0, 101, -1])
async def test_list_limit_bounds(client, signed_in, limit):
    _, admin = await signed_in(Role.admin)
    response = await client.get("/api/v1/admin/users", params={"limit": limit}, headers=admin)
    assert_problem(response, 422)
