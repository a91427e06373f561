"""create_app(): settings, policies, database, middleware, error handlers, routers."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from alembic.script import ScriptDirectory
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from referral import api, audit, migrate
from referral.audit.sealer import Sealer
from referral.audit.verifications import Verifier
from referral.auth import passwords, tokens
from referral.auth.dependencies import KnownActors
from referral.authz.policy import load_access_policy
from referral.cases.lean_intake import LeanIntake
from referral.cases.lean_list import LeanCaseList
from referral.cases.lean_read import LeanCaseRead
from referral.cases.lean_transition import LeanTransition
from referral.cases.service import CaseKeys
from referral.cases.workflow import load_workflow
from referral.config import Settings, get_settings
from referral.db import (
    create_engine,
    create_sessionmaker,
    database_unavailable,
    unavailable_error,
)
from referral.errors import Busy, ProblemError, install_error_handlers
from referral.lean import LeanStatements, RememberedActors
from referral.middleware import InputGuardMiddleware, RequestContextMiddleware
from referral.stats.builds import Builder
from referral.stats.lean_query import LeanStatsQuery
from referral.stats.policy import load_reporting_policy

logger = logging.getLogger("referral")

# Denials worth an audit event: an attacker probing, or a user reaching past their scope.
AUDITED_DENIALS = frozenset({401, 403, 404, 429})


def migration_head(settings: Settings) -> str:
    config = migrate.alembic_config(settings.database_url, settings.alembic_ini)
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        raise RuntimeError("no Alembic migrations found")
    return head


# Net new container objects before a young collection (Python's default is 700).
YOUNG_COLLECTION_AFTER = 10_000


def freeze_startup_heap() -> None:
    """Move what start-up built (modules, policies, the app, its routes and schemas) out of
    the collector's reach. Every full collection scanned those objects again: on a serving
    worker, a pause of about 130 ms every second or so, a sixth of its CPU and the whole of
    its p99 (ADR 0016). They live as long as the process, so nothing is lost by not
    scanning them; anything freed later is still freed by its reference count.

    Then collect the young generation less often. Requests in flight hold more than 700
    new objects between them, so at the default a collection ran every few milliseconds,
    freed nothing (requests make no cycles; their objects go by reference count), and
    promoted the requests' objects for the older generations to scan again: 70 ms a
    second of a serving worker's time, measured by `gc.callbacks` during reads, against
    0.3 ms at this threshold. A cycle is still collected, once this many objects have
    piled up, a few MB at most (ADR 0036)."""
    gc.collect()  # garbage left by start-up is freed, not frozen
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, older, oldest)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    access_policy = load_access_policy(settings.policies_dir / "access.yaml")
    workflow = load_workflow(settings.policies_dir / "workflow.yaml")
    reporting_policy = load_reporting_policy(settings.policies_dir / "reporting.yaml")
    passwords.configure(settings.password_hash_concurrency, settings.password_hash_wait_seconds)
    engine = create_engine(settings)
    sealer = Sealer(engine, settings.audit_chain_keys, settings.audit_seal_wait_seconds)
    sessionmaker = create_sessionmaker(engine)
    verifier = Verifier(sessionmaker, sealer, settings)
    builder = Builder(sessionmaker, sealer, settings, reporting_policy)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sealer.start()  # chains whatever an earlier process left staged
        for runner in (verifier.runner, builder.runner):
            runner.watch()  # ends the jobs of a worker that died, as soon as they go stale
        freeze_startup_heap()
        yield
        await verifier.finished()  # a walk cut short is recorded as such, and chained
        await builder.finished()  # so is a build, and its process is ended
        await sealer.finished()
        await engine.dispose()

    docs = settings.docs_enabled
    app = FastAPI(
        title="referral",
        version="0.1.0",
        summary="Case management for a municipal referral mechanism (P/CVE).",
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.verified_tokens = tokens.VerifiedTokens(settings)
    app.state.known_actors = KnownActors()
    app.state.access_policy = access_policy
    app.state.audit_keys = settings.audit_chain_keys
    app.state.reporting_policy = reporting_policy
    app.state.case_keys = CaseKeys(
        ring=settings.key_ring,
        blind_key=settings.blind_index_secret,
        workflow=workflow,
        previous_blind_key=settings.blind_index_previous_secret,
    )
    app.state.engine = engine
    lean = not settings.is_sqlite  # the lean answers send asyncpg statements (ADR 0028)
    app.state.lean_statements = LeanStatements(engine) if lean else None
    remembered = RememberedActors(access_policy, app.state.verified_tokens, app.state.known_actors)
    case_answers = {
        "lean_case_read": (LeanCaseRead, settings.lean_case_reads),
        "lean_case_list": (LeanCaseList, settings.lean_case_lists),
        "lean_intake": (LeanIntake, settings.lean_intakes),
        "lean_transition": (LeanTransition, settings.lean_transitions),
    }
    for name, (kind, wanted) in case_answers.items():
        setattr(
            app.state,
            name,
            kind(app.state.lean_statements, remembered, sealer, app.state.case_keys)
            if lean and wanted
            else None,
        )
    app.state.lean_stats_query = (
        LeanStatsQuery(app.state.lean_statements, remembered, sealer)
        if lean and settings.lean_stats_queries
        else None
    )
    app.state.sessionmaker = sessionmaker
    app.state.sealer = sealer
    app.state.verifier = verifier
    app.state.builder = builder
    app.state.migration_head = migration_head(settings)

    install_error_handlers(app)
    _install_database_unavailable(app)
    _install_denial_audit(app)
    api.mount(app)
    app.add_middleware(InputGuardMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app


def _install_database_unavailable(app: FastAPI) -> None:
    """A database that is down, restarting or out of connections is 503 with Retry-After."""
    problem_handler = app.exception_handlers[ProblemError]
    unexpected_handler = app.exception_handlers[Exception]

    async def unavailable(request: Request, exc: Exception) -> Response:
        if database_unavailable(exc):
            logger.warning("database unavailable on %s: %r", request.url.path, exc)
            return await problem_handler(request, unavailable_error(exc))
        return await unexpected_handler(request, exc)

    for error in (DBAPIError, PoolTimeout, OSError):
        app.add_exception_handler(error, unavailable)


async def _record_unavailable(request: Request, exc: Busy) -> None:
    """A refusal for want of a turn is audited (outcome `error`). If even that cannot be
    written, the answer is still the 503: the request has done nothing to fail closed on."""
    try:
        await audit.record_denied(request, exc.status, exc.audit_reason, outcome="error")
    except Exception:
        logger.exception("could not audit a request refused as %s", exc.audit_reason)


def _install_denial_audit(app: FastAPI) -> None:
    """Denied attempts are audited in their own transaction, after the request rolled back."""
    problem_handler = app.exception_handlers[ProblemError]

    async def audited_problem(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, ProblemError):  # registered for ProblemError only
            raise exc
        if request.url.path.startswith(api.API_PREFIX):
            if exc.status in AUDITED_DENIALS:
                await audit.record_denied(request, exc.status, exc.slug)
            elif isinstance(exc, Busy):
                await _record_unavailable(request, exc)
        return await problem_handler(request, exc)

    app.add_exception_handler(ProblemError, audited_problem)
