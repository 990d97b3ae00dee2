"""Settings from environment variables: defaults, validation errors naming the variable, `config check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds_service.config import Settings
from cds_service.errors import ConfigurationError
from cds_service.ops.config_check import check_configuration
from cds_service.web.server import banner, gunicorn_options

PROD = {"CDS_PUBLIC_BASE_URL": "https://cds.example.org"}


def test_development_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"CDS_DEV_MODE": "1"})
    assert settings.dev_mode
    assert settings.cors_origins == ("*",)
    assert settings.database_url == f"sqlite:///{tmp_path / 'instance' / 'feedback.sqlite3'}"
    assert (settings.hook_deadline_s, settings.fhir_timeout_s, settings.fhir_max_pages) == (2.5, None, 10)
    assert settings.prefetch_lookback_days == 60
    assert settings.max_request_bytes == 20 * 1024 * 1024
    assert settings.public_base_url is None and settings.smart_launch_url is None


def test_production_defaults_have_no_cors_origins() -> None:
    settings = Settings.from_env(PROD)
    assert not settings.dev_mode
    assert settings.cors_origins == ()
    assert settings.public_base_url == "https://cds.example.org"


def test_values_are_parsed() -> None:
    settings = Settings.from_env(
        {
            **PROD,
            "CDS_CORS_ORIGINS": "https://ehr.example.org, https://sandbox.example.org/",
            "CDS_HOOK_DEADLINE_S": "4",
            "CDS_FHIR_TIMEOUT_S": "0.5",
            "CDS_FHIR_MAX_PAGES": "3",
            "CDS_PREFETCH_LOOKBACK_DAYS": "30",
            "CDS_MAX_REQUEST_BYTES": "1000",
            "CDS_SMART_LAUNCH_URL": "https://cds.example.org/smart/launch",
            "DATABASE_URL": "postgresql+psycopg://cds:pw-0f3a9@db.example.org/cds",
        }
    )
    assert settings.cors_origins == ("https://ehr.example.org", "https://sandbox.example.org")
    assert (settings.hook_deadline_s, settings.fhir_timeout_s, settings.fhir_max_pages) == (4.0, 0.5, 3)
    assert (settings.prefetch_lookback_days, settings.max_request_bytes) == (30, 1000)
    assert "pw-0f3a9" not in str(settings.summary())  # (setting names may say "secret": values may not)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CDS_DEV_MODE": "maybe"}, "CDS_DEV_MODE"),
        ({}, "CDS_PUBLIC_BASE_URL"),  # required outside development
        ({"CDS_PUBLIC_BASE_URL": "http://cds.example.org"}, "CDS_PUBLIC_BASE_URL"),  # https outside dev
        ({**PROD, "CDS_HOOK_DEADLINE_S": "-1"}, "CDS_HOOK_DEADLINE_S"),
        ({**PROD, "CDS_HOOK_DEADLINE_S": "fast"}, "CDS_HOOK_DEADLINE_S"),
        ({**PROD, "CDS_FHIR_TIMEOUT_S": "9"}, "CDS_FHIR_TIMEOUT_S"),  # longer than the hook deadline
        ({**PROD, "CDS_FHIR_MAX_PAGES": "2.5"}, "CDS_FHIR_MAX_PAGES"),
        ({**PROD, "CDS_PREFETCH_LOOKBACK_DAYS": "0"}, "CDS_PREFETCH_LOOKBACK_DAYS"),
        ({**PROD, "CDS_MAX_REQUEST_BYTES": "lots"}, "CDS_MAX_REQUEST_BYTES"),
        ({**PROD, "CDS_CORS_ORIGINS": "ehr.example.org"}, "CDS_CORS_ORIGINS"),
        ({**PROD, "CDS_CORS_ORIGINS": "*,https://a.example.org"}, "CDS_CORS_ORIGINS"),
        ({**PROD, "DATABASE_URL": "not a url"}, "DATABASE_URL"),
        ({**PROD, "DATABASE_URL": "mysql://x@y/z"}, "DATABASE_URL"),
        ({**PROD, "CDS_SMART_LAUNCH_URL": "/smart/launch"}, "CDS_SMART_LAUNCH_URL"),
        ({**PROD, "CDS_PUBLIC_BASE_URL": "https://cds.example.org/?x=1"}, "CDS_PUBLIC_BASE_URL"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


def test_config_check_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_configuration({"CDS_DEV_MODE": "true"}) == 0
    out = capsys.readouterr().out
    assert "configuration OK" in out
    assert "iec-hs-screening, iec-hs-order-select, iec-hs-order-sign" in out


def test_config_check_reports_the_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_configuration({"CDS_HOOK_DEADLINE_S": "0"}) == 2
    assert "CDS_HOOK_DEADLINE_S" in capsys.readouterr().err


def test_gunicorn_options_follow_the_settings() -> None:
    settings = Settings.from_env({"CDS_DEV_MODE": "1", "CDS_HOOK_DEADLINE_S": "2.5", "CDS_THREADS": "3"})
    options = gunicorn_options(settings, "127.0.0.1", 8123, workers=None)
    assert options["bind"] == "127.0.0.1:8123"
    assert options["worker_class"] == "gthread" and options["threads"] == 3
    assert options["workers"] == settings.workers
    assert options["timeout"] == 8  # ceil(deadline) + margin: a stuck request is killed, not left hanging
    assert gunicorn_options(settings, "127.0.0.1", 1, workers=1)["workers"] == 1


def test_banner_lists_the_urls_to_open() -> None:
    text = banner(Settings.from_env({"CDS_DEV_MODE": "1"}), "127.0.0.1", 8080)
    assert "http://127.0.0.1:8080/cds-services" in text
    assert "/healthz" in text


def test_hardening_settings_defaults_and_validation() -> None:
    """Issue 18: the preview builder follows the mode, rate limits parse, storages must be usable."""
    production = Settings.from_env(PROD)
    assert (production.preview_builder, production.rate_limit, production.rate_limit_storage_uri) == (
        False,
        "60/minute",
        "memory://",
    )
    assert production.trusted_proxy_hops == 0 and production.fhir_timeout_s is None
    assert Settings.from_env({"CDS_DEV_MODE": "1"}).preview_builder is True
    assert Settings.from_env({**PROD, "CDS_PREVIEW_BUILDER": "yes"}).preview_builder is True
    for name, value in [
        ("CDS_RATE_LIMIT", "lots"),
        ("CDS_RATE_LIMIT_STORAGE_URI", "bogus://x"),
        ("CDS_RATE_LIMIT_STORAGE_URI", "async+memory://"),
        ("CDS_TRUSTED_PROXY_HOPS", "9"),
    ]:
        with pytest.raises(ConfigurationError, match=name):
            Settings.from_env({**PROD, name: value})


def test_a_storage_password_is_masked_in_the_summary() -> None:
    settings = Settings(
        database_url="sqlite://", rate_limit_storage_uri="redis://user:s3cret@cache.internal:6379/0"
    )
    assert settings.summary()["rate_limit_storage_uri"] == "redis://***@cache.internal:6379/0"


def test_preview_evidence_and_ehr_launcher_settings() -> None:
    """Issue 17: the evidence view follows the mode unless configured; the EHR launcher is a base URL."""
    assert Settings.from_env(PROD).preview_evidence is False
    assert Settings.from_env({"CDS_DEV_MODE": "1"}).preview_evidence is True
    assert Settings.from_env({**PROD, "CDS_PREVIEW_EVIDENCE": "1"}).preview_evidence is True
    assert Settings.from_env({"CDS_DEV_MODE": "1"}).preview_ehr_launch_url is None
    launcher = {"CDS_DEV_MODE": "1", "CDS_PREVIEW_EHR_LAUNCH_URL": "http://127.0.0.1:8091/ehr/launch/"}
    assert Settings.from_env(launcher).preview_ehr_launch_url == "http://127.0.0.1:8091/ehr/launch"
    for value in ("127.0.0.1:8091/ehr/launch", "http://127.0.0.1:8091/ehr/launch?patient=1"):
        with pytest.raises(ConfigurationError, match="CDS_PREVIEW_EHR_LAUNCH_URL"):
            Settings.from_env({"CDS_DEV_MODE": "1", "CDS_PREVIEW_EHR_LAUNCH_URL": value})
