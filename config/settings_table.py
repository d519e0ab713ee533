"""The README's configuration table, generated from config.env.REGISTRY.

``python -m config.settings_table`` prints it; ``--write`` replaces the table
between the ``settings:start`` / ``settings:end`` markers in README.md.
tests/config/test_env.py fails while a setting is missing from the README.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def table() -> str:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import config.settings  # noqa: F401  (fills the registry)
    from config import env

    base = config.settings.BASE_DIR
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, (default, doc) in env.REGISTRY.items():
        shown = default.replace(str(base), ".").replace(str(base.parent), "..") if default else ""
        if name == "WEB_CONCURRENCY":
            shown = "number of cores"
        shown = f"`{shown}`" if shown else "(empty)"
        lines.append(f"| `{name}` | {shown} | {doc.replace('|', '/')} |")
    return "\n".join(lines)


def main() -> None:
    if "--write" not in sys.argv:
        print(table())
        return
    readme = Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text()
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{table()}\n{END}", text,
                 flags=re.S)
    readme.write_text(new)


if __name__ == "__main__":
    main()
