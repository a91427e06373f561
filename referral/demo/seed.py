"""Seed clearly-marked synthetic demo data once: the 38 municipalities of Kosovo in their 7
regions, organisations of every agency type, and users of every role in two municipalities.

Passwords are random, printed once and kept in var/demo-logins.txt (mode 0600).
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import string
from datetime import date

from sqlmodel import select

from referral.auth import passwords, totp
from referral.authz.policy import load_access_policy
from referral.bootstrap import national_admin_organisation
from referral.cases.service import CaseKeys
from referral.cases.workflow import load_workflow
from referral.config import Environment, Settings
from referral.db import create_engine, create_sessionmaker
from referral.demo.cases import seed_demo_cases
from referral.models import Municipality, Organisation, User
from referral.models.base import utcnow
from referral.models.enums import Agency, Role
from referral.stats.disclosure import GateFailure
from referral.stats.policy import load_reporting_policy
from referral.stats.snapshot import build_snapshot

MUNICIPALITIES: dict[str, tuple[str, ...]] = {
    "Prishtina": (
        "Prishtinë",
        "Podujevë",
        "Obiliq",
        "Fushë Kosovë",
        "Lipjan",
        "Drenas",
        "Graçanicë",
        "Novobërdë",
    ),
    "Mitrovica": (
        "Mitrovicë",
        "Mitrovicë e Veriut",
        "Vushtrri",
        "Skenderaj",
        "Zveçan",
        "Zubin Potok",
        "Leposaviq",
    ),
    "Peja": ("Pejë", "Istog", "Klinë", "Deçan", "Junik"),
    "Prizren": ("Prizren", "Dragash", "Suharekë", "Malishevë", "Mamushë"),
    "Ferizaj": ("Ferizaj", "Shtime", "Kaçanik", "Shtërpcë", "Hani i Elezit"),
    "Gjilan": ("Gjilan", "Kamenicë", "Viti", "Ranillug", "Partesh", "Kllokot"),
    "Gjakova": ("Gjakovë", "Rahovec"),
}
DEMO_MUNICIPALITIES = ("gjilan", "prishtine")
DEMO_MARK = "[DEMO]"
DEMO_CASES_PER_MUNICIPALITY = 150


async def _first_snapshot(session, settings: Settings) -> None:
    """So the analysts' logins have something to show on the first run."""
    policy = load_reporting_policy(settings.policies_dir / "reporting.yaml")
    # if the gate refuses, the demo still runs; `referral stats snapshot` says why
    with contextlib.suppress(GateFailure):
        await build_snapshot(session, policy, date.today(), None)


def _case_keys(settings: Settings) -> CaseKeys:
    workflow = load_workflow(settings.policies_dir / "workflow.yaml")
    return CaseKeys(
        ring=settings.key_ring, blind_key=settings.blind_index_secret, workflow=workflow
    )


def municipality_code(name: str) -> str:
    table = str.maketrans({"ë": "e", "ç": "c", "Ë": "e", "Ç": "c", " ": "-"})
    return name.translate(table).lower()


def _demo_password() -> str:
    alphabet = string.ascii_letters + string.digits
    return "-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(4))


class DemoRefused(RuntimeError):
    pass


async def seed_demo(settings: Settings) -> str:
    """Seed once and return the demo logins text (read back from var/ on later runs)."""
    if settings.env is not Environment.development:
        raise DemoRefused("demo data is only ever seeded in development mode")
    logins_file = settings.var_dir / "demo-logins.txt"
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            already = (await session.exec(select(Municipality.id).limit(1))).first()
            if already is not None:
                if logins_file.exists():
                    return logins_file.read_text()
                return "demo data already present (var/demo-logins.txt is gone)"
            required = load_access_policy(
                settings.policies_dir / "access.yaml"
            ).second_factor.required_for
            logins = await _seed(session, _case_keys(settings), frozenset(required))
            await _first_snapshot(session, settings)
    finally:
        await engine.dispose()
    text = _format_logins(logins)
    settings.var_dir.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(logins_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return text


async def _seed(
    session, keys: CaseKeys, second_factor_roles: frozenset[str]
) -> list[tuple[str, str, str, str]]:
    # The same synthetic demo world on every machine; not used for anything secret.
    rng = random.Random(20261121)  # nosec B311
    by_code: dict[str, Municipality] = {}
    for region, names in MUNICIPALITIES.items():
        for name in names:
            municipality = Municipality(code=municipality_code(name), name=name, region=region)
            session.add(municipality)
            by_code[municipality.code] = municipality
    await session.flush()

    logins: list[tuple[str, str, str, str]] = []

    async def add_user(
        username: str, role: Role, organisation: Organisation, municipality: Municipality | None
    ) -> User:
        password = _demo_password()
        user = User(
            username=username,
            display_name=f"{DEMO_MARK} {role.value.replace('_', ' ')} {username}",
            role=role,
            organisation_id=organisation.id,
            municipality_id=municipality.id if municipality else None,
            password_hash=await passwords.hash_password(password),
        )
        # "-" means "no second factor" in the printed table.
        secret = "-"  # noqa: S105  # nosec B105
        if role in second_factor_roles:  # enrolled: add the secret to an authenticator app
            secret = totp.new_secret()
            totp.seal_secret(keys.ring, user, secret)
            user.totp_enabled_at = utcnow()
        session.add(user)
        logins.append((username, role.value, password, secret))
        return user

    for code in DEMO_MUNICIPALITIES:
        municipality = by_code[code]
        organisations = {}
        for agency in Agency:
            organisation = Organisation(
                name=f"{DEMO_MARK} {municipality.name} {agency.value.replace('_', ' ')}",
                agency=agency,
                municipality_id=municipality.id,
            )
            session.add(organisation)
            organisations[agency] = organisation
        await session.flush()
        referrers = [
            await add_user(
                f"{code}.referrer.school",
                Role.referrer,
                organisations[Agency.education],
                municipality,
            ),
            await add_user(
                f"{code}.referrer.health", Role.referrer, organisations[Agency.health], municipality
            ),
        ]
        coordinator = await add_user(
            f"{code}.coordinator",
            Role.coordinator,
            organisations[Agency.municipality],
            municipality,
        )
        await session.flush()
        await seed_demo_cases(
            session,
            keys,
            municipality.id,
            referrers,
            coordinator,
            DEMO_CASES_PER_MUNICIPALITY,
            rng,
        )
        for agency, organisation in organisations.items():
            await add_user(
                f"{code}.panel.{agency.value}", Role.panel_member, organisation, municipality
            )
        await add_user(
            f"{code}.analyst", Role.analyst, organisations[Agency.municipality], municipality
        )

    national = Organisation(
        name=f"{DEMO_MARK} National coordinator's office", agency=Agency.municipality
    )
    oversight = Organisation(
        name=f"{DEMO_MARK} Data protection oversight", agency=Agency.municipality
    )
    session.add_all([national, oversight])
    await session.flush()
    admin_org = await national_admin_organisation(session)
    await add_user("national.analyst", Role.national_analyst, national, None)
    await add_user("national.auditor", Role.auditor, oversight, None)
    await add_user("demo.admin", Role.admin, admin_org, None)
    await session.flush()
    return logins


def _format_logins(logins: list[tuple[str, str, str, str]]) -> str:
    lines = [
        "Demo logins (synthetic development data; kept in var/demo-logins.txt, mode 0600):",
        "TOTP secrets go into an authenticator app (or: oathtool --totp -b SECRET).",
        f"  {'username':<34} {'role':<18} {'password':<24} totp secret",
    ]
    lines += [f"  {u:<34} {r:<18} {p:<24} {t}" for u, r, p, t in logins]
    return "\n".join(lines) + "\n"
