"""Rules for the directory: where an account may sit, and what ends its sessions."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.admin.schemas import (
    MunicipalityCreate,
    OrganisationCreate,
    UserCreate,
    UserUpdate,
)
from referral.auth import passwords
from referral.auth.service import normalise_username, revoke_all_sessions, set_password
from referral.authz.dependencies import Access
from referral.authz.policy import AccessPolicy
from referral.concurrency import versioned_update
from referral.errors import Conflict, PreconditionFailed, invalid_field
from referral.models import Municipality, Organisation, RecoveryCode, User
from referral.models.base import utcnow
from referral.pagination import PageParams, keyset, split_page

# Changes after which the account's existing tokens must stop working.
SESSION_ENDING_FIELDS = frozenset({"role", "organisation_id", "municipality_id", "is_active"})


_invalid = invalid_field


async def list_visible(
    session: AsyncSession, access: Access, model: Any, params: PageParams
) -> tuple[list[Any], uuid.UUID | None]:
    stmt = keyset(select(model).where(access.filter()), model.id, params)
    rows = list((await session.exec(stmt)).all())
    return split_page(rows, params, lambda row: row.id)


async def get_visible(session: AsyncSession, access: Access, model: Any, obj_id: uuid.UUID) -> Any:
    return access.visible(await session.get(model, obj_id))


async def _flush_unique(session: AsyncSession, what: str) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"{what} already exists.") from exc


async def create_municipality(session: AsyncSession, data: MunicipalityCreate) -> Municipality:
    existing = await session.exec(select(Municipality.id).where(Municipality.code == data.code))
    if existing.first() is not None:
        raise Conflict("A municipality with this code already exists.")
    municipality = Municipality(**data.model_dump())
    session.add(municipality)
    await _flush_unique(session, "A municipality with this code")
    return municipality


async def create_organisation(session: AsyncSession, data: OrganisationCreate) -> Organisation:
    if (
        data.municipality_id is not None
        and await session.get(Municipality, data.municipality_id) is None
    ):
        raise _invalid("municipality_id", "no such municipality")
    organisation = Organisation(**data.model_dump())
    session.add(organisation)
    await session.flush()
    return organisation


async def _check_placement(
    session: AsyncSession,
    policy: AccessPolicy,
    role: str,
    organisation_id: uuid.UUID,
    municipality_id: uuid.UUID | None,
) -> None:
    if policy.is_national(role):
        if municipality_id is not None:
            raise _invalid("municipality_id", f"a {role} is national and has no municipality")
    else:
        if municipality_id is None:
            raise _invalid("municipality_id", f"a {role} needs a municipality")
        if await session.get(Municipality, municipality_id) is None:
            raise _invalid("municipality_id", "no such municipality")
    organisation = await session.get(Organisation, organisation_id)
    if organisation is None or not organisation.is_active:
        raise _invalid("organisation_id", "no such active organisation")
    if organisation.municipality_id not in (None, municipality_id):
        raise _invalid("organisation_id", "the organisation belongs to another municipality")


async def create_user(session: AsyncSession, policy: AccessPolicy, data: UserCreate) -> User:
    username = normalise_username(data.username)
    await _check_placement(session, policy, data.role, data.organisation_id, data.municipality_id)
    existing = await session.exec(select(User.id).where(User.username == username))
    if existing.first() is not None:
        raise Conflict("An account with this username already exists.")
    user = User(
        username=username,
        display_name=data.display_name,
        role=data.role,
        organisation_id=data.organisation_id,
        municipality_id=data.municipality_id,
        password_hash=await passwords.hash_password(data.password),
    )
    session.add(user)
    await _flush_unique(session, "An account with this username")
    return user


async def update_simple(
    session: AsyncSession, model: Any, obj: Any, version: int, changes: dict[str, Any]
) -> list[str]:
    """A versioned update of a record whose fields carry no further rules."""
    for field, value in changes.items():
        if value is None:
            raise _invalid(field, "may not be null")
    await versioned_update(session, model, obj.id, version, changes)
    await session.refresh(obj)
    return sorted(changes)


async def update_user(
    session: AsyncSession,
    policy: AccessPolicy,
    user: User,
    version: int,
    data: UserUpdate,
) -> tuple[User, list[str]]:
    changes = data.model_dump(exclude_unset=True)
    for field in ("display_name", "role", "organisation_id", "is_active"):
        if field in changes and changes[field] is None:
            raise _invalid(field, "may not be null")
    merged = {
        "role": changes.get("role", user.role),
        "organisation_id": changes.get("organisation_id", user.organisation_id),
        "municipality_id": changes.get("municipality_id", user.municipality_id),
    }
    if {"role", "organisation_id", "municipality_id"} & changes.keys():
        await _check_placement(session, policy, **merged)
    changed = sorted(k for k, v in changes.items() if getattr(user, k) != v)
    await versioned_update(session, User, user.id, version, {**changes, "updated_at": utcnow()})
    if SESSION_ENDING_FIELDS & set(changed):
        await revoke_all_sessions(session, user.id, "account_changed")
    await session.refresh(user)
    return user, changed


async def reset_second_factor(session: AsyncSession, user: User, version: int) -> None:
    """Clear the account's second factor and its recovery codes, and end its sessions: the
    user enrols again at their next sign-in, before they can do anything else."""
    cleared = dict.fromkeys(("totp_secret_enc", "totp_enabled_at", "totp_last_step"))
    await versioned_update(session, User, user.id, version, cleared | {"updated_at": utcnow()})
    await session.exec(delete(RecoveryCode).where(col(RecoveryCode.user_id) == user.id))
    await revoke_all_sessions(session, user.id, "second_factor_reset")


async def reset_password(session: AsyncSession, user: User, version: int, new: str) -> None:
    if user.version != version:
        raise PreconditionFailed("The account was changed by someone else; read it again.")
    await set_password(session, user, new, reason="password_reset")
