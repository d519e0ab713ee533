"""Audit events captured by a test, as the DICOM PS3.15 A.5 messages the ATNA sink writes, checked against
the DICOM audit XSD (xds_core/data/audit/dicom2017c.xsd).

The per-actor audit tests (tests/*/test_audit_records.py) wrap :func:`xds_core.audit.capture` with
:func:`keep_captured` so that every event their real transactions recorded is also serialized
(one message per patient, ITI TF-2a 3.20.7.1) and validated when the test ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pytest
from lxml import etree

from xds_core import audit
from xds_core.audit_xml import AuditSource, schema_errors, split_by_patient, to_xml

SOURCE = AuditSource("xdsi-test", "1.3.6.1.4.1.21367.13.80")


def valid_messages(events: Iterable[audit.AuditEvent]) -> list[etree._Element]:
    """Each event's messages, parsed; fails naming the event and the schema's complaint when one is invalid."""
    roots = []
    for event in events:
        for one in split_by_patient(event):
            message = to_xml(one, SOURCE)
            errors = schema_errors(message)
            assert not errors, f"{one.event_id.display} / {one.transaction}: {errors}\n{message.decode()}"
            roots.append(etree.fromstring(message))
    return roots


def keep_captured(monkeypatch: pytest.MonkeyPatch) -> list[audit.AuditEvent]:
    """From now on, every event collected by ``audit.capture()`` is also appended to the returned list."""
    kept: list[audit.AuditEvent] = []
    real_capture = audit.capture

    @contextmanager
    def capture_and_keep() -> Iterator[list[audit.AuditEvent]]:
        with real_capture() as events:
            try:
                yield events
            finally:
                kept.extend(events)

    monkeypatch.setattr(audit, "capture", capture_and_keep)
    return kept
