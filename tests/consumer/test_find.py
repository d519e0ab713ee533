"""ITI-18 as the Imaging Document Consumer, against this process's registry and a vendor's (over HTTP)."""

from __future__ import annotations

import re

import pytest

from consumer.find import FindError, FindQuery, TooManyResults, find_manifests, query_problems
from tests.consumer.conftest import KOS_FORMAT, Domain, VendorRegistry, entry_for, new_oid
from xds_core import audit
from xds_core.metadata.values import Code
from xds_core.vocabulary import AvailabilityStatus, StoredQuery


def query(patient_id: str, **kwargs: object) -> FindQuery:
    return FindQuery(patient_id=patient_id, format_codes=(KOS_FORMAT,), **kwargs)  # type: ignore[arg-type]


def test_finds_the_patients_manifests_by_kos_format_code_only(domain: Domain) -> None:
    patient = domain.patient()
    kos = domain.publish(patient)
    report = domain.publish(patient, mime_type="text/plain", content=b"a report",
                            format_code=Code("urn:ihe:iti:xds:2017:mimeTypeSufficient", "1.3.6.1.4.1.19376.1.2.3",
                                                "mimeType Sufficient"))
    other_patient = domain.publish(domain.patient())

    result = find_manifests("", query(patient))

    assert [m.unique_id for m in result.manifests] == [kos.unique_id]
    found = result.manifests[0]
    assert found.repository_unique_id == domain.repository_id
    assert found.study_instance_uids == (kos.study_uid,)
    assert found.size == len(kos.content) and len(found.hash) == 40
    assert found.status == AvailabilityStatus.APPROVED and found.entry_uuid == kos.entry_uuid
    # Without the formatCode filter the report comes back from the registry and is weeded out here.
    any_format = find_manifests("", FindQuery(patient_id=patient))
    assert [m.unique_id for m in any_format.manifests] == [kos.unique_id]
    assert [uid for uid, _ in any_format.skipped] == [report.unique_id]
    assert other_patient.unique_id not in {m.unique_id for m in any_format.manifests}


def test_study_filter_uses_find_documents_by_reference_id(domain: Domain) -> None:
    patient = domain.patient()
    wanted = domain.publish(patient)
    domain.publish(patient)  # another study of the same patient
    with audit.capture() as events:
        result = find_manifests("", query(patient, study_instance_uid=wanted.study_uid))
    assert [m.unique_id for m in result.manifests] == [wanted.unique_id]
    assert result.queries == 1 and result.notes == []
    sent = [e for e in events if e.transaction == audit.Transaction.ITI_18]
    assert sent and patient in sent[0].patient_ids
    assert any(StoredQuery.FindDocumentsByReferenceId.value == o.object_id for o in sent[0].objects)


def test_deprecated_manifests_are_skipped_unless_asked_for(domain: Domain) -> None:
    patient = domain.patient()
    old = domain.publish(patient, creation_time="20260101120000")
    new = domain.publish(patient, study_uid=old.study_uid, replaces=old.entry_uuid)

    assert [m.unique_id for m in find_manifests("", query(patient)).manifests] == [new.unique_id]
    both = find_manifests("", query(patient, include_deprecated=True)).manifests
    assert {m.unique_id: m.status for m in both} == {old.unique_id: AvailabilityStatus.DEPRECATED,
                                                     new.unique_id: AvailabilityStatus.APPROVED}


def test_creation_time_range_is_sent_and_checked(domain: Domain) -> None:
    patient = domain.patient()
    domain.publish(patient, creation_time="20250601000000")
    inside = domain.publish(patient, creation_time="20260315101010")
    domain.publish(patient, creation_time="20260401000000")
    result = find_manifests("", query(patient, since="20260101", until="20260401"))
    assert [m.unique_id for m in result.manifests] == [inside.unique_id]


def test_too_many_results_splits_the_creation_time_range(domain: Domain, settings) -> None:  # type: ignore[no-untyped-def]
    patient = domain.patient()
    published = [domain.publish(patient, creation_time=t)
                 for t in ("20200101000000", "20230615120000", "20261127120000")]
    settings.XDS_MAX_QUERY_RESULTS = 1

    result = find_manifests("", query(patient))

    assert [m.unique_id for m in result.manifests] == [p.unique_id for p in published]
    assert result.queries > 3
    assert any("XDSTooManyResults" in note for note in result.notes)


def test_too_many_results_on_the_narrowest_range_is_a_clear_error(domain: Domain, settings) -> None:  # type: ignore[no-untyped-def]
    patient = domain.patient()
    for _ in range(2):
        domain.publish(patient, creation_time="20261127120000")  # same second: cannot be split apart
    settings.XDS_MAX_QUERY_RESULTS = 1
    with pytest.raises(TooManyResults, match="XDSTooManyResults"):
        find_manifests("", query(patient, since="20261127", until="20261128"))


def test_vendor_registry_without_find_documents_by_reference_id_falls_back_to_client_side_match(
        vendor_registry: VendorRegistry) -> None:
    patient = "V1^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
    study = new_oid()
    entries = [entry_for(patient, new_oid(), study_uid=study, hash="a" * 40, size=10),
               entry_for(patient, new_oid(), hash="b" * 40, size=10),  # another study
               entry_for(patient, new_oid(), study_uid=study, mime_type="text/plain", hash="c" * 40, size=10)]
    for entry in entries:
        entry.status = AvailabilityStatus.APPROVED
        entry.repository_unique_id = "1.2.3.4"
    vendor_registry.entries = entries

    result = find_manifests(vendor_registry.url, query(patient, study_instance_uid=study))

    assert vendor_registry.asked == [StoredQuery.FindDocumentsByReferenceId, StoredQuery.FindDocuments]
    assert [m.unique_id for m in result.manifests] == [entries[0].unique_id]
    assert any("FindDocumentsByReferenceId" in note for note in result.notes)
    assert {uid for uid, _ in result.skipped} == {entries[1].unique_id, entries[2].unique_id}


def test_unreachable_registry_is_a_find_error_naming_it() -> None:
    with pytest.raises(FindError, match="127.0.0.1:9"):
        find_manifests("http://127.0.0.1:9/registry", query("P^^^&1.2.3&ISO"), timeout=2)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("patient_id", "no-authority", "CX.4"),
    ("study_instance_uid", "1.2.x", "not a DICOM UID"),
    ("since", "2026-13-01", "not a date"),
    ("format_codes", ("1.2.3') OR ('1",), "not code^^scheme"),
])
def test_hostile_query_input_is_refused_before_sending(field: str, value: object, message: str) -> None:
    values = {"patient_id": "P^^^&1.2.3&ISO", "format_codes": (KOS_FORMAT,), field: value}
    bad = FindQuery(**values)  # type: ignore[arg-type]
    assert any(message in p for p in query_problems(bad))
    with pytest.raises(FindError, match=re.escape(message)):
        find_manifests("http://127.0.0.1:9/never-called", bad)
