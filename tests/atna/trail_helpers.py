"""Shared pieces of the audit trail's tests (tests/atna/test_trail.py, test_chain.py, test_verify.py, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from atna import chain, trail
from atna.models import AuditRecord
from xds_core import audit, ns
from xds_core.audit_xml import AuditSource

SOURCE = AuditSource("test-node@localhost", "Test Hospital")
PATIENT = "TRAIL-1^^^&1.3.6.1.4.1.21367.13.20.1000&ISO"


def query_event(*patients: str, transaction: audit.Transaction = audit.Transaction.ITI_18) -> audit.AuditEvent:
    """A registry's ITI-18 event naming ``patients`` (a real builder of the seam)."""
    objects = [*(audit.patient(p) for p in patients),
               audit.query(transaction, "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d", b"<query/>")]
    return audit.transaction_event(transaction, audit.Side.RESPONDER, requestor=audit.soap_client("10.0.0.7"),
                                   responder=audit.this_node("http://registry.test/xds/registry"),
                                   objects=objects)


def submission_event(patient: str = PATIENT, user_name: str = "") -> audit.AuditEvent:
    requestor = audit.Participant(ns.WSA_ANONYMOUS, "10.0.0.8", user_name=user_name)
    return audit.transaction_event(audit.Transaction.ITI_42, audit.Side.RESPONDER, requestor=requestor,
                                   responder=audit.this_node("http://registry.test/xds/registry"),
                                   objects=[audit.patient(patient), audit.submission_set("1.2.3.4")])


def write(n: int, *, patient: str = PATIENT) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    for i in range(n):
        out += trail.store(submission_event(f"{patient}{i}" if n > 1 else patient), SOURCE)
    return out


@dataclass
class Files:
    key: Path
    anchors: Path

    def key_bytes(self) -> bytes:
        return chain.load_key(self.key, create=True)


@pytest.fixture
def files(tmp_path: Path, settings) -> Files:  # type: ignore[no-untyped-def]
    """The key and anchor files in a temporary directory, and the settings pointing at them."""
    found = Files(tmp_path / "audit" / "hmac.key", tmp_path / "audit" / "anchors.log")
    settings.XDS_AUDIT_KEY_FILE = found.key
    settings.XDS_AUDIT_ANCHOR_FILE = found.anchors
    settings.XDS_AUDIT_SOURCE_ID = SOURCE.source_id
    return found
