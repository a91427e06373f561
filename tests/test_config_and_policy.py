"""Start-up refuses bad secrets and invalid policies, and says which."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from referral.authz.policy import PolicyError, load_access_policy
from referral.config import Environment, Settings
from referral.main import create_app

POLICIES = Path(__file__).resolve().parent.parent / "policies"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "REFERRAL_JWT_SECRET is missing"),
        ("", "REFERRAL_JWT_SECRET is missing"),
        ("short-secret", "REFERRAL_JWT_SECRET is shorter than 32 bytes"),
        ("change-me", "REFERRAL_JWT_SECRET is an example value"),
    ],
)
@pytest.mark.parametrize("env", [Environment.production, Environment.test])
def test_outside_development_a_bad_secret_refuses_to_start(env, value, reason):
    with pytest.raises(ValidationError) as info:
        Settings(env=env, jwt_secret=value)
    assert reason in str(info.value)


def test_secret_is_read_from_the_environment(monkeypatch):
    value = secrets.token_urlsafe(48)
    monkeypatch.setenv("REFERRAL_ENV", "production")
    monkeypatch.setenv("REFERRAL_JWT_SECRET", value)
    settings = Settings()
    assert settings.jwt_key == value
    assert value not in repr(settings)


def test_development_mode_starts_without_secrets():
    assert Settings(env=Environment.development, jwt_secret=None).env is Environment.development


def test_production_defaults_to_production(monkeypatch):
    monkeypatch.delenv("REFERRAL_ENV", raising=False)
    monkeypatch.setenv("REFERRAL_JWT_SECRET", secrets.token_urlsafe(48))
    assert Settings().env is Environment.production


def test_the_shipped_policy_is_valid():
    policy = load_access_policy(POLICIES / "access.yaml")
    assert policy.is_national("admin")
    assert not policy.is_national("coordinator")


def _write_variant(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load((POLICIES / "access.yaml").read_text())
    change(raw)
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    (target / "access.yaml").write_text(yaml.safe_dump(raw))
    return target


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["roles"].pop("auditor"), "roles missing"),
        (lambda p: p["roles"].update(wizard={"national": True, "grants": {}}), "wizard"),
        (
            lambda p: p["roles"]["admin"]["grants"]["user"]["actions"].append("delete_all"),
            "unknown actions",
        ),
        (
            lambda p: p["roles"]["admin"]["grants"].update(
                spaceship={"actions": ["read"], "scope": "all"}
            ),
            "unknown resource type",
        ),
        (lambda p: p["roles"]["admin"]["grants"]["user"].update(scope="galaxy"), "scope"),
        (
            lambda p: p["roles"]["admin"]["grants"]["municipality"].update(scope="own"),
            "scope 'own' is not defined",
        ),
        (lambda p: p.update(surprise=1), "surprise"),
    ],
)
def test_an_invalid_policy_stops_the_app_and_says_why(tmp_path, settings, change, message):
    policies = _write_variant(tmp_path, change)
    with pytest.raises(PolicyError) as info:
        create_app(settings.model_copy(update={"policies_dir": policies}))
    assert message in str(info.value)


def test_an_unreadable_policy_stops_the_app(tmp_path, settings):
    (tmp_path / "access.yaml").write_text("roles: [unclosed")
    with pytest.raises(PolicyError):
        create_app(settings.model_copy(update={"policies_dir": tmp_path}))


def test_policy_models_are_frozen():
    policy = load_access_policy(POLICIES / "access.yaml")
    with pytest.raises(ValidationError):
        policy.version = 2  # type: ignore[misc]
