"""The Document Repository's audit records (xds_core.audit): ITI-41 received, ITI-42 sent to the
registry, ITI-43 answered -- each one event, on the right side (ITI TF-2b 3.41.5.1, 3.42.5.1, 3.43.6.1).

The registry is this process's own (``local:registry``), so the registry's side of the ITI-42
shows up too: an in-process exchange is still two actors, each recording its own side.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.audit_messages import keep_captured, valid_messages
from tests.xds_repository.conftest import REPOSITORY_ID, Doc, kos_doc, new_oid, provide_and_register_parts, send
from xds_core import audit
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.messages import DocumentRequest
from xds_core.ebxml.parse import parse_retrieve_document_set_response
from xds_core.soap.client import SoapClient
from xds_core.vocabulary import Action, ResponseStatus

pytestmark = pytest.mark.django_db

T = audit.Transaction


@pytest.fixture(autouse=True)
def _every_recorded_event_is_a_valid_audit_message(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each event a test here captures is also written as its A.5 message(s) and checked against the XSD."""
    captured = keep_captured(monkeypatch)
    yield
    valid_messages(captured)


def retrieve(*unique_ids: str) -> str:
    body = ebxml_serialize.retrieve_document_set_request([DocumentRequest(REPOSITORY_ID, uid) for uid in unique_ids])
    result = SoapClient("local:repository").call(Action.RetrieveDocumentSet, body)
    status = parse_retrieve_document_set_response(result.body)[0]
    result.close()
    return status


def sides(events: list[audit.AuditEvent]) -> list[tuple[str, str, str, int]]:
    """(transaction, EventID, action, outcome) of each event, in the order recorded."""
    return [(e.transaction.code, e.event_id.display, e.action.value, int(e.outcome)) for e in events]


def test_provide_and_register_then_retrieve_record_one_event_per_transaction_and_side(local: Path,
                                                                                      patient: str) -> None:
    doc, manifest = Doc(content=b"a report"), kos_doc()
    body, parts, _ = provide_and_register_parts([doc, manifest], patient_id=patient)
    submission_set_uid = body.find(".//{*}ExternalIdentifier[@identificationScheme="
                                   "'urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8']").get("value")
    with audit.capture() as stored:
        assert send(body, parts) == (ResponseStatus.SUCCESS, [])
    # The registry answers first (its exchange ends inside ours), then the repository's two sides.
    assert sides(stored) == [("ITI-42", "Import", "C", 0), ("ITI-42", "Export", "R", 0), ("ITI-41", "Import", "C", 0)]
    for event in stored:
        assert event.patient_ids == (patient,)
        assert [o.object_id for o in event.objects if o.id_type is audit.ObjectIdType.SUBMISSION_SET] == [
            submission_set_uid]
    received = stored[2]
    assert received.participant(audit.ParticipantRole.DESTINATION).user_id == "local:repository"
    sent = stored[1]
    assert sent.requestor.role is audit.ParticipantRole.SOURCE
    assert sent.participant(audit.ParticipantRole.DESTINATION).user_id == "local:registry"

    with audit.capture() as retrieved:
        assert retrieve(doc.unique_id, manifest.unique_id) == ResponseStatus.SUCCESS
    [event] = retrieved
    assert sides(retrieved) == [("ITI-43", "Export", "R", 0)]
    assert [(o.object_id, o.details[0]) for o in event.objects] == [
        (doc.unique_id, ("Repository Unique Id", REPOSITORY_ID)),
        (manifest.unique_id, ("Repository Unique Id", REPOSITORY_ID))]
    # ITI-43: the consumer pulls, so the requestor is the Destination and we the Source.
    assert event.requestor.role is audit.ParticipantRole.DESTINATION
    assert event.participant(audit.ParticipantRole.SOURCE).user_id == "local:repository"


def test_a_partly_answered_retrieve_records_a_success_for_the_documents_returned_and_a_failure_for_the_rest(
        local: Path, patient: str) -> None:
    """ITI TF-2b 3.43.6.1.2: mixed results are one success event and one failure event."""
    doc = Doc(content=b"known")
    assert send(*provide_and_register_parts([doc], patient_id=patient)[:2])[0] == ResponseStatus.SUCCESS
    unknown = new_oid()
    with audit.capture() as events:
        assert retrieve(doc.unique_id, unknown) == ResponseStatus.PARTIAL_SUCCESS
    assert sides(events) == [("ITI-43", "Export", "R", 0), ("ITI-43", "Export", "R", 8)]
    assert [[o.object_id for o in e.objects] for e in events] == [[doc.unique_id], [unknown]]
    with audit.capture() as events:
        assert retrieve(new_oid()) == ResponseStatus.FAILURE
    assert sides(events) == [("ITI-43", "Export", "R", 8)]  # nothing returned: one event


def test_an_unreachable_registry_is_a_major_failure_sent_and_a_serious_failure_received(
        local: Path, patient: str, settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_REGISTRY_URL = "http://127.0.0.1:9/xds/registry"  # discard port: nobody answers
    with audit.capture() as events:
        status, errors = send(*provide_and_register_parts([Doc(content=b"x")], patient_id=patient)[:2])
    assert status == ResponseStatus.FAILURE and errors[0].error_code == "XDSRegistryNotAvailable"
    assert sides(events) == [("ITI-42", "Export", "R", 12), ("ITI-41", "Import", "C", 8)]
    assert all(e.patient_ids == (patient,) for e in events)
