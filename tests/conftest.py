from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pyotp
import pytest
from sqlmodel import select

from referral import migrate
from referral.auth.passwords import hash_password_sync
from referral.config import Environment, Settings, generate_secret
from referral.crypto import seal_field
from referral.main import create_app
from referral.models import Municipality, Organisation, User
from referral.models.base import utcnow
from referral.models.enums import Agency, Role
from tests.databases import PG_ENV, ScratchDatabase, postgres_server_url

IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_report_header(config: pytest.Config) -> str:
    return f"database backend: {'postgresql' if postgres_server_url() else 'sqlite'}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On SQLite, PostgreSQL-only tests are deselected (they run in the PostgreSQL pass)."""
    if postgres_server_url():
        return
    deselected = [item for item in items if item.get_closest_marker("postgres_only")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("postgres_only")]


def pytest_sessionstart(session: pytest.Session) -> None:
    server = postgres_server_url()
    if server is None:
        return
    from tests.databases import server_execute

    try:
        asyncio.run(server_execute(server, "SELECT 1"))
    except Exception as exc:  # a missing PostgreSQL is a failure, never a skip
        pytest.exit(f"{PG_ENV} is set but PostgreSQL is not reachable: {exc}", returncode=3)


@pytest.fixture(scope="session")
def test_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScratchDatabase]:
    database = ScratchDatabase.create(tmp_path_factory.mktemp("db"))
    try:
        migrate.upgrade(database.url)
        yield database
    finally:
        database.drop()


@pytest.fixture(scope="session")
def settings(test_db: ScratchDatabase) -> Settings:
    return Settings(
        env=Environment.test,
        database_url=test_db.url,
        jwt_secret=generate_secret("jwt_secret"),
        data_keys=generate_secret("data_keys"),
        blind_index_key=generate_secret("blind_index_key"),
        audit_key=generate_secret("audit_key"),
        password_hash_concurrency=4,
    )


@pytest.fixture(scope="session")
async def app(settings: Settings):
    application = create_app(settings)
    yield application
    await application.state.verifier.finished()
    await application.state.sealer.finished()
    await application.state.engine.dispose()


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


# --- the directory that tests act in -----------------------------------------------------

PASSWORD = "correct horse battery staple"


@dataclass
class Account:
    id: uuid.UUID
    username: str
    role: str
    organisation_id: uuid.UUID
    municipality_id: uuid.UUID | None
    password: str = PASSWORD
    totp_secret: str | None = None
    last_step: int | None = None

    def next_code(self) -> str:
        """A TOTP code the server has not seen yet (each works once). Only the current and
        next steps: the previous one could fall out of the server's window at a boundary."""
        import time

        import pyotp

        while True:
            current = int(time.time() // 30)
            for step in (current, current + 1):
                if self.last_step is None or step > self.last_step:
                    self.last_step = step
                    return pyotp.TOTP(self.totp_secret).at(step * 30)
            time.sleep(30 - time.time() % 30 + 0.1)


class World:
    """Creates municipalities, organisations and accounts directly, for test setup only."""

    def __init__(self, app) -> None:
        self.app = app
        self._hash = hash_password_sync(PASSWORD)

    async def municipality(self, region: str = "Gjilan") -> Municipality:
        code = f"m-{uuid.uuid4().hex[:10]}"
        municipality = Municipality(code=code, name=f"Testville {code}", region=region)
        async with self.app.state.sessionmaker() as s, s.begin():
            s.add(municipality)
        return municipality

    async def organisation(
        self, agency: Agency = Agency.education, municipality: Municipality | None = None
    ) -> Organisation:
        organisation = Organisation(
            name=f"Test {agency.value} {uuid.uuid4().hex[:6]}",
            agency=agency,
            municipality_id=municipality.id if municipality else None,
        )
        async with self.app.state.sessionmaker() as s, s.begin():
            s.add(organisation)
        return organisation

    async def account(
        self,
        role: Role,
        *,
        agency: Agency = Agency.education,
        municipality: Municipality | None = None,
        password: str | None = None,
    ) -> Account:
        national = self.app.state.access_policy.is_national(role)
        if not national and municipality is None:
            municipality = await self.municipality()
        organisation = await self.organisation(agency, None if national else municipality)
        username = f"{role.value}.{uuid.uuid4().hex[:10]}"
        user = User(
            username=username,
            display_name=f"Synthetic {role.value}",
            role=role,
            organisation_id=organisation.id,
            municipality_id=None if national else municipality.id,
            password_hash=hash_password_sync(password) if password else self._hash,
        )
        secret = None
        if role in self.app.state.access_policy.second_factor.required_for:
            secret = pyotp.random_base32()  # enrolled already: the flow is tested on its own
            seal_field(self.app.state.case_keys.ring, user, "totp_secret", secret)
            user.totp_enabled_at = utcnow()
        async with self.app.state.sessionmaker() as s, s.begin():
            s.add(user)
        return Account(
            user.id,
            username,
            role.value,
            organisation.id,
            user.municipality_id,
            password or PASSWORD,
            totp_secret=secret,
        )

    async def user_row(self, user_id: uuid.UUID) -> User:
        async with self.app.state.sessionmaker() as s:
            return (await s.exec(select(User).where(User.id == user_id))).one()


@pytest.fixture
def world(app) -> World:
    return World(app)


def credentials(account: Account) -> dict[str, str]:
    """The sign-in form for an account, with a fresh TOTP code where it has one."""
    data = {"username": account.username, "password": account.password}
    if account.totp_secret:
        data["totp_code"] = account.next_code()
    return data


async def login(client: httpx.AsyncClient, account: Account) -> dict:
    response = await client.post("/api/v1/auth/token", data=credentials(account))
    assert response.status_code == 200, response.text
    return response.json()


def bearer(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


@pytest.fixture
async def signed_in(client, world):
    """Factory: an account of a role, signed in; returns (account, auth headers)."""

    async def make(role: Role, **kwargs) -> tuple[Account, dict[str, str]]:
        account = await world.account(role, **kwargs)
        return account, bearer(await login(client, account))

    return make


async def enrol(client: httpx.AsyncClient, enrolment_token: str) -> tuple[str, dict]:
    """Complete second-factor enrolment as a user would: start, read the secret, confirm."""
    headers = {"Authorization": f"Bearer {enrolment_token}"}
    started = await client.post("/api/v1/auth/second-factor/enrolment", headers=headers)
    assert started.status_code == 200, started.text
    secret = started.json()["secret"]
    confirmed = await client.post(
        "/api/v1/auth/second-factor/confirm",
        headers=headers,
        json={"code": pyotp.TOTP(secret).now()},
    )
    assert confirmed.status_code == 200, confirmed.text
    return secret, confirmed.json()
