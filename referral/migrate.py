"""Running the Alembic migrations from code (CLI, tests, readiness)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from referral.config import DatabaseSettings


def alembic_config(database_url: str, ini_path: Path | None = None) -> Config:
    ini_path = ini_path or DatabaseSettings().alembic_ini
    config = Config(str(ini_path))
    config.set_main_option("script_location", str(ini_path.parent / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)
