"""The database settings that make data durable and connections survive a database restart (issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]

#: Prints the default database's settings and, for SQLite, the PRAGMAs of a fresh connection.
PROBE = """
import json, django
django.setup()
from django.db import connection
out = {"health_checks": connection.settings_dict["CONN_HEALTH_CHECKS"],
       "max_age": connection.settings_dict["CONN_MAX_AGE"],
       "pool": connection.settings_dict["OPTIONS"].get("pool")}
if connection.vendor == "sqlite":
    with connection.cursor() as cursor:
        out["synchronous"] = cursor.execute("PRAGMA synchronous").fetchone()[0]
        out["journal_mode"] = cursor.execute("PRAGMA journal_mode").fetchone()[0]
print(json.dumps(out))
"""


def _probe(database_url: str, tmp_path: Path, **settings: str) -> dict:
    env = {**os.environ, "DATABASE_URL": database_url, "XDS_VAR_DIR": str(tmp_path),
           "DJANGO_SETTINGS_MODULE": "config.settings", **settings}
    env.pop("XDS_ENV_FILE", None)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=BASE_DIR, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sqlite_syncs_every_commit_so_an_acknowledged_submission_survives_power_loss(tmp_path) -> None:
    found = _probe(f"sqlite:///{tmp_path / 'durable.sqlite3'}", tmp_path)
    # https://sqlite.org/pragma.html#pragma_synchronous: 2 = FULL (in WAL mode NORMAL, 1, syncs only at
    # checkpoints: the last commits before a power loss could be rolled back).
    assert (found["synchronous"], found["journal_mode"]) == (2, "wal")


def test_postgresql_persistent_connections_are_checked_before_reuse(tmp_path) -> None:
    """By default each thread keeps its connection and Django checks it before reusing it in a request: a
    restarted server costs no failed request (tests/faults/test_database_restart.py restarts one)."""
    found = _probe("postgres://postgres@127.0.0.1:5432/xdsi_unused", tmp_path, XDS_DB_POOL_SIZE="0")
    assert (found["health_checks"], found["max_age"], found["pool"]) == (True, 600, None)


def test_postgresql_pooled_connections_are_checked_before_they_are_handed_out(tmp_path) -> None:
    """XDS_DB_POOL_SIZE=N: the pool checks a connection before handing it out, and ends a failed series of
    reconnection attempts soon, so a long outage does not delay reconnection by as long again."""
    found = _probe("postgres://postgres@127.0.0.1:5432/xdsi_unused", tmp_path, XDS_DB_POOL_SIZE="4")
    assert found["health_checks"] is True and found["max_age"] == 0
    assert found["pool"]["max_size"] == 4
    assert found["pool"]["reconnect_timeout"] <= 15 and found["pool"]["timeout"] <= 15
