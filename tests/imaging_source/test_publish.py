"""RAD-68 publication: what goes on the wire, RPLC on change, nothing when unchanged, queue when unmapped."""

from __future__ import annotations

import socket

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.uid import generate_uid

from imaging_source.models import Publication, ReconciliationItem
from imaging_source.patient_mapping import set_mapping
from imaging_source.publish import Outcome, publish, study_from_json, study_to_json
from imaging_source.study import InstanceRef, SeriesRef, StudyRef
from kos.validate import validate_manifest
from xds_core.errors import ErrorCode, RegistryError, Severity
from xds_core.vocabulary import (
    DICOM_MIME_TYPE,
    KOS_FORMAT_CODE,
    REFERENCE_ID_LIST_SLOT,
    AssociationType,
    ClassificationScheme,
    ResponseStatus,
)

from .conftest import AFFINITY_PATIENT, NIST_LOCATION_UID, publish_config

pytestmark = pytest.mark.django_db


def _with_extra_instance(study: StudyRef) -> StudyRef:
    first = study.series[0]
    extra = InstanceRef(first.instances[0].sop_class_uid, generate_uid(), 999)
    series = [SeriesRef(first.series_instance_uid, first.modality, first.series_number, first.body_part_examined,
                        [*first.instances, extra]), *study.series[1:]]
    return StudyRef(**{**study.__dict__, "series": series})


def test_publish_sends_the_kos_and_its_metadata_as_mtom(ids_study, recording_repository) -> None:
    set_mapping("IDS-DEPT002-a", AFFINITY_PATIENT)
    result = publish(ids_study, publish_config(recording_repository.url), trigger="test")

    assert result.outcome == Outcome.PUBLISHED, result.message
    assert len(recording_repository.received) == 1
    received = recording_repository.received[0]
    assert received.request.is_mtom and received.content_type.startswith("multipart/related")
    submission = received.pnr.submission
    [entry] = submission.document_entries
    kos_bytes = received.documents[entry.id]
    kos = pydicom.dcmread(DicomBytesIO(kos_bytes))
    # The KOS: valid manifest of the whole study, Retrieve Location UID = our source id.
    assert validate_manifest(kos_bytes, expected_location_uid=NIST_LOCATION_UID) == []
    assert kos.StudyInstanceUID == ids_study.study_instance_uid
    # The DocumentEntry (RAD TF-3 4.68.4.1.2.3).
    assert entry.mime_type == DICOM_MIME_TYPE
    assert entry.unique_id == kos.SOPInstanceUID
    assert (entry.format_code.code, entry.format_code.scheme) == (KOS_FORMAT_CODE, "1.2.840.10008.2.6.1")
    assert entry.patient_id == AFFINITY_PATIENT
    assert entry.source_patient_id == "IDS-DEPT002-a^^^&1.3.6.1.4.1.21367.1800.13.20.1000&ISO"
    assert [(c.code, c.scheme) for c in entry.event_code_list] == [("MR", "DCM"), ("12738006", "SCT")]
    assert entry.slot_values(REFERENCE_ID_LIST_SLOT) == [
        "IDC002-a^^^^urn:ihe:iti:xds:2013:accession",
        f"{ids_study.study_instance_uid}^^^^urn:ihe:iti:xds:2016:studyInstanceUID"]
    assert entry.service_start_time == "20150202154122"
    assert submission.submission_set.patient_id == AFFINITY_PATIENT
    assert submission.submission_set.source_id == NIST_LOCATION_UID
    assert [a.type for a in submission.associations] == [AssociationType.HasMember]
    # What we recorded.
    publication = result.publication
    assert publication.status == Publication.Status.PUBLISHED
    assert publication.entry_uuid == entry.id and publication.entry_uuid.startswith("urn:uuid:")
    assert publication.kos_sop_instance_uid == kos.SOPInstanceUID
    assert bytes(publication.kos) == kos_bytes
    assert publication.instance_count == 36 and publication.series_count == 2
    assert publication.instance_set_hash == ids_study.instance_set_hash()
    assert publication.response_status == ResponseStatus.SUCCESS


def test_unchanged_study_is_not_sent_again(ids_study, recording_repository) -> None:
    set_mapping("IDS-DEPT002-a", AFFINITY_PATIENT)
    config = publish_config(recording_repository.url)
    first = publish(ids_study, config)
    again = publish(ids_study, config)
    assert again.outcome == Outcome.UNCHANGED
    assert again.publication.pk == first.publication.pk
    assert len(recording_repository.received) == 1
    assert Publication.objects.count() == 1


def test_changed_study_is_published_as_a_replacement_of_the_previous_entry(ids_study, recording_repository) -> None:
    set_mapping("IDS-DEPT002-a", AFFINITY_PATIENT)
    config = publish_config(recording_repository.url)
    first = publish(ids_study, config).publication
    changed = _with_extra_instance(ids_study)
    result = publish(changed, config)

    assert result.outcome == Outcome.REPLACED
    second = recording_repository.received[1].pnr.submission
    [entry] = second.document_entries
    rplc = [a for a in second.associations if a.type == AssociationType.RPLC]
    assert len(rplc) == 1
    assert (rplc[0].source_object, rplc[0].target_object) == (entry.id, first.entry_uuid)
    assert entry.unique_id != first.kos_sop_instance_uid
    kos = pydicom.dcmread(DicomBytesIO(recording_repository.received[1].documents[entry.id]))
    assert sum(len(s.ReferencedSOPSequence) for s in
               kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence) == 37
    assert result.publication.replaces_id == first.pk
    # Removing the instance again is a change too: a replacement of the replacement, never an original.
    third = publish(ids_study, config)
    assert third.outcome == Outcome.REPLACED
    rplc3 = [a for a in recording_repository.received[2].pnr.submission.associations
             if a.type == AssociationType.RPLC]
    assert rplc3[0].target_object == result.publication.entry_uuid


def test_unmapped_patient_goes_to_the_reconciliation_queue_and_not_to_the_repository(
        ids_study, recording_repository) -> None:
    result = publish(ids_study, publish_config(recording_repository.url))
    assert result.outcome == Outcome.QUEUED
    assert recording_repository.received == []
    assert Publication.objects.count() == 0
    item = ReconciliationItem.objects.get()
    assert item.status == ReconciliationItem.Status.OPEN
    assert item.local_patient_id == "IDS-DEPT002-a"
    assert "IDS-DEPT002-a" in item.reason
    assert study_from_json(item.study) == ids_study
    # Asking again keeps one open item.
    publish(ids_study, publish_config(recording_repository.url))
    assert ReconciliationItem.objects.count() == 1
    # Once mapped, publishing resolves the item.
    set_mapping("IDS-DEPT002-a", AFFINITY_PATIENT)
    done = publish(study_from_json(item.study), publish_config(recording_repository.url))
    assert done.outcome == Outcome.PUBLISHED
    item.refresh_from_db()
    assert item.status == ReconciliationItem.Status.RESOLVED and item.publication_id == done.publication.pk


def test_authority_rewrite_rule_maps_without_a_table_row(ids_study, recording_repository) -> None:
    result = publish(ids_study, publish_config(recording_repository.url, rewrite=True))
    assert result.outcome == Outcome.PUBLISHED
    entry = recording_repository.received[0].pnr.submission.document_entries[0]
    assert entry.patient_id == "IDS-DEPT002-a^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"


def test_repository_errors_are_recorded_on_the_publication(ids_study, recording_repository) -> None:
    set_mapping("IDS-DEPT002-a", AFFINITY_PATIENT)
    recording_repository.answer_errors = [
        RegistryError(ErrorCode.XDSUnknownPatientId, "patient IDS-AD002-a is not known", Severity.ERROR, "here")]
    result = publish(ids_study, publish_config(recording_repository.url))
    assert result.outcome == Outcome.FAILED
    publication = result.publication
    assert publication.status == Publication.Status.FAILED
    assert publication.response_status == ResponseStatus.FAILURE
    assert publication.errors == [{"error_code": "XDSUnknownPatientId", "code_context": "patient IDS-AD002-a is "
                                   "not known", "severity": "Error", "location": "here"}]
    # A failed attempt is not a publication to replace: the next attempt is an original again.
    recording_repository.answer_errors = []
    retry = publish(ids_study, publish_config(recording_repository.url))
    assert retry.outcome == Outcome.PUBLISHED
    assert not [a for a in recording_repository.received[1].pnr.submission.associations
                if a.type == AssociationType.RPLC]


def test_unreachable_repository_is_recorded_as_a_transport_error(ids_study) -> None:
    set_mapping("IDS-DEPT002-a", AFFINITY_PATIENT)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = publish(ids_study, publish_config(f"http://127.0.0.1:{port}/xds/repository"))
    assert result.outcome == Outcome.FAILED
    assert result.publication.errors[0]["error_code"] == "TransportError"


def test_study_survives_the_json_snapshot(ids_study) -> None:
    assert study_from_json(study_to_json(ids_study)) == ids_study


def test_event_codes_follow_the_configured_anatomy_scheme(ids_study, recording_repository) -> None:
    from dataclasses import replace

    set_mapping("IDS-DEPT002-a", AFFINITY_PATIENT)
    config = publish_config(recording_repository.url)
    config = replace(config, metadata=replace(config.metadata, anatomy_scheme="SRT"))
    publish(ids_study, config)
    entry = recording_repository.received[0].pnr.submission.document_entries[0]
    assert [(c.code, c.scheme, c.display_name) for c in entry.codes(ClassificationScheme.DocumentEntry_eventCodeList)] \
        == [("MR", "DCM", "Magnetic Resonance"), ("T-A0100", "SRT", "Brain")]


# --- end to end through this server's repository and registry (real ITI-41 / ITI-42 / ITI-18 / ITI-43) ----

@pytest.fixture
def local_affinity_domain(settings, tmp_path):
    """This server's repository storing into tmp_path, its registry knowing the affinity patient."""
    from xds_registry.patient_identity_feed.patients import add_or_update_patient

    settings.STORAGES = {**settings.STORAGES, "xds_documents": {
        "BACKEND": "xds_repository.storage.ContentAddressedStorage", "OPTIONS": {"location": str(tmp_path)}}}
    settings.XDS_REGISTRY_URL = ""
    settings.XDS_AFFINITY_DOMAIN_CODES = ""
    add_or_update_patient(AFFINITY_PATIENT)
    return settings


def _query_entry(entry_uuid: str):
    from xds_core.ebxml.parse import parse_adhoc_query_response
    from xds_core.ebxml.serialize import adhoc_query_request
    from xds_core.soap.client import SoapClient
    from xds_core.vocabulary import Action, StoredQuery

    body = adhoc_query_request(StoredQuery.GetDocuments, [("$XDSDocumentEntryEntryUUID", [f"('{entry_uuid}')"])])
    result = SoapClient("local:registry").call(Action.RegistryStoredQuery, body)
    assert result.fault is None, result.fault
    parsed = parse_adhoc_query_response(result.body)
    assert parsed.status == ResponseStatus.SUCCESS, parsed.errors
    [entry] = parsed.objects
    return entry


def _retrieve(repository_unique_id: str, document_unique_id: str) -> bytes:
    from xds_core.ebxml.messages import DocumentRequest
    from xds_core.ebxml.parse import parse_retrieve_document_set_response
    from xds_core.ebxml.serialize import retrieve_document_set_request
    from xds_core.soap.client import SoapClient
    from xds_core.vocabulary import Action

    body = retrieve_document_set_request([DocumentRequest(repository_unique_id, document_unique_id)])
    result = SoapClient("local:repository").call(Action.RetrieveDocumentSet, body)
    status, errors, documents = parse_retrieve_document_set_response(result.body)
    assert status == ResponseStatus.SUCCESS, errors
    return result.binary(documents[0].element).read_bytes()


def test_publish_end_to_end_through_the_local_repository_and_registry(ids_study, local_affinity_domain) -> None:
    set_mapping("IDS-DEPT002-a", AFFINITY_PATIENT)
    config = publish_config("local:repository")
    first = publish(ids_study, config)
    assert first.outcome == Outcome.PUBLISHED, first.publication.errors if first.publication else first.message

    stored = _query_entry(first.publication.entry_uuid)
    assert stored.unique_id == first.publication.kos_sop_instance_uid
    assert stored.mime_type == DICOM_MIME_TYPE
    assert stored.status == "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
    retrieved = _retrieve(stored.repository_unique_id, stored.unique_id)
    assert retrieved == bytes(first.publication.kos)
    # IMG-03's sameKOSDcm check, as the conformance runner applies it to what it retrieves.
    from conformance.dicom_checks import check_same_kos

    from .conftest import IDS_DIR
    assert check_same_kos(retrieved, IDS_DIR / "kos" / "kos.dcm") == []

    second = publish(_with_extra_instance(ids_study), config)
    assert second.outcome == Outcome.REPLACED, second.publication.errors
    assert _query_entry(first.publication.entry_uuid).status == "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
    assert _query_entry(second.publication.entry_uuid).status == "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"


def _pending_row(study: StudyRef) -> Publication:
    return Publication.objects.create(
        study_instance_uid=study.study_instance_uid, kos_sop_instance_uid=generate_uid(),
        entry_uuid="urn:uuid:00000000-0000-4000-8000-000000000001", submission_set_unique_id=generate_uid(),
        patient_id=AFFINITY_PATIENT, source_patient_id="x", instance_set_hash="0", kos=b"",
        status=Publication.Status.PENDING)


def test_a_study_being_sent_by_another_publisher_is_not_sent_twice(ids_study, recording_repository) -> None:
    set_mapping("IDS-DEPT002-a", AFFINITY_PATIENT)
    _pending_row(ids_study)
    result = publish(ids_study, publish_config(recording_repository.url))
    assert result.outcome == Outcome.IN_PROGRESS
    assert recording_repository.received == []


@pytest.mark.parametrize("first_send_registered", [True, False])
def test_an_interrupted_send_is_settled_by_the_same_submission_never_a_second_manifest(
        ids_study, recording_repository, first_send_registered) -> None:
    from datetime import timedelta

    from django.utils import timezone

    set_mapping("IDS-DEPT002-a", AFFINITY_PATIENT)
    config = publish_config(recording_repository.url)
    first = publish(ids_study, config).publication
    # As a publisher killed before it recorded the answer leaves it, an hour ago.
    Publication.objects.filter(pk=first.pk).update(status=Publication.Status.PENDING, response_status="",
                                                   created_at=timezone.now() - timedelta(hours=1))
    if first_send_registered:  # the registry holds that SubmissionSet already: ITI TF-3 Table 4.2.4.1-2
        recording_repository.answer_errors = [RegistryError(
            ErrorCode.XDSDuplicateUniqueIdInRegistry, "SubmissionSet uniqueId already exists", Severity.ERROR, "")]
    result = publish(ids_study, config)
    assert result.outcome == Outcome.UNCHANGED, result.message
    first.refresh_from_db()
    assert first.status == Publication.Status.PUBLISHED and Publication.objects.count() == 1
    sent, resent = (r.pnr.submission for r in recording_repository.received)
    assert resent.submission_set.unique_id == sent.submission_set.unique_id == first.submission_set_unique_id
    assert [(e.id, e.unique_id) for e in resent.document_entries] == [(first.entry_uuid, first.kos_sop_instance_uid)]
    assert recording_repository.received[1].documents == recording_repository.received[0].documents


def test_an_interrupted_send_the_registry_refuses_is_recorded_as_failed(ids_study, recording_repository) -> None:
    from datetime import timedelta

    from django.utils import timezone

    set_mapping("IDS-DEPT002-a", AFFINITY_PATIENT)
    config = publish_config(recording_repository.url)
    first = publish(ids_study, config).publication
    Publication.objects.filter(pk=first.pk).update(status=Publication.Status.PENDING,
                                                   created_at=timezone.now() - timedelta(hours=1))
    recording_repository.answer_errors = [
        RegistryError(ErrorCode.XDSUnknownPatientId, "unknown patient", Severity.ERROR, "")]
    result = publish(ids_study, config)
    assert result.outcome == Outcome.FAILED
    first.refresh_from_db()
    assert first.status == Publication.Status.FAILED and first.errors[0]["error_code"] == "XDSUnknownPatientId"
