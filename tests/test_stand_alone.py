"""The project stands alone: a clone with nothing beside it has everything it runs and tests."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.conftest import BASE_DIR, CORPUS_DIR

# What reaching outside the checkout looks like in code, scripts and build files.
OUTSIDE = re.compile(r"\.\./shared|/ *[\"']shared[\"']|parent *\) */ *[\"']shared")
CHECKED_SUFFIXES = {".py", ".sh", ".toml", ".cfg", ".ini", ".yaml", ".yml"}


def _project_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=BASE_DIR,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return [BASE_DIR / name for name in listed
            if not name.startswith("conformance/corpus/")
            and (Path(name).suffix in CHECKED_SUFFIXES or name in {"Makefile"} or name.startswith(".ci/"))]


def test_no_code_script_or_build_file_reads_outside_the_checkout() -> None:
    files = _project_files()
    assert any(f.name == "Makefile" for f in files) and len(files) > 100
    offenders = [f"{f.relative_to(BASE_DIR)}:{n}" for f in files if f.is_file()
                 for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert offenders == []


def test_every_file_the_manifest_names_is_in_the_corpus() -> None:
    manifest = yaml.safe_load((CORPUS_DIR / "manifest.yaml").read_text())
    named: set[str] = set()

    def collect(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str) and key in {"file", "body", "reference"}:
                    named.add(value)
                collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)

    collect(manifest)
    assert named, "the manifest names no file: its format changed, update this test"
    missing = sorted(name for name in named if not (CORPUS_DIR / name).is_file())
    assert missing == []


def test_corpus_notice_names_each_source_with_its_commit() -> None:
    notice = (CORPUS_DIR / "NOTICE").read_text()
    for source, commit in (("usnistgov/iheos-toolkit2", "3e9cebc3082bd9113432a28b4e15c0b40efe4e68"),
                           ("jembi/openxds", "4edc3fb637744923aca82e5b45e3f8f803b21a2c")):
        assert source in notice and commit in notice
    assert "Apache License, Version 2.0" in notice
    for folder in ("nist/", "nist/_imagecache/std/IDS-DEPT002-a/", "affinity-domain/codes.xml", "openxds/"):
        assert folder in notice and (CORPUS_DIR / folder).exists()
