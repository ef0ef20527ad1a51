"""Production refuses secrets anyone could guess; development runs with simple values."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from services.runtime.settings import DEVELOPMENT_OPERATOR_PASSWORD, DEVELOPMENT_TOKEN_SECRET, Settings

ROOT = Path(__file__).resolve().parents[2]
STRONG_SECRET = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
STRONG_PASSWORD = "Tq7#vLp2!mWz9"


def k8s_secret(name: str) -> str:
    documents = list(yaml.safe_load_all((ROOT / "deploy/k8s/config.yaml").read_text()))
    secret = next(document for document in documents if document["kind"] == "Secret")
    value: str = secret["stringData"][name]
    return value


@pytest.mark.parametrize("secret", [
    DEVELOPMENT_TOKEN_SECRET, "x", "short-but-random-7fQ2", "a" * 64,
    "REPLACE-ME-with-at-least-32-random-bytes", "please-change-me-0123456789abcdefghijk",
])
def test_production_refuses_a_short_or_placeholder_token_secret(secret: str) -> None:
    with pytest.raises(ValidationError, match="PORTAL_TOKEN_SECRET"):
        Settings(env="production", token_secret=secret, bootstrap_operator_password=STRONG_PASSWORD)


@pytest.mark.parametrize("password", [DEVELOPMENT_OPERATOR_PASSWORD, "REPLACE-ME", "short1!", "aaaaaaaaaaaaaaaa",
                                      "operator-password-2026", "Operator2024!", "Admin1234567x", "Passw0rd!Passw0rd",
                                      "ops-team-Xy7#kq"])
def test_production_refuses_a_weak_or_placeholder_operator_password(password: str) -> None:
    with pytest.raises(ValidationError, match="PORTAL_BOOTSTRAP_OPERATOR_PASSWORD"):
        Settings(env="production", token_secret=STRONG_SECRET, bootstrap_operator_password=password,
                 bootstrap_operator_email="ops-team@portal.example.com")


def test_production_starts_with_a_random_secret_and_a_strong_password() -> None:
    settings = Settings(env="production", token_secret=STRONG_SECRET, bootstrap_operator_password=STRONG_PASSWORD)
    assert settings.token_secret.get_secret_value() == STRONG_SECRET


@pytest.mark.parametrize("password", ["uausrxIThtADMiND", "k3Operator#Vq9zLw2", "Xr8!portal-Mn4qTz"])
def test_production_accepts_a_random_password_that_happens_to_contain_a_guessable_word(password: str) -> None:
    # CI once drew "uausrxIThtADMiND" from token_urlsafe(12) and the old check refused it.
    settings = Settings(env="production", token_secret=STRONG_SECRET, bootstrap_operator_password=password)
    assert settings.bootstrap_operator_password.get_secret_value() == password


def test_random_secrets_are_never_taken_for_placeholders() -> None:
    for _ in range(2000):
        Settings(env="production", token_secret=secrets.token_urlsafe(32),
                 bootstrap_operator_password=secrets.token_urlsafe(12))


def test_development_keeps_working_with_simple_values() -> None:
    settings = Settings(token_secret="x", bootstrap_operator_password="operator")
    assert settings.env == "development"


def test_a_production_service_with_the_manifests_placeholder_secret_refuses_to_start_with_one_clear_line() -> None:
    environment = {"PATH": "/usr/bin:/bin", "PORTAL_ENV": "production",
                   "PORTAL_TOKEN_SECRET": k8s_secret("PORTAL_TOKEN_SECRET"),
                   "PORTAL_BOOTSTRAP_OPERATOR_PASSWORD": STRONG_PASSWORD}
    started = subprocess.run([sys.executable, "-m", "services.accounts"], env=environment, capture_output=True,
                             text=True, timeout=60, cwd=ROOT)
    assert started.returncode != 0
    assert started.stderr.strip().splitlines() == [
        "accounts refuses to start: PORTAL_TOKEN_SECRET looks like a placeholder: set a random one "
        "(e.g. `openssl rand -hex 32`)"]
