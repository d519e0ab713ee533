"""Figures the fault and flood tests measure, for the README's Reliability table.

``report("iti41-kill", acknowledged=..., lost=0, ...)`` prints one line ``FIGURE iti41-kill acknowledged=... lost=0``
past pytest's output capture (so CI logs show it whether the test passes or fails) and appends it as JSON to
``var/artifacts/reliability.jsonl``.  pytest captures file descriptor 1 too, so the lines are also kept in
:data:`REPORTED` and printed again in the run's terminal summary (``tests/conftest.py``): CI logs show them
for passing tests.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "var" / "artifacts"
#: Every FIGURE line of this test session, in order.
REPORTED: list[str] = []


def report(name: str, **values: Any) -> None:
    """Print and keep one measured figure set (values: numbers or short strings, no patient data)."""
    shown = " ".join(f"{key}={_shown(value)}" for key, value in values.items())
    REPORTED.append(f"FIGURE {name} {shown}")
    sys.__stdout__.write(f"\nFIGURE {name} {shown}\n")
    sys.__stdout__.flush()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (ARTIFACTS / "reliability.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"name": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **values}) + "\n")


def _shown(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
