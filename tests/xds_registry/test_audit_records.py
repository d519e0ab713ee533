"""The Document Registry's audit records: one event per ITI-42 / ITI-18 over real HTTP, per ITI-8
message over a real MLLP socket (xds_core.audit; ITI TF-2a 3.8.5.1, 3.18.5.1; ITI TF-2b 3.42.5.1)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.audit_messages import keep_captured, valid_messages
from tests.xds_registry.registry_helpers import AUTHORITY, fed_patient, new_patient_id, submission_bytes
from xds_core import audit
from xds_core.affinity_domain import load_affinity_domain
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.parse import parse_adhoc_query_response
from xds_core.ebxml.responses import parse_registry_response
from xds_core.safe_xml import parse_xml
from xds_core.soap.client import SoapClient
from xds_core.vocabulary import Action, ResponseStatus, StoredQuery
from xds_registry import models as m
from xds_registry.patient_identity_feed.hl7v2 import parse_message
from xds_registry.patient_identity_feed.mllp import send, serve_in_thread

pytestmark = pytest.mark.django_db(transaction=True)

SUBMISSION_SET = audit.ObjectIdType.SUBMISSION_SET


@pytest.fixture(autouse=True)
def _every_recorded_event_is_a_valid_audit_message(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each event a test here captures is also written as its A.5 message(s) and checked against the XSD."""
    captured = keep_captured(monkeypatch)
    yield
    valid_messages(captured)


def register(url: str, patient_id: str) -> tuple[str, dict[str, str]]:
    data, uids = submission_bytes("single_doc.xml", patient_id)
    result = SoapClient(url).call(Action.RegisterDocumentSet.value, parse_xml(data))
    return parse_registry_response(result.body)[0], uids


def test_a_registration_over_http_records_one_import_of_its_patient_and_submission_set(live_server) -> None:
    pid = fed_patient()
    url = f"{live_server.url}/xds/registry"
    with audit.capture() as events:
        status, uids = register(url, pid)
    assert status == ResponseStatus.SUCCESS.value
    [event] = events
    assert (event.event_id, event.action, event.transaction, event.outcome) == (
        audit.EventId.IMPORT, audit.EventAction.CREATE, audit.Transaction.ITI_42, audit.EventOutcome.SUCCESS)
    assert event.patient_ids == (pid,)
    assert [o.object_id for o in event.objects if o.id_type is SUBMISSION_SET] == [uids["SubmissionSet01"]]
    source, destination = event.requestor, event.participant(audit.ParticipantRole.DESTINATION)
    assert source.role is audit.ParticipantRole.SOURCE and source.network_address == "127.0.0.1"
    assert source.user_id == "http://www.w3.org/2005/08/addressing/anonymous"  # its wsa:ReplyTo
    assert destination.user_id == url and not destination.is_requestor


def test_a_refused_registration_records_a_serious_failure_for_its_patient(live_server) -> None:
    pid = new_patient_id()  # never fed: XDSUnknownPatientId
    with audit.capture() as events:
        status, _ = register(f"{live_server.url}/xds/registry", pid)
    assert status == ResponseStatus.FAILURE.value
    [event] = events
    assert (event.transaction, event.outcome, event.patient_ids) == (
        audit.Transaction.ITI_42, audit.EventOutcome.SERIOUS_FAILURE, (pid,))


def test_a_stored_query_records_one_query_event_with_its_patient_and_the_query(live_server) -> None:
    pid = fed_patient()
    register(f"{live_server.url}/xds/registry", pid)
    request = ebxml_serialize.adhoc_query_request(StoredQuery.FindDocuments, [
        ("$XDSDocumentEntryPatientId", [f"'{pid}'"]),
        ("$XDSDocumentEntryStatus", ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"])])
    with audit.capture() as events:
        result = SoapClient(f"{live_server.url}/xds/registry").call(Action.RegistryStoredQuery.value, request)
    assert len(parse_adhoc_query_response(result.body).objects) == 1
    [event] = events
    assert (event.event_id, event.action, event.transaction, event.outcome) == (
        audit.EventId.QUERY, audit.EventAction.EXECUTE, audit.Transaction.ITI_18, audit.EventOutcome.SUCCESS)
    assert event.patient_ids == (pid,)
    [query] = [o for o in event.objects if o.role is audit.ObjectRole.QUERY]
    assert query.object_id == StoredQuery.FindDocuments.value
    assert pid.replace("&", "&amp;").encode() in query.query  # the AdhocQueryRequest as received


def test_a_failing_sink_breaks_no_registration_and_logs_no_patient(live_server, caplog) -> None:
    pid = fed_patient()

    def failing(event: audit.AuditEvent) -> None:
        raise ConnectionError(f"audit repository unreachable for {event.patient_ids}")

    previous = audit.set_sink(failing)
    try:
        with caplog.at_level(logging.ERROR, logger="xds_core.audit"):
            status, _ = register(f"{live_server.url}/xds/registry", pid)
    finally:
        audit.set_sink(previous)
    assert status == ResponseStatus.SUCCESS.value and m.DocumentEntry.objects.count() == 1
    assert "ConnectionError" in caplog.text and pid.split("^")[0] not in caplog.text


# --------------------------------------------------------------------------- ITI-8 over MLLP


@pytest.fixture
def feed(corpus_dir: Path) -> Iterator[object]:
    domain = load_affinity_domain(corpus_dir / "affinity-domain" / "codes.xml")
    server, thread = serve_in_thread("127.0.0.1", 0, domain)
    host, port = server.server_address[:2]
    yield lambda text: parse_message(send(host, port, text))
    server.shutdown()
    server.server_close()
    thread.join(5)


def adt(event: str, pid3: str, *, mrg: str | None = None) -> str:
    segments = [f"MSH|^~\\&|PAT_IDENTITY_X_REF_MGR|ORG|XDS_REGISTRY|AFFINITY|20261127120000||ADT^{event}^ADT_{event}"
                f"|CTRL-{event}|P|2.5", "EVN||20261127120000", f"PID|||{pid3}||Doe^Jane||19800101|F", "PV1||O"]
    if mrg:
        segments.append(f"MRG|{mrg}")
    return "\r".join(segments) + "\r"


def local_id() -> str:
    return f"P{uuid.uuid4().hex[:10]}"


def test_an_admit_over_mllp_records_the_creation_of_the_patient_record(feed) -> None:
    pid = local_id()
    with audit.capture() as events:
        ack = feed(adt("A01", f"{pid}^^^IHEFACILITY&{AUTHORITY}&ISO"))
    assert ack.field("MSA", 1) == "AA"
    [event] = events
    assert (event.event_id, event.action, event.transaction, event.outcome) == (
        audit.EventId.PATIENT_RECORD, audit.EventAction.CREATE, audit.Transaction.ITI_8, audit.EventOutcome.SUCCESS)
    assert event.patient_ids == (f"{pid}^^^&{AUTHORITY}&ISO",)
    assert ("MSH-10", "CTRL-A01") in event.objects[0].details
    assert event.requestor.user_id == "PAT_IDENTITY_X_REF_MGR|ORG" and event.requestor.network_address == "127.0.0.1"
    assert event.participant(audit.ParticipantRole.DESTINATION).user_id == "XDS_REGISTRY|AFFINITY"


def test_a_merge_records_an_update_of_the_survivor_and_a_delete_of_the_merged_patient(feed) -> None:
    survivor, merged = local_id(), local_id()
    for pid in (survivor, merged):
        feed(adt("A04", f"{pid}^^^&{AUTHORITY}&ISO"))
    with audit.capture() as events:
        ack = feed(adt("A40", f"{survivor}^^^&{AUTHORITY}&ISO", mrg=f"{merged}^^^&{AUTHORITY}&ISO"))
    assert ack.field("MSA", 1) == "AA"
    assert [(e.action, e.patient_ids, e.outcome) for e in events] == [
        (audit.EventAction.UPDATE, (f"{survivor}^^^&{AUTHORITY}&ISO",), audit.EventOutcome.SUCCESS),
        (audit.EventAction.DELETE, (f"{merged}^^^&{AUTHORITY}&ISO",), audit.EventOutcome.SUCCESS)]


def test_a_refused_feed_records_a_serious_failure_and_a_foreign_message_records_nothing(feed) -> None:
    pid = local_id()
    with audit.capture() as events:
        refused = feed(adt("A01", f"{pid}^^^&1.2.3.999&ISO"))  # not an authority of the affinity domain
        foreign = feed(adt("A01", f"{pid}^^^&{AUTHORITY}&ISO").replace("ADT^A01^ADT_A01", "ORM^O01^ORM_O01"))
    assert (refused.field("MSA", 1), foreign.field("MSA", 1)) == ("AE", "AR")
    [event] = events
    assert (event.action, event.outcome, event.patient_ids) == (
        audit.EventAction.CREATE, audit.EventOutcome.SERIOUS_FAILURE, (f"{pid}^^^&1.2.3.999&ISO",))
    assert not m.Patient.objects.filter(patient_id__startswith=pid).exists()
