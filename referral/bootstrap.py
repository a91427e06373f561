"""First accounts: `referral create-admin` (there are no default accounts anywhere)."""

from __future__ import annotations

import uuid

from sqlmodel import select

from referral.audit.chain import seal_pending, track
from referral.auth import passwords
from referral.auth.service import normalise_username
from referral.config import Settings
from referral.db import create_engine, create_sessionmaker
from referral.models import AuditEvent, Organisation, User
from referral.models.enums import Agency, Role

ADMIN_ORGANISATION = "National referral mechanism administration"


class BootstrapError(Exception):
    pass


async def national_admin_organisation(session) -> Organisation:
    organisation = (
        await session.exec(
            select(Organisation).where(
                Organisation.name == ADMIN_ORGANISATION,
                Organisation.municipality_id.is_(None),  # type: ignore[union-attr]
            )
        )
    ).first()
    if organisation is None:
        organisation = Organisation(name=ADMIN_ORGANISATION, agency=Agency.municipality)
        session.add(organisation)
        await session.flush()
    return organisation


async def create_admin_account(
    settings: Settings, username: str, display_name: str, password: str
) -> uuid.UUID:
    problem = passwords.password_problem(password)
    if problem:
        raise BootstrapError(f"password {problem}")
    username = normalise_username(username)
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            if (await session.exec(select(User.id).where(User.username == username))).first():
                raise BootstrapError(f"an account named {username!r} already exists")
            organisation = await national_admin_organisation(session)
            user = User(
                username=username,
                display_name=display_name,
                role=Role.admin,
                organisation_id=organisation.id,
                password_hash=await passwords.hash_password(password),
            )
            session.add(user)
            await session.flush()
            # an account made outside the API is an admin action like any other: audited
            track(
                session,
                AuditEvent(
                    action="admin.user.create",
                    outcome="allowed",
                    resource_type="user",
                    resource_ids=[str(user.id)],
                    fields=["display_name", "username"],
                    purpose="cli",
                ),
            )
            await seal_pending(session, settings.audit_chain_keys)
            return user.id
    finally:
        await engine.dispose()
