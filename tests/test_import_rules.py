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
