"""Print the README's configuration table from config.env.REGISTRY.

``python -m config.settings_table`` — run after adding a setting and paste the
output into README.md (tests/config/test_env.py fails while one is missing).
"""

from __future__ import annotations

import os


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import config.settings  # noqa: F401  (fills the registry)
    from config import env

    print("| variable | default | meaning |")
    print("| --- | --- | --- |")
    for name, (default, doc) in env.REGISTRY.items():
        shown = default.replace(str(config.settings.BASE_DIR), ".") if default else ""
        shown = f"`{shown}`" if shown else "(empty)"
        print(f"| `{name}` | {shown} | {doc.replace('|', '/')} |")


if __name__ == "__main__":
    main()
