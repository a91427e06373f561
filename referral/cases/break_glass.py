"""Break-glass: time-boxed read access to a case outside the actor's scope.

Granted at once (a safeguarding emergency does not wait), on a written reason, for the
period the policy sets; audited, and queued for the auditor's review.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.authz.dependencies import Access
from referral.cases.service import CaseKeys
from referral.crypto import seal_field
from referral.errors import Conflict, NotFound, invalid_field
from referral.models import BreakGlassGrant, CaseFile
from referral.models.base import utcnow


async def request_access(
    session: AsyncSession, keys: CaseKeys, access: Access, case_id: uuid.UUID, reason: str
) -> BreakGlassGrant:
    rules = access.policy.break_glass
    if len(reason.strip()) < rules.min_reason_length:
        raise invalid_field("reason", f"must be at least {rules.min_reason_length} characters")
    case = await session.get(CaseFile, case_id)
    if case is None:
        raise NotFound("No such case.")
    already = (
        await session.exec(
            select(CaseFile.id).where(
                CaseFile.id == case_id,
                access.policy_filter("read"),
            )
        )
    ).first()
    if already is not None:
        raise Conflict("You can already read this case; break-glass is not needed.")
    now = utcnow()
    grant = BreakGlassGrant(
        case_id=case.id,
        user_id=access.actor.user_id,
        reason_enc="",
        granted_at=now,
        expires_at=now + timedelta(minutes=rules.minutes),
    )
    seal_field(keys.ring, grant, "reason", reason.strip())
    session.add(grant)
    await session.flush()
    return grant
