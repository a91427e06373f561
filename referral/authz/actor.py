"""The authenticated actor, as every authorisation decision sees it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    user_id: uuid.UUID
    username: str
    role: str
    organisation_id: uuid.UUID
    agency: str
    municipality_id: uuid.UUID | None
    session_id: uuid.UUID
