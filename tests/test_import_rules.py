"""The import rules of pyproject.toml [tool.importlinter] hold (actors meet only through IHE transactions)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is a dev requirement (requirements-dev.txt)"
    result = subprocess.run([lint_imports, "--no-cache"], cwd=BASE_DIR, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_xds_core_and_kos_import_no_database_and_no_django_app_machinery() -> None:
    """xds_core is a plain package (no models, no database); import-linter cannot forbid a subpackage of an
    external package (``django.db``), so this reads the imports of every module."""
    import ast

    offenders = []
    for package in ("xds_core", "kos"):
        for path in sorted((BASE_DIR / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{path.relative_to(BASE_DIR)}: {name}" for name in names
                              if name.startswith(("django.db", "django.contrib", "django.apps"))]
    assert offenders == []
    core = BASE_DIR / "xds_core"
    assert not list(core.rglob("models.py")) and not list(core.rglob("migrations"))
