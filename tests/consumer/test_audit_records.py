"""The Imaging Document Consumer's audit records, as DICOM PS3.15 A.5 messages valid against the audit XSD:
ITI-18 and ITI-43 it sends (this process's registry and repository answering, so both sides show), and a
whole import -- ITI-18, ITI-43, RAD-69 from a gunicorn Imaging Document Source in front of the test PACS,
C-STORE into a second Orthanc -- which ends in one Import (PS3.15 A.5.3.5) naming the local patient.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from io import StringIO

import pytest
from django.core.management import call_command

from consumer.find import FindQuery, find_manifests
from consumer.manifest import fetch_manifest
from consumer.models import Endpoint, EndpointKind
from tests.audit_messages import keep_captured, valid_messages
from tests.consumer.conftest import KOS_FORMAT, LOCATION_UID, NIST_STUDY, Domain
from tests.consumer.import_pacs import ImportPacs
from tests.gunicorn_server import Server
from xds_core import audit

LOCAL_PATIENT = "HOSPB-7^^^&1.2.826.0.1.3680043.10.1042&ISO"


@pytest.fixture(autouse=True)
def _every_recorded_event_is_a_valid_audit_message(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each event a test here captures is also written as its A.5 message(s) and checked against the XSD."""
    captured = keep_captured(monkeypatch)
    yield
    valid_messages(captured)


def test_find_and_retrieve_a_manifest_record_both_sides_of_iti_18_and_iti_43(domain: Domain) -> None:
    patient = domain.patient()
    published = domain.publish(patient, study_uid=NIST_STUDY)
    with audit.capture() as events:
        (found,) = find_manifests("", FindQuery(patient_id=patient, format_codes=(KOS_FORMAT,))).manifests
        fetch_manifest(found, resolve_repository=lambda _uid: domain.repository_url)
    recorded = {(e.transaction.code, e.event_id.code, e.action.value) for e in events if e.transaction}
    assert {("ITI-18", "110112", "E"), ("ITI-43", "110107", "C"), ("ITI-43", "110106", "R")} <= recorded
    # ITI TF-2b 3.43.6.1.1, the consumer's side: Import/C, the repository is the Source (not the requestor),
    # the consumer the Destination and requestor (its process id), each document with its repository.
    [sent] = [e for e in events if e.transaction is audit.Transaction.ITI_43 and e.event_id is audit.EventId.IMPORT]
    [root] = valid_messages([sent])
    parties = {p.find("RoleIDCode").get("csd-code"): p for p in root.findall("ActiveParticipant")}
    assert parties["110153"].get("UserID") == domain.repository_url
    assert parties["110153"].get("UserIsRequestor") == "false"
    assert parties["110152"].get("UserIsRequestor") == "true" and parties["110152"].get("AlternativeUserID").isdigit()
    [document] = root.findall("ParticipantObjectIdentification")
    assert document.get("ParticipantObjectID") == published.unique_id
    [repository] = [d for d in document.findall("ParticipantObjectDetail") if d.get("type") == "Repository Unique Id"]
    assert base64.b64decode(repository.get("value")).decode() == domain.repository_id


@pytest.mark.pacs
def test_an_import_into_the_local_pacs_ends_in_one_import_of_the_local_patient(
        domain: Domain, ids: Server, import_pacs: ImportPacs, settings) -> None:  # type: ignore[no-untyped-def]
    Endpoint.objects.create(kind=EndpointKind.IMAGING_SOURCE, unique_id=LOCATION_UID,
                            url=ids.endpoint("imaging-source"))
    import_pacs.wipe_studies()
    settings.XDS_SITE_CONSUMER_IDENTITY = "XDSI_CONSUMER@HOSPITAL_B"
    patient = domain.patient()
    domain.publish(patient, study_uid=NIST_STUDY)
    target = f"{import_pacs.ae_title}@127.0.0.1:{import_pacs.dicom_port}"
    with audit.capture() as events:
        call_command("xds_fetch", "--patient", patient, "--to-pacs", target, "--calling-ae",
                     import_pacs.calling_ae_title, "--local-patient", LOCAL_PATIENT, stdout=StringIO(),
                     stderr=StringIO())
    assert {"ITI-18", "ITI-43", "RAD-69"} <= {e.transaction.code for e in events if e.transaction}
    [imported] = [e for e in events if e.event_id is audit.EventId.IMPORT and e.transaction is None]
    assert (imported.action, imported.outcome, imported.patient_ids) == (
        audit.EventAction.CREATE, audit.EventOutcome.SUCCESS, (LOCAL_PATIENT,))
    [root] = valid_messages([imported])
    roles = [(p.get("UserID"), p.find("RoleIDCode").get("csd-code"), p.get("UserIsRequestor"))
             for p in root.findall("ActiveParticipant")]
    assert roles == [("XDSI_CONSUMER@HOSPITAL_B", "110152", "true"),
                     (ids.endpoint("imaging-source"), "110153", "false"), (target, "110152", "false")]
    [study] = [o for o in root.findall("ParticipantObjectIdentification") if o.get("ParticipantObjectID") == NIST_STUDY]
    assert study.find("ParticipantObjectDescription/SOPClass").get("NumberOfInstances") == "36"
