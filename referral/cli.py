"""The `referral` command."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import typer

from referral import migrate
from referral.config import SECRET_FIELDS, DatabaseSettings, generate_secret, get_settings

app = typer.Typer(
    help="referral: case management for a municipal referral mechanism.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Migrate the database (REFERRAL_DATABASE_URL) up to a revision."""
    migrate.upgrade(DatabaseSettings().database_url, revision)


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to a revision (`base` removes every table)."""
    migrate.downgrade(DatabaseSettings().database_url, revision)


@asynccontextmanager
async def _database() -> AsyncIterator[tuple]:
    """The settings and the engine of a batch command (no statement deadline: db.py)."""
    from referral.db import create_engine

    settings = get_settings()
    engine = create_engine(settings, batch=True)
    try:
        yield settings, engine
    finally:
        await engine.dispose()


def _read_checkpoint(checkpoint_file: Path | None):
    from referral.audit.chain import Checkpoint

    if checkpoint_file is None:
        return None
    data = json.loads(checkpoint_file.read_text())
    return Checkpoint(seq=int(data["seq"]), hash=str(data["hash"]))


async def _verify(checkpoint, show_progress: bool):
    from referral.audit import chain
    from referral.db import create_sessionmaker

    async with _database() as (settings, engine):
        sessions = create_sessionmaker(engine)
        async with sessions() as session:
            total = await chain.count_events(session)
        async with sessions() as session:  # the walk reads a snapshot of its own
            if not show_progress:
                return await chain.verify(session, settings.audit_chain_keys, checkpoint)
            with typer.progressbar(length=total, label="verifying", file=sys.stderr) as bar:
                return await chain.verify(
                    session, settings.audit_chain_keys, checkpoint, progress=bar.update
                )


@audit_app.command("verify")
def audit_verify(
    checkpoint: Path | None = typer.Option(
        None, help="A head printed earlier by `referral audit checkpoint`: detects truncation"
    ),
    progress: bool = typer.Option(True, help="Show a progress bar on standard error"),
) -> None:
    """Verify the hash chain; exit 1 and name the first broken event if it does not hold."""
    result = asyncio.run(_verify(_read_checkpoint(checkpoint), progress))
    if result.unchained:
        typer.echo(f"note: {result.unchained} events predate the chain and are not covered")
    if result.staged:
        typer.echo(f"note: {result.staged} events are committed and MAC'd, not yet chained")
    if result.ok:
        typer.echo(
            f"OK: {result.checked} events verified; head {result.head_seq} {result.head_hash}"
        )
        return
    typer.echo(f"BROKEN at event {result.first_broken}: {result.reason}", err=True)
    raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Print the chain's head (sequence and hash) as JSON, to be kept outside the database."""
    result = asyncio.run(_verify(None, False))
    if not result.ok:
        typer.echo(f"BROKEN at event {result.first_broken}: {result.reason}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps({"seq": result.head_seq, "hash": result.head_hash}))


stats_app = typer.Typer(help="Anonymised statistics.", no_args_is_help=True)
app.add_typer(stats_app, name="stats")


async def _snapshot(as_of):
    from referral.audit.chain import seal_pending, track
    from referral.db import create_sessionmaker
    from referral.models import AuditEvent
    from referral.stats.policy import load_reporting_policy
    from referral.stats.snapshot import build_snapshot

    async with _database() as (settings, engine):
        policy = load_reporting_policy(settings.policies_dir / "reporting.yaml")
        async with create_sessionmaker(engine)() as session, session.begin():
            snapshot = await build_snapshot(session, policy, as_of, None)
            track(
                session,
                AuditEvent(
                    action="stats.snapshot",
                    outcome="allowed",
                    resource_type="stats_snapshot",
                    resource_ids=[str(snapshot.id)],
                    purpose="cli",
                ),
            )
            await seal_pending(session, settings.audit_chain_keys)
            return snapshot


@stats_app.command("snapshot")
def stats_snapshot(
    as_of: str = typer.Option("", help="Release date (YYYY-MM-DD); default today"),
) -> None:
    """Freeze the released periods and publish the protected family of tables."""
    from datetime import date

    from referral.stats.disclosure import GateFailure
    from referral.stats.snapshot import FutureRelease

    day = date.fromisoformat(as_of) if as_of else date.today()
    try:
        snapshot = asyncio.run(_snapshot(day))
    except FutureRelease as exc:
        typer.echo(f"refused: {exc}; a snapshot releases only periods that have ended", err=True)
        raise typer.Exit(2) from exc
    except GateFailure as exc:
        typer.echo(f"refused: the audit gate would not publish: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"snapshot {snapshot.id} as of {snapshot.as_of}: {snapshot.cells} cells, "
        f"{snapshot.suppressed} suppressed"
    )


retention_app = typer.Typer(help="Retention of case data.", no_args_is_help=True)
app.add_typer(retention_app, name="retention")


async def _retention(apply: bool, as_of, show_progress: bool):
    from referral.audit.chain import seal_pending, track
    from referral.db import create_sessionmaker
    from referral.models import AuditEvent
    from referral.retention.policy import load_retention_policy
    from referral.retention.service import due_for_purge, run_retention
    from referral.retention.sweep import sweep

    def audit_event(case_id, touched):
        track(
            session,
            AuditEvent(
                action="retention.purge",
                outcome="allowed",
                resource_type="case",
                resource_ids=[str(case_id)],
                fields=touched,
                purpose="retention",
            ),
        )

    async with _database() as (settings, engine):
        policy = load_retention_policy(settings.policies_dir / "retention.yaml")
        async with create_sessionmaker(engine)() as session, session.begin():
            total = len(await due_for_purge(session, policy, as_of))
            if show_progress and apply and total:
                with typer.progressbar(length=total, label="purging", file=sys.stderr) as bar:
                    due = await run_retention(
                        session, policy, as_of, apply, audit_event, bar.update
                    )
            else:
                due = await run_retention(session, policy, as_of, apply, audit_event)
            swept = await sweep(session, as_of, settings.idempotency_replay_hours, apply)
            for table, count in swept.by_table().items():
                if apply and count:
                    track(
                        session,
                        AuditEvent(
                            action="retention.sweep",
                            outcome="allowed",
                            resource_type=table,
                            purpose="retention",
                        ),
                    )
            await seal_pending(session, settings.audit_chain_keys)
            return due, swept


@retention_app.command("run")
def retention_run(
    apply: bool = typer.Option(False, "--apply", help="Purge; without it, only list"),
    as_of: str = typer.Option("", help="Pretend today is this date (YYYY-MM-DD)"),
    progress: bool = typer.Option(True, help="Show a progress bar on standard error"),
) -> None:
    """Purge identity, notes and free text of closed cases past their retention period, and
    delete expired sessions and idempotency records past their replay window."""
    from datetime import UTC, datetime

    moment = datetime.fromisoformat(as_of).replace(tzinfo=UTC) if as_of else datetime.now(UTC)
    due, swept = asyncio.run(_retention(apply, moment, progress))
    for item in due:
        typer.echo(
            f"{'purged' if apply else 'would purge'} case {item.case_id} "
            f"(closed {item.closed_at:%Y-%m-%d}, due {item.due_at:%Y-%m-%d})"
        )
    typer.echo(
        f"{swept.sessions} expired session(s) and {swept.replay_records} idempotency "
        f"record(s) past their replay window {'deleted' if apply else 'due'}"
    )
    typer.echo(f"{len(due)} case(s) {'purged' if apply else 'due; dry run, nothing changed'}")


keys_app = typer.Typer(help="Encryption and blind-index keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


async def _rotate(batch: int, show_progress: bool):
    from referral.db import create_sessionmaker
    from referral.retention.keys import count_stale, rotate

    async with _database() as (settings, engine):
        sessionmaker = create_sessionmaker(engine)
        total = await count_stale(sessionmaker, settings.key_ring)
        if not show_progress or not total:
            return await rotate(sessionmaker, settings.key_ring, settings.audit_chain_keys, batch)
        with typer.progressbar(length=total, label="re-encrypting", file=sys.stderr) as bar:
            return await rotate(
                sessionmaker, settings.key_ring, settings.audit_chain_keys, batch, bar.update
            )


@keys_app.command("rotate")
def keys_rotate(
    batch: int = typer.Option(500, min=1, help="Rows per committed batch"),
    progress: bool = typer.Option(True, help="Show a progress bar on standard error"),
) -> None:
    """Re-encrypt every sealed field with the newest key of REFERRAL_DATA_KEYS (resumable)."""
    rotated = asyncio.run(_rotate(batch, progress))
    for table, count in rotated.items():
        typer.echo(f"{table}: {count} row(s) re-encrypted")
    typer.echo(
        f"done: {sum(rotated.values())} row(s); every value is now under the newest "
        "key, and older keys can be removed from REFERRAL_DATA_KEYS"
    )


async def _reindex(batch: int, show_progress: bool):
    from referral.db import create_sessionmaker
    from referral.retention.keys import count_indexed, reindex

    async with _database() as (settings, engine):
        sessionmaker = create_sessionmaker(engine)
        keys = (settings.key_ring, settings.blind_index_secret, settings.audit_chain_keys)
        total = await count_indexed(sessionmaker)
        if not show_progress or not total:
            return await reindex(sessionmaker, *keys, batch)
        with typer.progressbar(length=total, label="re-indexing", file=sys.stderr) as bar:
            return await reindex(sessionmaker, *keys, batch, bar.update)


@keys_app.command("reindex")
def keys_reindex(
    batch: int = typer.Option(500, min=1, help="Cases per committed batch"),
    progress: bool = typer.Option(True, help="Show a progress bar on standard error"),
) -> None:
    """Compute every case's blind index anew under REFERRAL_BLIND_INDEX_KEY (resumable)."""
    done = asyncio.run(_reindex(batch, progress))
    typer.echo(f"{done.checked} case(s) checked, {done.changed} re-indexed")
    typer.echo(
        "done: every blind index is now under REFERRAL_BLIND_INDEX_KEY, and "
        "REFERRAL_BLIND_INDEX_KEY_PREVIOUS can be removed"
    )


@app.command("secrets")
def print_secrets() -> None:
    """Print freshly generated secrets as REFERRAL_* environment lines."""
    for name in SECRET_FIELDS:
        typer.echo(f"REFERRAL_{name.upper()}={generate_secret(name)}")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@app.command("create-admin")
def create_admin(
    username: str = typer.Option(..., help="The administrator's username"),
    display_name: str = typer.Option("Administrator", help="Name shown in the audit trail"),
    password_stdin: bool = typer.Option(False, help="Read the password from standard input"),
) -> None:
    """Create an administrator account (there are no default accounts)."""
    from referral.bootstrap import BootstrapError, create_admin_account

    password = _read_password(password_stdin)
    try:
        user_id = asyncio.run(
            create_admin_account(get_settings(), username, display_name, password)
        )
    except BootstrapError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"created admin {username} ({user_id})")


@app.command("serve")
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    migrate_first: bool = typer.Option(False, "--migrate", help="Migrate to head first"),
    access_log: bool = typer.Option(True, help="Log each request (uvicorn's access log)"),
) -> None:
    """Serve the API with uvicorn."""
    import uvicorn

    settings = get_settings()  # refuses to start here, with the reason, if a secret is bad
    if migrate_first:
        migrate.upgrade(settings.database_url)
    uvicorn.run(
        "referral.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        proxy_headers=True,
        server_header=False,
        timeout_graceful_shutdown=30,
    )


def _load_dev_secrets() -> None:
    var_dir = DatabaseSettings().var_dir
    var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    dev_secrets = var_dir / "dev-secrets.env"
    if not dev_secrets.exists():
        fd = os.open(dev_secrets, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("# Development secrets, generated by `make run`. Never for production.\n")
        typer.echo(f"generated development secrets in {dev_secrets}")
    known = dict(
        line.split("=", 1)
        for line in dev_secrets.read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    )
    # A secret that a later release adds is generated into the same file; none is replaced.
    with dev_secrets.open("a") as handle:
        for name in SECRET_FIELDS:
            variable = f"REFERRAL_{name.upper()}"
            if variable not in known:
                known[variable] = generate_secret(name)
                handle.write(f"{variable}={known[variable]}\n")
    for variable, value in known.items():
        os.environ.setdefault(variable, value)


@app.command("dev")
def dev(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Development: secrets in var/, migrate, seed synthetic demo data once, serve."""
    from referral.demo.seed import seed_demo

    os.umask(0o077)  # the SQLite file, its WAL and the secrets are readable by this user only
    os.environ.setdefault("REFERRAL_ENV", "development")
    _load_dev_secrets()
    settings = get_settings()
    migrate.upgrade(settings.database_url)
    logins = asyncio.run(seed_demo(settings))
    typer.echo(logins)
    typer.echo(f"serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    serve(host=host, port=port, workers=1, migrate_first=False)


@app.command("seed-demo")
def seed_demo_command() -> None:
    """Seed synthetic demo data (development mode only) and print the demo logins."""
    from referral.demo.seed import seed_demo

    typer.echo(asyncio.run(seed_demo(get_settings())))


if __name__ == "__main__":
    app()
