"""Settings, read from the environment with the REFERRAL_ prefix.

Outside development mode the app refuses to start with a missing, short or example secret,
and names the setting that is wrong.
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from referral.crypto import KeyRing, KeyRingError, derive_key, generate_key_entry

if TYPE_CHECKING:
    from referral.audit.chain import AuditKeys

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIN_SECRET_BYTES = 32

# Placeholders that appear in documentation; a deployment that copied one is refused.
EXAMPLE_SECRETS = frozenset(
    {
        "change-me",
        "changeme",
        "secret",
        "example",
        "replace-with-32-random-bytes-from-a-secret-store",
        "0123456789abcdef0123456789abcdef",
    }
)

SECRET_FIELDS = ("jwt_secret", "data_keys", "blind_index_key", "audit_key")


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class DatabaseSettings(BaseSettings):
    """Just what migrations need, so `alembic upgrade` does not require the app's secrets."""

    model_config = SettingsConfigDict(env_prefix="REFERRAL_", frozen=True, extra="ignore")

    var_dir: Path = PROJECT_ROOT / "var"
    database_url: str = ""
    alembic_ini: Path = PROJECT_ROOT / "alembic.ini"

    @model_validator(mode="before")
    @classmethod
    def _embedded_database_by_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("database_url"):
            var_dir = Path(data.get("var_dir") or PROJECT_ROOT / "var")
            data = {**data, "database_url": f"sqlite+aiosqlite:///{var_dir / 'referral.db'}"}
        return data


class Settings(DatabaseSettings):
    env: Environment = Environment.production
    database_pool_size: int = Field(default=20, ge=1, le=200)
    # well inside the 2 s in which an exhausted pool must answer 503 (issue 7), on a busy host
    database_pool_timeout_seconds: float = Field(default=1.0, gt=0)
    database_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # A statement the database does not answer in this time fails (503), and its connection
    # is closed. Without it, a connection that stalls without closing (a hung server, a
    # firewall dropping its state) holds its request, and its place in the pool, until TCP
    # gives up: many minutes. Longer than any statement a request makes at 1M cases. The
    # CLI's batch commands have none (db.create_engine).
    database_statement_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    # how long a request waits for its audit events to be chained (ADR 0014); a lean
    # answer's event is not staged, so past this its request is refused with 503 (ADR 0031)
    audit_seal_wait_seconds: float = Field(default=2.0, gt=0)
    # On PostgreSQL, a case read by an actor already signed in on this worker is one
    # statement on the driver, the full path answering whatever it cannot (ADR 0028). Off,
    # every read takes the full path: for an operator who suspects the lean one.
    lean_case_reads: bool = True
    # On PostgreSQL, a statistics query asked before, by an actor already signed in on this
    # worker and not limited to one municipality, is answered from the same snapshot, its
    # audit event written by the sealer's round while the actor and the snapshot still hold
    # (ADR 0029, 0031). Off, every query is the full path.
    lean_stats_queries: bool = True
    # On PostgreSQL, an unfiltered list page asked by an actor already signed in on this
    # worker is one statement on the driver, its audit event written by the sealer's round
    # (ADR 0030, 0031). Off, every list is the full path.
    lean_case_lists: bool = True
    # On PostgreSQL, a referral from an actor already signed in on this worker, with a body
    # and key the full path would take, is written by the sealer's round with its audit
    # event, in one statement and one transaction (ADR 0032). Off, every referral is the
    # full path.
    lean_intakes: bool = True
    # On PostgreSQL, a transition asked by an actor already signed in on this worker is
    # decided on the case as one statement reads it, and written by the sealer's round with
    # its audit event while the case is still at that version (ADR 0032). Off, every
    # transition is the full path.
    lean_transitions: bool = True

    jwt_secret: SecretStr | None = None
    # Field-encryption key ring, `1:<base64 32 bytes>[,2:<...>]`; the newest encrypts.
    data_keys: SecretStr | None = None
    # HMAC key of the blind index used to find re-referrals without decrypting.
    blind_index_key: SecretStr | None = None
    # The key before it, only while `referral keys reindex` moves every index to the new
    # one: until then an intake also finds the earlier referrals indexed under it.
    blind_index_key_previous: SecretStr | None = None
    # HMAC key of the audit hash chain; kept outside the database it protects.
    audit_key: SecretStr | None = None
    # The earlier audit keys, comma-separated: to verify the stretches of the chain chained
    # under them (keep them as long as the trail), and to accept events still staged under
    # one. The chain moves to the current key by a marker event (ADR 0023).
    audit_keys_previous: SecretStr | None = None
    jwt_issuer: str = "referral"
    jwt_audience: str = "referral-api"
    access_token_minutes: int = Field(default=15, ge=1, le=60)
    refresh_token_hours: int = Field(default=12, ge=1, le=24 * 14)
    # How long a referral's Idempotency-Key replays its receipt; `retention run` deletes the
    # record after that, and the same key then submits anew (referral.retention.sweep).
    idempotency_replay_hours: int = Field(default=24, ge=1, le=24 * 30)

    login_max_failures: int = Field(default=5, ge=1)
    login_backoff_base_seconds: int = Field(default=30, ge=1)
    login_backoff_max_seconds: int = Field(default=900, ge=1)
    password_hash_concurrency: int = Field(default=2, ge=1)
    # How long a sign-in waits for the password hasher before it is answered 503 (issue 7:
    # a busy service answers within 2 s). It waits holding no database connection.
    password_hash_wait_seconds: float = Field(default=1.5, gt=0, le=30)

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    docs_enabled: bool = True
    policies_dir: Path = PROJECT_ROOT / "policies"

    @model_validator(mode="after")
    def _secrets_are_strong(self) -> Settings:
        if self.env is Environment.development:
            return self
        problems = [problem for name in SECRET_FIELDS if (problem := _secret_problem(self, name))]
        if problems:
            raise ValueError("refusing to start: " + "; ".join(problems))
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def key_ring(self) -> KeyRing:
        if self.data_keys is None:
            raise RuntimeError("REFERRAL_DATA_KEYS is not set")
        return KeyRing.parse(self.data_keys.get_secret_value())

    @property
    def blind_index_secret(self) -> bytes:
        if self.blind_index_key is None:
            raise RuntimeError("REFERRAL_BLIND_INDEX_KEY is not set")
        return derive_key(self.blind_index_key.get_secret_value(), "blind-index/v1")

    @property
    def blind_index_previous_secret(self) -> bytes | None:
        previous = self.blind_index_key_previous
        return (
            None if previous is None else derive_key(previous.get_secret_value(), "blind-index/v1")
        )

    @property
    def audit_chain_key(self) -> bytes:
        if self.audit_key is None:
            raise RuntimeError("REFERRAL_AUDIT_KEY is not set")
        return derive_key(self.audit_key.get_secret_value(), "audit-chain/v1")

    @property
    def audit_chain_keys(self) -> AuditKeys:
        from referral.audit.chain import AuditKeys  # the chain imports the models; not here

        listed = (self.audit_keys_previous or SecretStr("")).get_secret_value().split(",")
        previous = tuple(derive_key(p.strip(), "audit-chain/v1") for p in listed if p.strip())
        if self.audit_chain_key in previous:  # the chain never goes back to a key it left
            raise RuntimeError("REFERRAL_AUDIT_KEY is also in REFERRAL_AUDIT_KEYS_PREVIOUS")
        return AuditKeys(self.audit_chain_key, previous)

    @property
    def jwt_key(self) -> str:
        if self.jwt_secret is None:
            raise RuntimeError("REFERRAL_JWT_SECRET is not set")
        return self.jwt_secret.get_secret_value()


def _secret_problem(settings: Settings, name: str) -> str | None:
    env_name = f"REFERRAL_{name.upper()}"
    value: SecretStr | None = getattr(settings, name)
    if value is None or not value.get_secret_value():
        return f"{env_name} is missing"
    raw = value.get_secret_value()
    if raw.strip().lower() in EXAMPLE_SECRETS:
        return f"{env_name} is an example value; generate one with `referral secrets`"
    if len(raw.encode()) < MIN_SECRET_BYTES:
        return f"{env_name} is shorter than {MIN_SECRET_BYTES} bytes"
    if name == "data_keys":
        try:
            KeyRing.parse(raw)
        except KeyRingError as exc:
            return f"{env_name} is malformed: {exc}"
    return None


def generate_secret(name: str) -> str:
    """A fresh value for one of SECRET_FIELDS."""
    if name == "data_keys":
        return generate_key_entry(1)
    return secrets.token_urlsafe(48)


def get_settings() -> Settings:
    return Settings()
