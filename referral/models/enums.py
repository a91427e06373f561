"""Closed vocabularies shared by models, schemas and policies."""

from enum import StrEnum


class Role(StrEnum):
    referrer = "referrer"
    coordinator = "coordinator"
    panel_member = "panel_member"
    analyst = "analyst"
    national_analyst = "national_analyst"
    auditor = "auditor"
    admin = "admin"


class Agency(StrEnum):
    police = "police"
    social_services = "social_services"
    education = "education"
    health = "health"
    faith = "faith"
    civil_society = "civil_society"
    municipality = "municipality"


class Section(StrEnum):
    general = "general"
    police = "police"
    health = "health"
    social = "social"
    education = "education"
    faith = "faith"


class Concern(StrEnum):
    far_right = "far_right"
    religiously_motivated = "religiously_motivated"
    far_left = "far_left"
    ethno_nationalist = "ethno_nationalist"
    single_issue = "single_issue"
    mixed_or_unclear = "mixed_or_unclear"


class Urgency(StrEnum):
    routine = "routine"
    priority = "priority"
    immediate = "immediate"


class Gender(StrEnum):
    female = "female"
    male = "male"
    other = "other"
    unknown = "unknown"


class AgeBand(StrEnum):
    child = "0-14"
    adolescent = "15-17"
    young_adult = "18-24"
    adult = "25+"
    unknown = "unknown"


class PanelDecisionCode(StrEnum):
    adopt = "adopt"
    not_adopted = "not_adopted"
    signposted = "signposted"
    referred_to_police = "referred_to_police"


class InterventionType(StrEnum):
    mentoring = "mentoring"
    psychosocial_support = "psychosocial_support"
    education_or_training = "education_or_training"
    job_training = "job_training"
    family_support = "family_support"
    religious_guidance = "religious_guidance"
    other = "other"


class InterventionStatus(StrEnum):
    planned = "planned"
    active = "active"
    completed = "completed"
    stopped = "stopped"


class ConsentGiver(StrEnum):
    subject = "subject"
    guardian = "guardian"


class ReviewKind(StrEnum):
    plan = "plan"
    post_exit = "post_exit"


class ReviewOutcome(StrEnum):
    on_track = "on_track"
    concern_remains = "concern_remains"
    no_concern = "no_concern"
    not_reached = "not_reached"


REGIONS = ("Prishtina", "Mitrovica", "Peja", "Prizren", "Ferizaj", "Gjilan", "Gjakova")


def sql_in(values: type[StrEnum] | tuple[str, ...]) -> str:
    """A SQL list literal for CHECK constraints over a closed vocabulary."""
    return ", ".join(f"'{v!s}'" for v in values)
