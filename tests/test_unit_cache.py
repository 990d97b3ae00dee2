"""pint's definition cache (cds_service.engine.units): used only in a private folder, same conversions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cds_service.engine import units

PROBE = """
from cds_service.engine import units
registry = units._registry()
for source, target in [("mg/dL", "g/L"), ("mmol/L", "umol/L"), ("[lb_av]", "kg"), ("10*3/uL", "10*9/L")]:
    print(source, target, registry.from_ucum(source).to(registry.from_ucum(target).units).magnitude)
print(units._private_cache_folder())
"""


def probe(cache_home: Path) -> list[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def test_the_folder_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = units._private_cache_folder()
    assert folder == tmp_path / "cds-service" / "units"
    assert folder.stat().st_mode & 0o777 == 0o700


def test_a_folder_others_can_write_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "cds-service" / "units"
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    assert units._private_cache_folder() is None


def test_an_unusable_home_means_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert units._private_cache_folder() is None


def test_conversions_are_the_same_from_a_fresh_and_a_filled_cache(tmp_path: Path) -> None:
    first = probe(tmp_path)  # fills the cache
    assert any((tmp_path / "cds-service" / "units").iterdir())
    second = probe(tmp_path)  # reads it
    assert first == second
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    assert probe(blocked)[:-1] == first[:-1]  # no cache at all: the same numbers
