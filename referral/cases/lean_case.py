"""What the lean answers about cases share (ADR 0028, 0030, 0032): the case keys, besides
what every lean answer holds (`lean.LeanAnswer`)."""

from __future__ import annotations

from referral.audit.sealer import Sealer
from referral.cases.service import CaseKeys
from referral.lean import LeanAnswer, LeanStatements, RememberedActors


class LeanCaseAnswer(LeanAnswer):
    """A lean answer about cases: it seals and opens their fields, and follows the workflow,
    with the app's case keys."""

    def __init__(
        self,
        statements: LeanStatements,
        remembered: RememberedActors,
        sealer: Sealer,
        keys: CaseKeys,
    ) -> None:
        super().__init__(statements, remembered, sealer)
        self._keys = keys
