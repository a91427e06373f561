"""Start-up refuses bad secrets and invalid policies, and says which."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from referral.authz.policy import PolicyError, load_access_policy
from referral.config import SECRET_FIELDS, Environment, Settings, generate_secret
from referral.main import create_app

POLICIES = Path(__file__).resolve().parent.parent / "policies"


def _good_secrets() -> dict[str, str]:
    return {name: generate_secret(name) for name in SECRET_FIELDS}


@pytest.mark.parametrize("name", SECRET_FIELDS)
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "is missing"),
        ("", "is missing"),
        ("short-secret", "is shorter than 32 bytes"),
        ("change-me", "is an example value"),
    ],
)
@pytest.mark.parametrize("env", [Environment.production, Environment.test])
def test_outside_development_a_bad_secret_refuses_to_start(env, name, value, reason):
    with pytest.raises(ValidationError) as info:
        Settings(env=env, **{**_good_secrets(), name: value})
    assert f"REFERRAL_{name.upper()} {reason}" in str(info.value)


def test_a_malformed_key_ring_refuses_to_start():
    with pytest.raises(ValidationError) as info:
        Settings(env=Environment.production, **{**_good_secrets(), "data_keys": "1:" + "A" * 40})
    assert "REFERRAL_DATA_KEYS is malformed" in str(info.value)


def test_secrets_are_read_from_the_environment(monkeypatch):
    values = _good_secrets()
    monkeypatch.setenv("REFERRAL_ENV", "production")
    for name, value in values.items():
        monkeypatch.setenv(f"REFERRAL_{name.upper()}", value)
    settings = Settings()
    assert settings.jwt_key == values["jwt_secret"]
    for value in values.values():
        assert value not in repr(settings)


def test_development_mode_starts_without_secrets():
    assert Settings(env=Environment.development, jwt_secret=None).env is Environment.development


def test_production_is_the_default(monkeypatch):
    monkeypatch.delenv("REFERRAL_ENV", raising=False)
    for name, value in _good_secrets().items():
        monkeypatch.setenv(f"REFERRAL_{name.upper()}", value)
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
