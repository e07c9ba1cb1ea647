"""Settings: typed parsers, *_FILE secrets, fail-fast production mode, check --deploy."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from backupconsole import env

ROOT = Path(__file__).resolve().parent.parent

PRODUCTION_ENV = {
    "BACKUPCONSOLE_MODE": "production",
    "BACKUPCONSOLE_SECRET_KEY": "k" * 20 + "qwertyuiopasdfghjklzxcvbnm0123456789",
    "BACKUPCONSOLE_CREDENTIAL_KEYS": "first-credential-key,older-credential-key",
    "BACKUPCONSOLE_ALLOWED_HOSTS": "backup.example.com",
    "DATABASE_URL": "postgres://backupconsole@127.0.0.1:5432/backupconsole",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/1",
}


def _manage(*args: str, extra_env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUPCONSOLE_", "DATABASE"))}
    base.pop("REDIS_URL", None)
    base.pop("CELERY_BROKER_URL", None)
    base["BACKUPCONSOLE_DATA_DIR"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **extra_env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_documented_production_variables(tmp_path):
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING", extra_env=PRODUCTION_ENV, tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    "missing",
    [
        "BACKUPCONSOLE_SECRET_KEY",
        "BACKUPCONSOLE_CREDENTIAL_KEYS",
        "DATABASE_URL",
        "REDIS_URL",
        "CELERY_BROKER_URL",
    ],
)
def test_production_fails_fast_naming_the_missing_setting(tmp_path, missing):
    extra = {k: v for k, v in PRODUCTION_ENV.items() if k != missing}
    result = _manage("check", extra_env=extra, tmp_path=tmp_path)
    assert result.returncode != 0
    assert missing in result.stderr


def test_secret_may_come_from_a_file(tmp_path):
    key_file = tmp_path / "secret"
    key_file.write_text(PRODUCTION_ENV["BACKUPCONSOLE_SECRET_KEY"] + "\n")
    extra = {k: v for k, v in PRODUCTION_ENV.items() if k != "BACKUPCONSOLE_SECRET_KEY"}
    extra["BACKUPCONSOLE_SECRET_KEY_FILE"] = str(key_file)
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING", extra_env=extra, tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr


def test_embedded_mode_needs_no_environment_and_keeps_generated_secrets(tmp_path):
    first = _manage("check", extra_env={}, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    secret = (tmp_path / "secret_key").read_text()
    assert len(secret) >= 50
    assert oct((tmp_path / "credential_key").stat().st_mode & 0o777) == "0o600"
    _manage("check", extra_env={}, tmp_path=tmp_path)
    assert (tmp_path / "secret_key").read_text() == secret


def test_typed_parsers_reject_bad_values(monkeypatch):
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_BOOL"):
        env.get_bool("X_BOOL", default=False)
    monkeypatch.setenv("X_INT", "0")
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env.get_int("X_INT", 5, minimum=1)
    monkeypatch.setenv("X_LIST", " a, b ,,c")
    assert env.get_list("X_LIST", []) == ["a", "b", "c"]
    monkeypatch.setenv("X_SECRET_FILE", "/nonexistent/secret")
    with pytest.raises(ImproperlyConfigured, match="cannot be read"):
        env.get_str("X_SECRET")
