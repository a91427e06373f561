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


REGIONS = ("Prishtina", "Mitrovica", "Peja", "Prizren", "Ferizaj", "Gjilan", "Gjakova")


def sql_in(values: type[StrEnum] | tuple[str, ...]) -> str:
    """A SQL list literal for CHECK constraints over a closed vocabulary."""
    return ", ".join(f"'{v!s}'" for v in values)
