"""Sign-ins, refreshes and denials leave audit events with ids and codes, never personal data.

(The tamper-evident chain and the auditor's API are built on top of these events later.)
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import select

from referral.audit import as_recorded
from referral.audit.chain import PENDING_KEY, track
from referral.models import AuditEvent
from referral.models.enums import Role
from tests.conftest import bearer, login
from tests.helpers import synthetic_event


async def _events_since(app, seq: int) -> list[AuditEvent]:
    async with app.state.sessionmaker() as s:
        return list(
            await s.exec(select(AuditEvent).where(AuditEvent.seq > seq).order_by(AuditEvent.seq))
        )


async def _head(app) -> int:
    async with app.state.sessionmaker() as s:
        events = (await s.exec(select(AuditEvent.seq).order_by(AuditEvent.seq.desc()))).first()
    return events or 0


async def test_sign_in_success_failure_and_refresh_are_audited(client, app, world):
    account = await world.account(Role.coordinator)
    start = await _head(app)
    await client.post(
        "/api/v1/auth/token", data={"username": account.username, "password": "wrong password!"}
    )
    tokens = await login(client, account)
    await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    await client.post("/api/v1/auth/logout", headers=bearer(tokens))
    events = await _events_since(app, start)
    summary = [(e.action, e.outcome) for e in events]
    assert summary == [
        ("auth.login", "denied"),
        ("auth.login", "allowed"),
        ("auth.refresh", "allowed"),
        ("auth.logout", "allowed"),
    ]
    assert all(str(account.id) in e.resource_ids or e.actor_user_id == account.id for e in events)
    assert all(e.client_address == "203.0.113.7" and e.request_id for e in events)
    stored = json.dumps([e.model_dump(mode="json") for e in events])
    assert account.username not in stored
    assert account.password not in stored
    assert "wrong password" not in stored


async def test_a_request_without_a_token_is_audited_as_denied(client, app):
    start = await _head(app)
    assert (await client.get("/api/v1/auth/me")).status_code == 401
    events = await _events_since(app, start)
    assert [(e.outcome, e.status_code, e.actor_user_id) for e in events] == [("denied", 401, None)]


async def test_a_denied_requests_own_text_in_the_path_is_recorded_percent_encoded(client, app):
    """The trail records the caller's path segment as it came in the URL, so no recorded id
    holds a comma, a quote, a backslash or non-ASCII text (ADR 0013)."""
    start = await _head(app)
    response = await client.get("/api/v1/cases/a,%22b%5C%C3%A4%25")
    assert response.status_code == 401
    (event,) = await _events_since(app, start)
    assert (event.outcome, event.resource_ids) == ("denied", ["a%2C%22b%5C%C3%A4%25"])


@given(st.text(max_size=30) | st.uuids().map(str))
def test_what_the_trail_records_of_an_id_holds_no_separator_and_loses_nothing(value):
    recorded = as_recorded(value)
    assert recorded.isascii()
    assert not {",", '"', "\\"} & set(recorded)
    assert unquote(recorded) == value  # different ids are never recorded alike
    session = SimpleNamespace(info={})
    track(session, synthetic_event(resource_ids=[recorded], fields=[recorded]))
    assert len(session.info[PENDING_KEY]) == 1  # what is recorded is what the chain takes
    if all(" " <= c <= "~" and c not in ',"\\%' for c in value):
        assert recorded == value  # ids, field names and query terms as they are


@pytest.mark.parametrize(
    "element", [",", ", ", 'a"b', "a\\b", "Ä", "\x7f", "\n", "\x00", "a\x00b", 7, None]
)
@pytest.mark.parametrize("column", ["resource_ids", "fields"])
def test_a_writer_that_skips_as_recorded_has_its_event_refused_not_recorded(column, element):
    """The list rendering is injective only on recorded elements (ADR 0013): the chain holds
    every writer to that, not only those that remember `as_recorded`."""
    session = SimpleNamespace(info={})
    with pytest.raises(ValueError, match="as_recorded"):
        track(session, synthetic_event(**{column: ["fine", element]}))
    with pytest.raises(ValueError, match="as_recorded"):
        track(session, AuditEvent(action="test.event", outcome="allowed", **{column: [element]}))
    assert PENDING_KEY not in session.info
