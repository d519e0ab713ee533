"""Settings come from the environment through config.env and fail loudly on bad values."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config import env

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch) -> None:
    """Test variables must not end up in the registry the README is checked against."""
    monkeypatch.setattr(env, "REGISTRY", dict(env.REGISTRY))


@pytest.mark.parametrize(
    ("func", "args", "value"),
    [
        (env.boolean, ("X_TEST_BOOL", False, "d"), "maybe"),
        (env.integer, ("X_TEST_INT", 1, "d"), "12a"),
        (env.size, ("X_TEST_SIZE", "1MB", "d"), "lots"),
        (env.oid, ("X_TEST_OID", "1.2.3", "d"), "1.2.abc"),
        (env.url, ("X_TEST_URL", "", "d"), "ftp://example.org"),
        (env.custom, ("X_TEST_PEER", "", "d", env.dicom_peer), "ORTHANC@host"),
    ],
)
def test_bad_environment_value_is_refused_with_its_name(monkeypatch, func, args, value) -> None:
    monkeypatch.setenv(args[0], value)
    with pytest.raises(ImproperlyConfigured, match=args[0]):
        func(*args)


def test_sizes_accept_binary_suffixes(monkeypatch) -> None:
    monkeypatch.setenv("X_TEST_SIZE", "2GiB")
    assert env.size("X_TEST_SIZE", "1", "d") == 2 * 1024**3
    monkeypatch.setenv("X_TEST_SIZE", "100MB")
    assert env.size("X_TEST_SIZE", "1", "d") == 100 * 1024**2


def test_integer_bounds_are_enforced(monkeypatch) -> None:
    monkeypatch.setenv("X_TEST_PORT", "70000")
    with pytest.raises(ImproperlyConfigured, match="<= 65535"):
        env.integer("X_TEST_PORT", 1, "d", maximum=65535)


def test_dicom_peer_parses_aet_host_port() -> None:
    assert env.dicom_peer("ORTHANC@127.0.0.1:4242") == {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}
    assert env.dicom_peer("") is None


def test_django_refuses_to_start_on_a_bad_setting(tmp_path) -> None:
    environ = dict(os.environ, PORT="eighty", XDS_VAR_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=environ,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "PORT='eighty'" in result.stderr


def test_readme_documents_every_setting() -> None:
    import config.settings  # noqa: F401  (fills env.REGISTRY)

    settings_vars = {name for name in env.REGISTRY if not name.startswith("X_TEST_")}
    readme = (BASE_DIR / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", readme, flags=re.M))
    missing = sorted(settings_vars - documented)
    assert not missing, f"settings missing from the README configuration table: {missing}"


# ----------------------------------------------------------------------------- XDS_ENV_FILE

def test_an_env_file_is_applied_over_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("X_TEST_SITE_PORT", "8000")
    monkeypatch.delenv("X_TEST_SITE_NAME", raising=False)
    path = tmp_path / "site.env"
    path.write_text("# a site\n\nX_TEST_SITE_PORT=8002\n X_TEST_SITE_NAME = hospital b = B \n")
    env.apply_env_file(str(path))
    assert os.environ["X_TEST_SITE_PORT"] == "8002"  # the file wins: a site cannot inherit a shell's value
    assert os.environ["X_TEST_SITE_NAME"] == "hospital b = B"  # split at the first '='


@pytest.mark.parametrize("line", ["NO_EQUALS_SIGN", "1BAD=x", "BAD-NAME=x", "=x"])
def test_a_malformed_env_file_line_stops_start_up_naming_the_line(tmp_path, line: str) -> None:
    path = tmp_path / "site.env"
    path.write_text(f"GOOD=1\n{line}\n")
    with pytest.raises(ImproperlyConfigured, match="line 2: expected KEY=VALUE"):
        env.apply_env_file(str(path))


def test_a_missing_env_file_stops_start_up() -> None:
    with pytest.raises(ImproperlyConfigured, match="XDS_ENV_FILE='/nonexistent/site.env'"):
        env.apply_env_file("/nonexistent/site.env")


def test_django_reads_its_settings_from_xds_env_file(tmp_path) -> None:
    path = tmp_path / "site.env"
    path.write_text(f"XDS_VAR_DIR={tmp_path}\nDICOM_AE_TITLE=HOSPB_IDS\n")
    environ = dict(os.environ, XDS_ENV_FILE=str(path), DICOM_AE_TITLE="SHELL_AE")
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c",
                             "from django.conf import settings; print(settings.DICOM_AE_TITLE, settings.VAR_DIR)"],
                            cwd=BASE_DIR, env=environ, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["HOSPB_IDS", str(tmp_path)]
