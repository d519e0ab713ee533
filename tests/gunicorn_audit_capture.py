"""gunicorn config file for end-to-end tests: each worker writes the audit events it records to a file.

The server runs in another process, so a test cannot use ``xds_core.audit.capture()``; this hook installs a
sink (after any sink the application installed, which still receives every event) that appends each event as
one JSON line to ``XDS_TEST_AUDIT_FILE``.  Loaded by ``tests.gunicorn_server.run_gunicorn(audit_file=...)``.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

_lock = threading.Lock()


def _as_json(event: Any) -> str:
    return json.dumps({
        "event_id": event.event_id.code,
        "event_types": [coded.code for coded in event.event_types],
        "transaction": event.transaction.code if event.transaction is not None else None,
        "outcome": int(event.outcome),
        "description": event.outcome_description,
        "participants": [{"user_id": p.user_id, "user_name": p.user_name, "alternative_user_id":
                          p.alternative_user_id, "network_address": p.network_address,
                          "is_requestor": p.is_requestor} for p in event.participants],
        "objects": [{"id": o.object_id, "role": int(o.role)} for o in event.objects],
    })


def post_worker_init(worker: Any) -> None:  # gunicorn server hook
    from xds_core import audit

    path = os.environ["XDS_TEST_AUDIT_FILE"]
    previous = None

    def sink(event: Any) -> None:
        if previous is not None:
            previous(event)
        line = _as_json(event) + "\n"
        with _lock, open(path, "a", encoding="utf-8") as out:
            out.write(line)

    previous = audit.set_sink(sink)
