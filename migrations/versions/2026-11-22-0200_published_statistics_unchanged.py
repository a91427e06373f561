"""published statistics are never changed

Revision ID: 3d6a9e1f4b27
Revises: 9b3f0c6d2e15
Create Date: 2026-11-22 02:00:00+00:00

A snapshot, once published, is what every later answer quotes; a correction is a new
snapshot, which supersedes it. So neither a snapshot nor its cells is ever updated or
deleted: the database refuses it, as it does for the audit trail.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "3d6a9e1f4b27"
down_revision: str | None = "9b3f0c6d2e15"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFUSAL = "published statistics are never changed: build a new snapshot"
TABLES = ("stats_snapshot", "stats_cell")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE FUNCTION published_statistics_unchanged() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = 'insufficient_privilege';
            END $$
        """)
        for table in TABLES:
            op.execute(f"""
                CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table}
                FOR EACH ROW EXECUTE FUNCTION published_statistics_unchanged()
            """)
            op.execute(f"""
                CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
                FOR EACH STATEMENT EXECUTE FUNCTION published_statistics_unchanged()
            """)
    else:
        for table in TABLES:
            for event in ("UPDATE", "DELETE"):
                op.execute(f"""
                    CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table}
                    BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END
                """)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update_delete ON {table}")
        op.execute("DROP FUNCTION IF EXISTS published_statistics_unchanged()")
    else:
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
