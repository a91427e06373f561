"""Response models of the statistics API that are more than a plain table slice."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel


class SnapshotOut(BaseModel):
    id: uuid.UUID
    as_of: date
    cells: int
    suppressed: int


class SnapshotBuildOut(BaseModel):
    """A build of a snapshot. `running` while the server builds it; then `published` (with
    its `snapshot`, which every query answers from now), `refused` (the audit gate found a
    suppressed cell derivable: nothing published, `reason` says why) or `failed` (the
    build could not finish; `reason` says why)."""

    id: uuid.UUID
    status: Literal["running", "published", "refused", "failed"]
    as_of: date
    requested_by: uuid.UUID
    requested_at: datetime
    heartbeat_at: datetime
    finished_at: datetime | None
    reason: str | None
    snapshot: SnapshotOut | None
