"""``KEY=VALUE`` files: a site's settings in one file (``XDS_ENV_FILE``; ``make run`` writes one per demo site).

One line a setting; blank lines and ``#`` comments are skipped; whitespace around key and value is
trimmed; the value is everything after the first ``=``.  A line that is not ``KEY=VALUE`` with a valid
variable name is an error naming the line.
"""

from __future__ import annotations

import re

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EnvFileError(ValueError):
    """A line that is not KEY=VALUE; the message names the line."""


def parse_env_text(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise EnvFileError(f"line {number}: expected KEY=VALUE")
        out[key] = value.strip()
    return out
