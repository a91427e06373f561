"""Seed a realistic synthetic data set fast: bulk inserts, real encryption, no ORM objects."""

from __future__ import annotations

import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from referral.audit.chain import GENESIS, compute_hash
from referral.auth import totp
from referral.auth.passwords import hash_password_sync
from referral.config import Settings
from referral.crypto import blind_index, sealed_columns
from referral.demo.seed import MUNICIPALITIES, municipality_code
from referral.models import (
    AuditChainHead,
    AuditEvent,
    CaseAssessment,
    CaseFile,
    CaseNote,
    CaseScreening,
    Municipality,
    Organisation,
    User,
)
from referral.models.base import uuid7
from referral.models.enums import AgeBand, Agency, Concern, Gender, Urgency

OUTCOMES = (
    "withdrawn",
    "no_further_action",
    "signposted",
    "referred_to_police",
    "not_adopted",
    "consent_declined",
    "support_completed",
)
CHUNK = 5000


async def seed_cases(
    engine, settings: Settings, cases: int, seed: int = 1, pool: int | None = None
) -> dict:
    """`cases` synthetic referrals over the two years before today, in every state, and
    `pool` fresh ones in the bench municipality for the transition scenario to move."""
    # Reproducible synthetic data, nothing secret.
    rng = random.Random(seed)  # nosec B311
    ring, blind_key = settings.key_ring, settings.blind_index_secret
    started = time.perf_counter()
    password = hash_password_sync(BENCH_PASSWORD)
    municipalities, organisations, users = [], [], []
    for region, names in MUNICIPALITIES.items():
        for name in names:
            m_id, o_id, u_id = uuid7(), uuid7(), uuid7()
            code = municipality_code(name)
            municipalities.append(
                {
                    "id": m_id,
                    "code": code,
                    "name": name,
                    "region": region,
                    "created_at": datetime.now(UTC),
                    "version": 1,
                }
            )
            organisations.append(
                {
                    "id": o_id,
                    "name": f"[BENCH] {name} school",
                    "agency": "education",
                    "municipality_id": m_id,
                    "is_active": True,
                    "created_at": datetime.now(UTC),
                    "version": 1,
                }
            )
            users.append(
                {
                    "id": u_id,
                    "username": f"bench.{code}",
                    "display_name": "[BENCH]",
                    "role": "referrer",
                    "organisation_id": o_id,
                    "municipality_id": m_id,
                    "password_hash": password,
                    "is_active": True,
                    "password_changed_at": datetime.now(UTC),
                    "created_at": datetime.now(UTC),
                    "updated_at": datetime.now(UTC),
                    "version": 1,
                }
            )
    async with engine.begin() as connection:
        await connection.execute(insert(Municipality), municipalities)
        await connection.execute(insert(Organisation), organisations)
        await connection.execute(insert(User), users)
    now = datetime.now(UTC)
    people: list[tuple[str, uuid.UUID]] = []
    for start in range(0, cases, CHUNK):
        rows = [
            _case(rng, ring, blind_key, users, people, now)
            for _ in range(min(CHUNK, cases - start))
        ]
        async with engine.begin() as connection:
            await connection.execute(insert(CaseFile), rows)
    actors = await _seed_actors(engine, ring, users[0], password)
    size = SUBMITTED_POOL if pool is None else pool
    pool = await _seed_submitted_pool(engine, rng, ring, blind_key, users[0], people, now, size)
    events = await _seed_audit_trail(engine, settings, rng, users, actors, now)
    await _settle(engine)
    return {
        "cases": cases,
        "seconds": round(time.perf_counter() - started, 1),
        "audit_events": events,
        "actors": actors,
        "transition_pool": pool,
    }


# The one password of every synthetic bench account; nothing real is behind it.
BENCH_PASSWORD = "bench-password-not-secret"  # noqa: S105  # nosec B105
EVENTS_PER_CASE = 3
SUBMITTED_POOL = 8000


async def _settle(engine: AsyncEngine) -> None:
    """Leave the database as a long-running one would be, not as one just bulk-loaded.

    On PostgreSQL: the planner's statistics and the vacuum that a bulk insert otherwise
    triggers mid-load (it competed with the write scenarios at 1M cases), then a checkpoint.
    Without that checkpoint, the gigabytes the seed dirtied are written back during the
    scenarios, and each commit's WAL flush queues behind that writeback: the write scenarios,
    never the reads, ran 1.3-1.5x slower at 1M cases than at 10k, and ran as fast as at 10k
    once the seed had settled (ADR 0011). On SQLite: the WAL folded into the database file."""
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        if engine.dialect.name == "postgresql":
            await autocommit.execute(text("VACUUM ANALYZE"))
            await autocommit.execute(text("CHECKPOINT"))
        else:
            await autocommit.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))


async def _seed_actors(engine, ring, referrer: dict, password_hash: str) -> dict:
    """A coordinator and an auditor (each with TOTP) and a national analyst beside the bench
    referrer."""
    now = datetime.now(UTC)
    coordinator_id, analyst_id, auditor_id, org_id = uuid7(), uuid7(), uuid7(), uuid7()
    secret, auditor_secret = totp.new_secret(), totp.new_secret()
    common = {
        "password_hash": password_hash,
        "is_active": True,
        "password_changed_at": now,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    coordinator = {
        "id": coordinator_id,
        "username": "bench.coordinator",
        "display_name": "[BENCH]",
        "role": "coordinator",
        "organisation_id": org_id,
        "municipality_id": referrer["municipality_id"],
        "totp_enabled_at": now,
        **common,
    }
    coordinator["totp_secret_enc"] = _sealed_totp(ring, coordinator_id, secret)
    national_org = uuid7()
    analyst = {
        "id": analyst_id,
        "username": "bench.national",
        "display_name": "[BENCH]",
        "role": "national_analyst",
        "organisation_id": national_org,
        "municipality_id": None,
        **common,
        **dict.fromkeys(("totp_secret_enc", "totp_enabled_at")),  # no second factor
    }
    auditor = {
        "id": auditor_id,
        "username": "bench.auditor",
        "display_name": "[BENCH]",
        "role": "auditor",
        "organisation_id": national_org,
        "municipality_id": None,
        "totp_enabled_at": now,
        "totp_secret_enc": _sealed_totp(ring, auditor_id, auditor_secret),
        **common,
    }
    organisations = [
        {
            "id": org_id,
            "name": "[BENCH] coordination",
            "agency": "municipality",
            "municipality_id": referrer["municipality_id"],
            "is_active": True,
            "created_at": now,
            "version": 1,
        },
        {
            "id": national_org,
            "name": "[BENCH] national office",
            "agency": "municipality",
            "municipality_id": None,
            "is_active": True,
            "created_at": now,
            "version": 1,
        },
    ]
    async with engine.begin() as connection:
        await connection.execute(insert(Organisation), organisations)
        await connection.execute(insert(User), [coordinator, analyst, auditor])
    return {
        "password": BENCH_PASSWORD,
        "referrer": referrer["username"],
        "coordinator": "bench.coordinator",
        "coordinator_totp": secret,
        "national_analyst": "bench.national",
        "auditor": "bench.auditor",
        "auditor_totp": auditor_secret,
        "municipality_id": str(referrer["municipality_id"]),
    }


def _sealed_totp(ring, user_id: uuid.UUID, secret: str) -> str:
    holder = SimpleNamespace(__tablename__="user_account", id=user_id, totp_secret_enc=None)
    totp.seal_secret(ring, holder, secret)
    return holder.totp_secret_enc


async def _seed_submitted_pool(engine, rng, ring, blind_key, referrer, people, now, size) -> int:
    """Fresh referrals in the bench municipality, for the transition scenario to move on."""
    rows = []
    for _ in range(size):
        row = _case(rng, ring, blind_key, [referrer], people, now)
        row.update(state="submitted", closure_outcome=None, closed_at=None, submitted_at=now)
        row.update({f"{s}_at": None for s in ("screening", "assessment", "panel")})
        row.update({f"{s}_at": None for s in ("consent_pending", "support", "monitoring")})
        rows.append(row)
    for start in range(0, len(rows), CHUNK):
        async with engine.begin() as connection:
            await connection.execute(insert(CaseFile), rows[start : start + CHUNK])
    return len(rows)


async def _seed_audit_trail(engine, settings: Settings, rng, users, actors, now) -> int:
    """EVENTS_PER_CASE chained events per case (intake, a read, a transition), in order."""
    key = settings.audit_chain_key
    prev, seq = GENESIS, 0
    async with engine.connect() as connection:
        ids = (await connection.execute(select(CaseFile.id).order_by(CaseFile.id))).scalars()
        case_ids = list(ids)
    user = users[0]
    for start in range(0, len(case_ids), CHUNK):
        rows = []
        for case_id in case_ids[start : start + CHUNK]:
            for action in ("case.create", "case.read", "case.transition")[:EVENTS_PER_CASE]:
                seq += 1
                event = SimpleNamespace(
                    seq=seq,
                    occurred_at=now,
                    actor_user_id=user["id"],
                    actor_role="referrer",
                    actor_organisation_id=user["organisation_id"],
                    actor_municipality_id=user["municipality_id"],
                    action=action,
                    resource_type="case",
                    resource_ids=[str(case_id)],
                    outcome="allowed",
                    status_code=200,
                    request_id=uuid.uuid4().hex,
                    client_address="192.0.2.1",
                    purpose=None,
                    fields=["state"],
                )
                event.prev_hash = prev
                event.hash = prev = compute_hash(key, prev, event)
                rows.append(vars(event))
        async with engine.begin() as connection:
            await connection.execute(insert(AuditEvent), rows)
    async with engine.begin() as connection:
        await connection.execute(
            update(AuditChainHead).where(AuditChainHead.id == 1).values(seq=seq, hash=prev)
        )
    return seq


def _seal(ring, table_row_id, column, value: str) -> str:
    return ring.encrypt(value, table="case_file", column=column, row_id=table_row_id)


def _case(rng, ring, blind_key, users, people, now) -> dict:
    case_id = uuid7()
    user = rng.choice(users)
    if people and rng.random() < 0.05:  # a re-referral of someone seen before
        person, stat_person = rng.choice(people)
    else:
        born = now.date() - timedelta(days=rng.randint(10 * 365, 40 * 365))
        person = blind_index(
            blind_key, given_name=f"Bench{len(people)}", family_name="Sint", date_of_birth=born
        )
        stat_person = uuid.uuid4()
        people.append((person, stat_person))
    submitted = now - timedelta(days=rng.randint(1, 730), minutes=rng.randint(0, 1440))
    path = (
        "submitted",
        "screening",
        "assessment",
        "panel",
        "consent_pending",
        "support",
        "monitoring",
    )
    depth = rng.choices(range(len(path)), weights=(8, 12, 12, 10, 6, 14, 10))[0]
    stamps, moment = {}, submitted
    for state in path[: depth + 1]:
        stamps[f"{state}_at"] = min(moment, now)
        moment += timedelta(days=rng.randint(2, 25))
    closed = rng.random() < 0.45
    outcome = rng.choice(OUTCOMES) if closed else None
    row = {
        "id": case_id,
        "municipality_id": user["municipality_id"],
        "referrer_user_id": user["id"],
        "referrer_organisation_id": user["organisation_id"],
        "referrer_sector": rng.choice(list(Agency)).value,
        "primary_concern": rng.choice(list(Concern)).value,
        "urgency": rng.choice(list(Urgency)).value,
        "state": "closed" if closed else path[depth],
        "closure_outcome": outcome,
        "exit_reason": None,
        "subject_gender": rng.choice(list(Gender)).value,
        "subject_age_band": rng.choice(list(AgeBand)).value,
        "blind_index": person,
        "stat_person": stat_person,
        "legal_hold_at": None,
        "legal_hold_by": None,
        "legal_hold_reason_enc": None,
        "purged_at": None,
        "given_name_enc": _seal(ring, case_id, "given_name", "Bench"),
        "family_name_enc": _seal(ring, case_id, "family_name", "Sint"),
        "date_of_birth_enc": _seal(ring, case_id, "date_of_birth", "2000-01-01"),
        "address_enc": None,
        "contacts_enc": None,
        "guardian_enc": None,
        "languages_enc": None,
        "description_enc": _seal(ring, case_id, "description", "[BENCH] synthetic referral"),
        "indicators_enc": _seal(ring, case_id, "indicators", json.dumps(["other"])),
        "submitted_at": None,
        "screening_at": None,
        "assessment_at": None,
        "panel_at": None,
        "consent_pending_at": None,
        "support_at": None,
        "monitoring_at": None,
        "closed_at": min(moment, now) if closed else None,
        "created_at": submitted,
        "updated_at": now,
        "version": 1,
    }
    row.update(stamps)
    return row


NOTES_PER_READ_CASE = 2


async def seed_records(engine: AsyncEngine, settings: Settings, case_ids: list) -> int:
    """The records a coordinator's read returns, for the cases the read scenario reads: two
    notes each, the screening of a case that reached screening, and an assessment of one
    that reached assessment, each sealed to its own row. Without them a read decrypts and
    returns nothing but the case itself."""
    ring, now = settings.key_ring, datetime.now(UTC)
    async with engine.connect() as connection:
        by_name = select(User.id).where(User.username == "bench.coordinator")
        author = (await connection.execute(by_name)).scalar_one()
        reached = select(CaseFile.id, CaseFile.screening_at, CaseFile.assessment_at)
        cases = (await connection.execute(reached.where(CaseFile.id.in_(case_ids)))).all()
    written = {CaseNote: [], CaseScreening: [], CaseAssessment: []}
    by = {"author_agency": "municipality"}
    for case_id, screened_at, assessed_at in cases:
        for number in range(1, NOTES_PER_READ_CASE + 1):
            body = f"[BENCH] synthetic note {number}: a home visit was arranged and held."
            written[CaseNote].append(
                _sealed_row(ring, CaseNote, case_id, body=body)
                | by
                | {"section": "general", "kind": "note", "author_user_id": author}
                | {"created_at": now}
            )
        if screened_at is not None:
            summary = "[BENCH] synthetic screening: the referral meets the threshold."
            written[CaseScreening].append(
                _sealed_row(ring, CaseScreening, case_id, summary=summary)
                | {"rereferrals_reviewed": True, "recorded_by": author, "recorded_at": now}
            )
        if assessed_at is not None:
            factors = json.dumps(
                [
                    {"dimension": "engagement", "factor": "online_content", "score": 2},
                    {"dimension": "intent", "factor": "expressed_grievance", "score": 1},
                    {"dimension": "capability", "factor": "peer_network", "score": 1},
                ]
            )
            summary = "[BENCH] synthetic assessment: moderate engagement, low intent."
            written[CaseAssessment].append(
                _sealed_row(ring, CaseAssessment, case_id, factors=factors, summary=summary)
                | by
                | {"section": "general", "author_user_id": author, "assessed_at": now}
            )
    for model, rows in written.items():
        for start in range(0, len(rows), CHUNK):
            async with engine.begin() as connection:
                await connection.execute(insert(model), rows[start : start + CHUNK])
    return sum(len(rows) for rows in written.values())


def _sealed_row(ring, model, case_id, **fields: str) -> dict:
    row_id = uuid7()
    sealed = sealed_columns(ring, model.__tablename__, row_id, **fields)
    return {"id": row_id, "case_id": case_id, **sealed}
