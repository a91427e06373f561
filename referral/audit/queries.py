"""Queries over the audit trail shared by the auditor API and subject-access export."""

from __future__ import annotations

import uuid

from sqlalchemy import cast, exists, func, select
from sqlalchemy.dialects.postgresql import JSONB

from referral.models import AuditEvent


def mentions(session, case_id: uuid.UUID):
    """Events naming the case among their resource ids (single reads and lists alike)."""
    if session.bind.dialect.name == "postgresql":
        return cast(AuditEvent.resource_ids, JSONB).contains([str(case_id)])
    # no CAST on SQLite: it would give the JSON text numeric affinity
    each = func.json_each(AuditEvent.resource_ids).table_valued("value")
    return exists(select(1).select_from(each).where(each.c.value == str(case_id)))
