"""`cds-service --help` and the subcommands' help, `fixtures list`, and `config check` with environment
variables and a configuration file (CDS_CONFIG_FILE: YAML or JSON, validated, environment wins)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cds_service import create_app
from cds_service.cli import main
from cds_service.config import Settings
from cds_service.errors import ConfigurationError
from cds_service.preview.scenarios import SCENARIOS_DIR
from cds_service.web.state import get_state
from tests.cds_helpers import dev_config

CLI = Path(sys.executable).with_name("cds-service")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def help_of(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


# --- help ---------------------------------------------------------------------------------------------


def test_top_level_help_explains_the_service_and_the_first_steps() -> None:
    result = subprocess.run([str(CLI), "--help"], capture_output=True, text=True, timeout=60, check=True)
    text = result.stdout
    assert "IEC-HS" in text and "CAR-T" in text
    for command in ("serve", "evaluate", "config", "fixtures"):
        assert command in text
    assert "cds-service serve --dev" in text and "http://127.0.0.1:8080/" in text
    assert "docs/configuration.md" in text


@pytest.mark.parametrize(
    ("command", "phrases"),
    [
        (["serve"], ["--dev", "--port", "/openapi.json", "/metrics", "exit code 2"]),
        (["evaluate"], ["FHIR R4 Bundle", "--at", "--format", "example:"]),
        (["config"], ["check"]),
        (["config", "check"], ["CDS_CONFIG_FILE", "secrets masked", "Exit code 0"]),
        (["fixtures"], ["list"]),
        (["fixtures", "list"], ["fixtures/scenarios", "--paths"]),
        (["replay"], ["Silent mode, not for clinical use", "--labels", "--set", "--scheduler", "example:"]),
    ],
)
def test_every_command_has_help(
    capsys: pytest.CaptureFixture[str], command: list[str], phrases: list[str]
) -> None:
    text = help_of(capsys, *command)
    for phrase in phrases:
        assert phrase in text, phrase


def test_a_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


# --- fixtures list ------------------------------------------------------------------------------------


def test_fixtures_list_prints_every_scenario_with_its_title(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "fixtures", "list")
    assert code == 0
    expected_files = sorted(SCENARIOS_DIR.glob("*.expected.json"))
    assert len(expected_files) >= 10
    lines = out.splitlines()
    for path in expected_files:
        expected = json.loads(path.read_text(encoding="utf-8"))
        line = next(line for line in lines if line.split()[:1] == [expected["scenario"]])
        assert line.strip().endswith(expected["title"])
    assert "cds-service evaluate fixtures/scenarios/" in out


def test_fixtures_list_paths(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "fixtures", "list", "--paths")
    assert code == 0
    paths = out.split()
    assert "fixtures/scenarios/classic-iec-hs.json" in paths
    assert all(p.endswith(".json") and not p.endswith(".expected.json") for p in paths)


# --- config check and the configuration file ----------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("CDS_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_config_check_prints_the_effective_settings_from_file_and_env(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        clean_env / "cds.yaml",
        "CDS_DEV_MODE: true\n"
        "CDS_HOOK_DEADLINE_S: 3.5\n"
        "CDS_FHIR_MAX_PAGES: 7\n"
        "CDS_CORS_ORIGINS: [https://ehr.example.org, https://sandbox.example.org]\n"
        "DATABASE_URL: postgresql+psycopg://cds:hunter2-secret@db.internal/cds\n",
    )
    monkeypatch.setenv("CDS_CONFIG_FILE", str(config))
    monkeypatch.setenv("CDS_FHIR_MAX_PAGES", "3")  # the environment wins over the file
    code, out, err = run(capsys, "config", "check")
    assert code == 0, err
    assert "configuration OK" in out
    assert f"{config} (4 setting(s) taken from it" in out
    assert "hook_deadline_s          3.5" in out
    assert "fhir_max_pages           3" in out
    assert "https://ehr.example.org, https://sandbox.example.org" in out
    assert "hunter2-secret" not in out and "postgresql+psycopg://cds:***@db.internal/cds" in out


def test_config_check_without_a_file(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check"]) == 2  # production mode needs a public base URL
    assert "CDS_PUBLIC_BASE_URL" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "CDS_DEV_MODE: [unclosed\n", "invalid YAML at line"),
        ("bad.json", '{"CDS_DEV_MODE": true,}', "invalid JSON at line 1"),
        ("list.yaml", "- CDS_DEV_MODE\n", "expected a mapping of variable names to values"),
        ("unknown.yaml", "CDS_DEV_MODE: true\nCDS_HOOK_DEADLINE: 2\n", "unknown setting 'CDS_HOOK_DEADLINE'"),
        ("nested.yaml", "CDS_DEV_MODE: true\nCDS_CONFIG_FILE: other.yaml\n", "cannot name another file"),
        ("object.yaml", "CDS_DEV_MODE: true\nCDS_HOOK_DEADLINE_S: {a: 1}\n", "expected a string, number"),
        (
            "range.yaml",
            "CDS_DEV_MODE: true\nCDS_HOOK_DEADLINE_S: 0\n",
            "CDS_HOOK_DEADLINE_S: must be > 0 and <= 60, got '0' (set in",
        ),
    ],
)
def test_config_file_errors_are_clear(
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    text: str,
    message: str,
) -> None:
    monkeypatch.setenv("CDS_CONFIG_FILE", str(write(clean_env / name, text)))
    code, _, err = run(capsys, "config", "check")
    assert code == 2
    assert message in err, err


def test_a_missing_config_file_is_named(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigurationError, match=r"CDS_CONFIG_FILE: cannot read .*nope\.yaml"):
        Settings.from_env({"CDS_CONFIG_FILE": str(clean_env / "nope.yaml")})


def test_json_config_file_and_create_app(clean_env: Path) -> None:
    config = write(
        clean_env / "cds.json",
        json.dumps({"CDS_DEV_MODE": True, "CDS_PREFETCH_LOOKBACK_DAYS": 30, "CDS_SMART_LAUNCH_URL": None}),
    )
    settings = Settings.from_env({"CDS_CONFIG_FILE": str(config)})
    assert settings.dev_mode and settings.prefetch_lookback_days == 30 and settings.smart_launch_url is None
    app = create_app({**dev_config(clean_env), "CDS_CONFIG_FILE": str(config)})
    assert get_state(app).settings.prefetch_lookback_days == 30


def test_an_empty_environment_value_does_not_hide_the_file(clean_env: Path) -> None:
    config = write(clean_env / "cds.yaml", "CDS_DEV_MODE: true\nCDS_FHIR_MAX_PAGES: 9\n")
    settings = Settings.from_env({"CDS_CONFIG_FILE": str(config), "CDS_FHIR_MAX_PAGES": ""})
    assert settings.fhir_max_pages == 9


def test_the_server_refuses_to_start_on_a_bad_file(clean_env: Path) -> None:
    config = write(clean_env / "cds.yaml", "CDS_DEV_MODE: yes-please\n")
    result = subprocess.run(
        [str(CLI), "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", "CDS_CONFIG_FILE": str(config)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=clean_env,
    )
    assert result.returncode == 2
    assert "CDS_DEV_MODE: expected 1/0/true/false/yes/no/on/off, got 'yes-please' (set in" in result.stderr
