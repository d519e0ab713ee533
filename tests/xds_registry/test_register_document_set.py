"""ITI-42 Register Document Set-b: registration, lifecycle, uniqueness and atomicity (real database)."""

from __future__ import annotations

import copy

import pytest
from django.db.models import Count

from tests.xds_registry.registry_helpers import fed_patient, load_submission, new_oid, new_patient_id
from xds_core.errors import ErrorCode, XdsError
from xds_core.metadata.objects import Association, DocumentEntry, Slot, Submission, new_id
from xds_core.vocabulary import (
    AssociationType,
    AvailabilityStatus,
    IdentificationScheme,
    SubmissionSetStatus,
)
from xds_registry import models as m
from xds_registry.patient_identity_feed.patients import merge_patients
from xds_registry.register_document_set import register_document_set, register_document_sets
from xds_registry.rows import COPY_THRESHOLD

pytestmark = pytest.mark.django_db

APPROVED = AvailabilityStatus.APPROVED.value
DEPRECATED = AvailabilityStatus.DEPRECATED.value


def register(name: str, patient_id: str, **kwargs: str):
    submission, uids = load_submission(name, patient_id, **kwargs)
    result = register_document_set(submission)
    return result, uids


def codes_of(exc: pytest.ExceptionInfo[XdsError]) -> list[str]:
    return [e.error_code for e in exc.value.errors]


def status_of(entry_uuid: str) -> str:
    return m.DocumentEntry.objects.get(entry_uuid=entry_uuid).status


def counts() -> tuple[int, int, int, int, int]:
    return (m.SubmissionSet.objects.count(), m.DocumentEntry.objects.count(), m.Folder.objects.count(),
            m.Association.objects.count(), m.RegistryCode.objects.count())


def add_document_copy(sub: Submission, *, folder_id: str | None = None) -> DocumentEntry:
    """A second DocumentEntry (copy of the first, new id/uniqueId) linked to the SubmissionSet."""
    assert sub.submission_set is not None
    de = copy.deepcopy(sub.document_entries[0])
    de.id = f"Doc{len(sub.document_entries) + 1}"
    for c in de.classifications:
        c.classified_object, c.id = de.id, ""
    for e in de.external_identifiers:
        e.registry_object, e.id = de.id, ""
    de.unique_id = new_oid()
    sub.document_entries.append(de)
    sub.associations.append(Association(id=f"ss-{de.id}", association_type=AssociationType.HasMember.value,
                                        source_object=sub.submission_set.id, target_object=de.id,
                                        slots=[Slot("SubmissionSetStatus", [SubmissionSetStatus.ORIGINAL.value])]))
    if folder_id:
        sub.associations.append(Association(id=f"fd-{de.id}", association_type=AssociationType.HasMember.value,
                                            source_object=folder_id, target_object=de.id))
        sub.associations.append(Association(id=f"ss-fd-{de.id}", association_type=AssociationType.HasMember.value,
                                            source_object=sub.submission_set.id, target_object=f"fd-{de.id}"))
    return de


# --- happy paths -----------------------------------------------------------------------------------

def test_single_document_is_registered_with_assigned_uuids_and_columns():
    pid = fed_patient()
    result, uids = register("single_doc.xml", pid)
    doc_uuid = result.entry_uuids["Document01"]
    assert doc_uuid.startswith("urn:uuid:") and result.submission_set_uuid.startswith("urn:uuid:")
    de = m.DocumentEntry.objects.get(entry_uuid=doc_uuid)
    assert (de.unique_id, de.patient_id, de.status, de.lid) == (uids["Document01"], pid, APPROVED, doc_uuid)
    assert de.creation_time == "20051224000000" and de.service_start_time == "20041223080000"
    assert de.class_code == "REPORTS^^1.3.6.1.4.1.19376.1.2.6.1"
    assert de.hash == "e543712c0e10501972de13a5bfcbe826c49feb75" and de.size == 4
    # The stored fragment is the answer: registry-assigned id/status/lid, no symbolic id left.
    assert f'id="{doc_uuid}"' in de.xml and f'status="{APPROVED}"' in de.xml
    assert "Document01" not in de.xml and 'versionName="1"' in de.xml
    ss = m.SubmissionSet.objects.get(entry_uuid=result.submission_set_uuid)
    assert ss.unique_id == uids["SubmissionSet01"] and ss.submission_time == "20041225235050"
    assert ss.content_type_code.startswith("225728007^^")
    assert "SubmissionSet01" not in ss.xml
    assoc = m.Association.objects.get()
    assert (assoc.source_uuid, assoc.target_uuid, assoc.source_kind, assoc.target_kind) == (
        ss.entry_uuid, doc_uuid, "SS", "DE")
    assert assoc.submission_set_status == "Original"
    codes = set(m.RegistryCode.objects.filter(object_kind="DE", object_id=de.pk).values_list("attribute", "value"))
    assert ("confidentialityCode", "V^^2.16.840.1.113883.5.25") in codes
    assert ("eventCodeList", "MPQ-eventcode-1^^1.3.6.1.4.1.21367.2017.3") in codes
    assert ("authorPerson", "^Smitty^Gerald^^^") in codes and ("classCode", de.class_code) in codes


def test_two_documents_are_registered():
    result, _ = register("two_doc.xml", fed_patient())
    assert result.document_count == 2
    assert m.DocumentEntry.objects.filter(status=APPROVED).count() == 2
    assert m.Association.objects.filter(source_uuid=result.submission_set_uuid).count() == 2


def test_folder_with_document_sets_last_update_time_and_membership():
    result, uids = register("folder_with_doc.xml", fed_patient())
    folder = m.Folder.objects.get()
    assert folder.last_update_time and len(folder.last_update_time) == 14
    assert f"<rim:Value>{folder.last_update_time}</rim:Value>" in folder.xml
    member = m.Association.objects.get(source_uuid=folder.entry_uuid)
    assert member.target_kind == "DE" and member.source_kind == "FD"
    # The SubmissionSet -> (Folder -> DocumentEntry) HasMember targets the association.
    assert m.Association.objects.filter(target_uuid=member.entry_uuid, target_kind="AS").count() == 1
    assert m.RegistryCode.objects.filter(object_kind="FD", attribute="codeList").count() >= 1


def test_two_documents_and_a_folder():
    pid = fed_patient()
    sub, _ = load_submission("folder_with_doc.xml", pid)
    add_document_copy(sub, folder_id=sub.folders[0].id)
    register_document_set(sub)
    folder = m.Folder.objects.get()
    assert m.Association.objects.filter(source_uuid=folder.entry_uuid, target_kind="DE").count() == 2


def test_empty_folder_overwrites_submitted_last_update_time():
    sub, _ = load_submission("empty_folder.xml", fed_patient())
    sub.folders[0].last_update_time = "19990101"
    register_document_set(sub)
    folder = m.Folder.objects.get()
    assert folder.last_update_time != "19990101000000" and "19990101" not in folder.xml


def test_document_added_to_existing_folder_updates_its_last_update_time():
    pid = fed_patient()
    first, _ = register("empty_folder.xml", pid)
    folder = m.Folder.objects.get()
    m.Folder.objects.filter(pk=folder.pk).update(last_update_time="20000101000000",
                                                 xml=folder.xml.replace(folder.last_update_time, "20000101000000"))
    register("add_to_folder.xml", pid, Folder=folder.entry_uuid)
    folder.refresh_from_db()
    assert folder.last_update_time > "20000101000000"
    assert f"<rim:Value>{folder.last_update_time}</rim:Value>" in folder.xml and "20000101000000" not in folder.xml
    assert m.Association.objects.filter(source_uuid=folder.entry_uuid, target_kind="DE").count() == 1


def test_extra_slots_are_kept_in_the_stored_fragment_without_warning():
    sub, _ = load_submission("single_doc.xml", fed_patient())
    sub.document_entries[0].slots.append(Slot("urn:nist:extraDESlot", ["a", "b"]))
    sub.submission_set.slots.append(Slot("urn:nist:extraSSSlot", ["c"]))
    result = register_document_set(sub)
    assert result.warnings == []
    assert 'name="urn:nist:extraDESlot"' in m.DocumentEntry.objects.get().xml
    assert 'name="urn:nist:extraSSSlot"' in m.SubmissionSet.objects.get().xml


def test_client_assigned_uuid_is_kept():
    sub, _ = load_submission("single_doc.xml", fed_patient())
    chosen = new_id()
    de = sub.document_entries[0]
    for a in sub.associations:
        if a.target_object == de.id:
            a.target_object = chosen
    for c in de.classifications:
        c.classified_object = chosen
    for e in de.external_identifiers:
        e.registry_object = chosen
    de.id = chosen
    register_document_set(sub)
    assert m.DocumentEntry.objects.get().entry_uuid == chosen


# --- lifecycle -------------------------------------------------------------------------------------

def test_rplc_deprecates_the_original_and_approves_the_replacement():
    pid = fed_patient()
    original, _ = register("single_doc.xml", pid)
    old = original.entry_uuids["Document01"]
    replacement, _ = register("rplc.xml", pid, rplc_doc_uuid=old)
    new = replacement.entry_uuids["Document01"]
    assert status_of(old) == DEPRECATED and status_of(new) == APPROVED
    assert f'status="{DEPRECATED}"' in m.DocumentEntry.objects.get(entry_uuid=old).xml
    assert replacement.deprecated == [old]
    assert m.Association.objects.filter(association_type=AssociationType.RPLC.value, source_uuid=new,
                                        target_uuid=old).count() == 1


def test_rplc_of_a_deprecated_document_is_refused_and_nothing_is_stored():
    pid = fed_patient()
    old = register("single_doc.xml", pid)[0].entry_uuids["Document01"]
    register("rplc.xml", pid, rplc_doc_uuid=old)
    before = counts()
    with pytest.raises(XdsError) as exc:
        register("rplc.xml", pid, rplc_doc_uuid=old)
    assert codes_of(exc) == [ErrorCode.XDSRegistryDeprecatedDocumentError]
    assert exc.value.errors[0].location  # the association's id as submitted
    assert counts() == before


@pytest.mark.parametrize("fixture,placeholder", [("apnd.xml", "apnd_doc_uuid"), ("xfrm.xml", "xfrm_doc_uuid")])
def test_apnd_and_xfrm_to_a_deprecated_document_are_refused(fixture: str, placeholder: str):
    pid = fed_patient()
    old = register("single_doc.xml", pid)[0].entry_uuids["Document01"]
    register("rplc.xml", pid, rplc_doc_uuid=old)
    with pytest.raises(XdsError) as exc:
        register(fixture, pid, **{placeholder: old})
    assert codes_of(exc) == [ErrorCode.XDSRegistryDeprecatedDocumentError]


@pytest.mark.parametrize("fixture,placeholder,atype", [
    ("apnd.xml", "apnd_doc_uuid", AssociationType.APND),
    ("xfrm.xml", "xfrm_doc_uuid", AssociationType.XFRM),
])
def test_apnd_and_xfrm_keep_the_original_approved(fixture: str, placeholder: str, atype: AssociationType):
    pid = fed_patient()
    old = register("single_doc.xml", pid)[0].entry_uuids["Document01"]
    new = register(fixture, pid, **{placeholder: old})[0].entry_uuids["Document01"]
    assert status_of(old) == APPROVED and status_of(new) == APPROVED
    assert m.Association.objects.filter(association_type=atype.value, target_uuid=old).count() == 1


def test_xfrm_rplc_deprecates_the_original():
    pid = fed_patient()
    old = register("single_doc.xml", pid)[0].entry_uuids["Document01"]
    new = register("xfrm_rplc.xml", pid, rplc_doc_uuid=old)[0].entry_uuids["Document01"]
    assert status_of(old) == DEPRECATED and status_of(new) == APPROVED


def test_replacement_deprecates_apnd_and_xfrm_descendants_recursively():
    pid = fed_patient()
    original = register("single_doc.xml", pid)[0].entry_uuids["Document01"]
    addendum = register("apnd.xml", pid, apnd_doc_uuid=original)[0].entry_uuids["Document01"]
    transform = register("xfrm.xml", pid, xfrm_doc_uuid=original)[0].entry_uuids["Document01"]
    addendum_of_transform = register("apnd.xml", pid, apnd_doc_uuid=transform)[0].entry_uuids["Document01"]
    result = register("rplc.xml", pid, rplc_doc_uuid=original)[0]
    for uuid_ in (original, addendum, transform, addendum_of_transform):
        assert status_of(uuid_) == DEPRECATED, uuid_
    assert status_of(result.entry_uuids["Document01"]) == APPROVED
    assert sorted(result.deprecated) == sorted([original, addendum, transform, addendum_of_transform])


def test_signs_association_to_an_existing_document_is_registered():
    pid = fed_patient()
    target = register("single_doc.xml", pid)[0].entry_uuids["Document01"]
    sub, _ = load_submission("apnd.xml", pid, apnd_doc_uuid=target)
    for a in sub.associations:
        if a.association_type == AssociationType.APND.value:
            a.association_type = AssociationType.signs.value
    signature = register_document_set(sub).entry_uuids["Document01"]
    assert status_of(target) == APPROVED
    assert m.Association.objects.filter(association_type=AssociationType.signs.value, source_uuid=signature,
                                        target_uuid=target).count() == 1


def test_replacement_joins_the_folders_of_the_replaced_document():
    pid = fed_patient()
    first = register("folder_with_doc.xml", pid)[0]
    folder = m.Folder.objects.get()
    m.Folder.objects.filter(pk=folder.pk).update(last_update_time="20000101000000",
                                                 xml=folder.xml.replace(folder.last_update_time, "20000101000000"))
    old = first.entry_uuids["Document01"]
    new = register("rplc.xml", pid, rplc_doc_uuid=old)[0].entry_uuids["Document01"]
    members = set(m.Association.objects.filter(source_uuid=folder.entry_uuid, association_type=AssociationType
                                               .HasMember.value).values_list("target_uuid", flat=True))
    assert members == {old, new}
    folder.refresh_from_db()
    assert folder.last_update_time > "20000101000000" and "20000101000000" not in folder.xml


def test_rplc_target_missing_is_a_metadata_error():
    pid = fed_patient()
    with pytest.raises(XdsError) as exc:
        register("rplc.xml", pid, rplc_doc_uuid=new_id())
    assert codes_of(exc) == [ErrorCode.XDSRegistryMetadataError]
    assert "neither in the submission nor in the registry" in exc.value.errors[0].code_context


def test_rplc_with_another_patient_is_refused_and_the_original_stays_approved():
    pid, other = fed_patient(), fed_patient()
    old = register("single_doc.xml", pid)[0].entry_uuids["Document01"]
    with pytest.raises(XdsError) as exc:
        register("rplc.xml", other, rplc_doc_uuid=old)
    assert codes_of(exc) == [ErrorCode.XDSPatientIdDoesNotMatch]
    assert status_of(old) == APPROVED


# --- patients --------------------------------------------------------------------------------------

def test_unknown_patient_is_refused():
    pid = new_patient_id()
    with pytest.raises(XdsError) as exc:
        register("single_doc.xml", pid)
    assert codes_of(exc) == [ErrorCode.XDSUnknownPatientId]
    assert pid in exc.value.errors[0].code_context
    assert counts() == (0, 0, 0, 0, 0)


def test_merged_away_patient_is_unknown_and_its_documents_follow_the_survivor():
    survivor, merged = fed_patient(), fed_patient()
    doc = register("single_doc.xml", merged)[0].entry_uuids["Document01"]
    merge_patients(survivor, merged)
    de = m.DocumentEntry.objects.get(entry_uuid=doc)
    assert de.patient_id == survivor and merged.replace("&", "&amp;") not in de.xml
    assert survivor.replace("&", "&amp;") in de.xml
    assert m.SubmissionSet.objects.get().patient_id == survivor
    with pytest.raises(XdsError) as exc:
        register("single_doc.xml", merged)
    assert codes_of(exc) == [ErrorCode.XDSUnknownPatientId]


def test_document_of_another_patient_than_the_submission_set():
    pid, other = fed_patient(), fed_patient()
    sub, _ = load_submission("single_doc.xml", pid)
    sub.document_entries[0].patient_id = other
    with pytest.raises(XdsError) as exc:
        register_document_set(sub)
    assert codes_of(exc) == [ErrorCode.XDSPatientIdDoesNotMatch]
    assert exc.value.errors[0].location == "Document01"



def test_patient_mismatch_is_reported_even_when_both_patients_are_unknown():
    # NIST 11986: neither id was fed; the mismatch must still be named (one patient per submission,
    # ITI TF-3 4.1.4.1).
    sub, _ = load_submission("single_doc.xml", new_patient_id())
    sub.document_entries[0].patient_id = new_patient_id()
    with pytest.raises(XdsError) as exc:
        register_document_set(sub)
    assert ErrorCode.XDSPatientIdDoesNotMatch in codes_of(exc)
    assert counts() == (0, 0, 0, 0, 0)


def test_document_of_another_patient_added_to_an_existing_folder_is_refused():
    # NIST 12002: a Folder and its DocumentEntries share one patientId (ITI TF-3 4.2.2.1.3).
    owner = fed_patient()
    register("empty_folder.xml", owner)
    folder = m.Folder.objects.get()
    before = counts()
    with pytest.raises(XdsError) as exc:
        register("add_to_folder.xml", fed_patient(), Folder=folder.entry_uuid)
    assert codes_of(exc) == [ErrorCode.XDSPatientIdDoesNotMatch]
    assert counts() == before


def test_apnd_and_xfrm_of_one_target_in_one_submission_are_deprecated_when_it_is_replaced():
    # NIST 12022 (CP117): APND and XFRM of the same document in one submission are accepted; a later RPLC
    # of that document deprecates both (ITI TF-3 4.2.2.2.3).
    pid = fed_patient()
    target = register("single_doc.xml", pid)[0].entry_uuids["Document01"]
    sub, _ = load_submission("two_doc.xml", pid)
    first, second = (de.id for de in sub.document_entries)
    sub.associations += [Association.build(AssociationType.APND, first, target),
                         Association.build(AssociationType.XFRM, second, target)]
    added = register_document_set(sub).entry_uuids
    assert (status_of(added[first]), status_of(added[second])) == (APPROVED, APPROVED)
    register("rplc.xml", pid, rplc_doc_uuid=target)
    assert [status_of(u) for u in (target, added[first], added[second])] == [DEPRECATED] * 3


# --- uniqueIds -------------------------------------------------------------------------------------

def test_identical_re_registration_of_a_document_uniqueid_is_accepted():
    pid = fed_patient()
    _, uids = register("single_doc.xml", pid)
    register("single_doc.xml", pid, keep_unique_ids={"Document01": uids["Document01"]})
    assert m.DocumentEntry.objects.filter(unique_id=uids["Document01"]).count() == 2


@pytest.mark.parametrize("slot,value,code", [
    ("hash", "0" * 40, ErrorCode.XDSNonIdenticalHash),
    ("size", "5", ErrorCode.XDSNonIdenticalSize),
])
def test_same_document_uniqueid_with_other_content_is_refused(slot: str, value: str, code: ErrorCode):
    pid = fed_patient()
    _, uids = register("single_doc.xml", pid)
    sub, _ = load_submission("single_doc.xml", pid, keep_unique_ids={"Document01": uids["Document01"]})
    sub.document_entries[0].set_slot(slot, value)
    before = counts()
    with pytest.raises(XdsError) as exc:
        register_document_set(sub)
    assert codes_of(exc) == [code]
    assert exc.value.errors[0].location == "Document01"
    assert counts() == before


def test_uppercase_hash_is_the_same_hash():
    pid = fed_patient()
    _, uids = register("single_doc.xml", pid)
    sub, _ = load_submission("single_doc.xml", pid, keep_unique_ids={"Document01": uids["Document01"]})
    sub.document_entries[0].hash = sub.document_entries[0].hash.upper()
    again = register_document_set(sub).entry_uuids["Document01"]
    entries = m.DocumentEntry.objects.filter(unique_id=uids["Document01"])
    assert entries.count() == 2 and entries.filter(entry_uuid=again).exists()
    assert set(entries.values_list("hash", flat=True)) == {sub.document_entries[0].hash.lower()}


@pytest.mark.parametrize("fixture,owner", [("single_doc.xml", "SubmissionSet01"), ("empty_folder.xml", "Folder")])
def test_submission_set_and_folder_uniqueids_must_be_new(fixture: str, owner: str):
    pid = fed_patient()
    _, uids = register(fixture, pid)
    owner_id = next(k for k in uids if k.startswith(owner))
    with pytest.raises(XdsError) as exc:
        register(fixture, pid, keep_unique_ids={owner_id: uids[owner_id]})
    assert codes_of(exc) == [ErrorCode.XDSDuplicateUniqueIdInRegistry]
    assert exc.value.errors[0].location == owner_id


def test_uniqueid_twice_in_one_message():
    sub, _ = load_submission("two_doc.xml", fed_patient())
    sub.document_entries[1].unique_id = sub.document_entries[0].unique_id
    with pytest.raises(XdsError) as exc:
        register_document_set(sub)
    assert codes_of(exc) == [ErrorCode.XDSRegistryDuplicateUniqueIdInMessage]


def test_reused_entry_uuid_is_refused_and_the_original_kept():
    pid = fed_patient()
    doc = register("single_doc.xml", pid)[0].entry_uuids["Document01"]
    sub, _ = load_submission("single_doc.xml", pid)
    de = sub.document_entries[0]
    for a in sub.associations:
        if a.target_object == de.id:
            a.target_object = doc
    de.id = doc
    for c in de.classifications:
        c.classified_object = doc
    for e in de.external_identifiers:
        e.registry_object = doc
    with pytest.raises(XdsError) as exc:
        register_document_set(sub)
    assert codes_of(exc) == [ErrorCode.XDSRegistryMetadataError]
    assert m.DocumentEntry.objects.count() == 1


# --- atomicity ------------------------------------------------------------------------------------

def test_a_submission_with_one_bad_document_stores_nothing():
    sub, _ = load_submission("two_doc.xml", fed_patient())
    sub.document_entries[1].set_slot("creationTime", None)
    with pytest.raises(XdsError) as exc:
        register_document_set(sub)
    assert codes_of(exc) == [ErrorCode.XDSRegistryMetadataError]
    assert exc.value.errors[0].location == sub.document_entries[1].id
    assert counts() == (0, 0, 0, 0, 0)


def test_a_failure_found_in_the_database_stage_rolls_back_everything():
    pid = fed_patient()
    old = register("single_doc.xml", pid)[0].entry_uuids["Document01"]
    register("rplc.xml", pid, rplc_doc_uuid=old)
    before = counts()
    statuses = dict(m.DocumentEntry.objects.values_list("entry_uuid", "status"))
    # A good second document plus an RPLC to the deprecated one: nothing of it may remain.
    sub, _ = load_submission("rplc.xml", pid, rplc_doc_uuid=old)
    add_document_copy(sub)
    with pytest.raises(XdsError) as exc:
        register_document_set(sub)
    assert codes_of(exc) == [ErrorCode.XDSRegistryDeprecatedDocumentError]
    assert counts() == before
    assert dict(m.DocumentEntry.objects.values_list("entry_uuid", "status")) == statuses


def test_all_findings_are_reported_together():
    sub, _ = load_submission("two_doc.xml", new_patient_id())
    sub.document_entries[0].set_slot("languageCode", None)
    sub.document_entries[1].set_slot("hash", "xyz")
    with pytest.raises(XdsError) as exc:
        register_document_set(sub)
    # Message-level findings first (all of them), database-level ones are not reached.
    locations = {(e.error_code, e.location) for e in exc.value.errors}
    assert (ErrorCode.XDSRegistryMetadataError, sub.document_entries[0].id) in locations
    assert (ErrorCode.XDSRegistryMetadataError, sub.document_entries[1].id) in locations


def test_queries_per_submission_stay_constant(django_assert_max_num_queries):
    pid = fed_patient()
    sub, _ = load_submission("two_doc.xml", pid)
    with django_assert_max_num_queries(12):
        register_document_set(sub)
    assert m.RegistryCode.objects.values("object_kind").annotate(n=Count("id")).count() == 2


def test_external_identifier_ids_are_urn_uuids():
    register("single_doc.xml", fed_patient())
    xml = m.DocumentEntry.objects.get().xml
    assert 'id="id_' not in xml
    assert IdentificationScheme.DocumentEntry_uniqueId.value in xml


def test_a_large_submission_is_inserted_in_batches():
    # 1500 entries x 23 columns exceed one statement's bind-parameter limit on SQLite.
    sub, _ = load_submission("single_doc.xml", fed_patient())
    for _ in range(1499):
        add_document_copy(sub)
    result = register_document_set(sub)
    assert result.document_count == 1500 == m.DocumentEntry.objects.count()
    assert m.Association.objects.count() == 1500


# --- batches (bulk loading): the same path, shared round trips, all or nothing ------------------------

def _code_rows_match_their_objects() -> None:
    # Pre-allocated primary keys: every code row points at the object it was derived from.
    for de in m.DocumentEntry.objects.all():
        codes = set(m.RegistryCode.objects.filter(object_kind="DE", object_id=de.pk).values_list("attribute", "value"))
        assert ("classCode", de.class_code) in codes
    for ss in m.SubmissionSet.objects.all():
        assert m.RegistryCode.objects.filter(object_kind="SS", object_id=ss.pk, attribute="authorPerson").exists()


def test_batch_registers_every_submission_like_single_registrations():
    pid = fed_patient()
    single, _ = register("single_doc.xml", pid)
    subs = [load_submission(name, pid)[0] for name in ("single_doc.xml", "two_doc.xml", "folder_with_doc.xml")]
    results = register_document_sets(subs)
    assert [r.document_count for r in results] == [1, 2, 1]
    assert len({r.submission_set_uuid for r in results} | {single.submission_set_uuid}) == 4
    assert counts()[:3] == (4, 5, 1)
    fd = m.Folder.objects.get()
    assert m.Association.objects.filter(source_uuid=fd.entry_uuid, target_kind="DE").count() == 1
    # Same stored shape as a single registration.
    first = m.DocumentEntry.objects.get(entry_uuid=single.entry_uuids["Document01"])
    again = m.DocumentEntry.objects.get(entry_uuid=results[0].entry_uuids["Document01"])
    assert again.xml.replace(again.entry_uuid, "X").count("urn:uuid:") == first.xml.replace(
        first.entry_uuid, "X").count("urn:uuid:")
    assert (again.class_code, again.creation_time, again.hash) == (first.class_code, first.creation_time, first.hash)
    _code_rows_match_their_objects()


def test_batch_with_one_bad_submission_writes_nothing_and_reports_every_finding():
    pid = fed_patient()
    good, _ = load_submission("single_doc.xml", pid)
    unknown, _ = load_submission("single_doc.xml", new_patient_id())
    also_unknown, _ = load_submission("two_doc.xml", new_patient_id())
    before = counts()
    with pytest.raises(XdsError) as exc:
        register_document_sets([good, unknown, also_unknown])
    assert codes_of(exc) == [ErrorCode.XDSUnknownPatientId] * 2
    assert counts() == before


def test_batch_members_sharing_a_unique_id_see_each_other():
    pid = fed_patient()
    first, uids = load_submission("single_doc.xml", pid)
    identical, _ = load_submission("single_doc.xml", pid, keep_unique_ids={"Document01": uids["Document01"]})
    register_document_sets([first, identical])  # identical re-registration: accepted
    assert m.DocumentEntry.objects.filter(unique_id=uids["Document01"]).count() == 2

    one, uids = load_submission("single_doc.xml", pid)
    other, _ = load_submission("single_doc.xml", pid, keep_unique_ids={"Document01": uids["Document01"]})
    other.document_entries[0].set_slot("hash", "0" * 40)
    before = counts()
    with pytest.raises(XdsError) as exc:
        register_document_sets([one, other])
    assert codes_of(exc) == [ErrorCode.XDSNonIdenticalHash]
    assert counts() == before

    package, uids = load_submission("single_doc.xml", pid)
    same_package, _ = load_submission("single_doc.xml", pid,
                                      keep_unique_ids={"SubmissionSet01": uids["SubmissionSet01"]})
    with pytest.raises(XdsError) as exc:
        register_document_sets([package, same_package])
    assert codes_of(exc) == [ErrorCode.XDSDuplicateUniqueIdInRegistry]
    assert counts() == before


def test_batch_member_may_replace_a_document_of_an_earlier_member():
    pid = fed_patient()
    original, _ = load_submission("single_doc.xml", pid)
    de = original.document_entries[0]
    target = de.id = new_id()  # client-assigned, so the replacement can name it
    for c in de.classifications:
        c.classified_object = target
    for e in de.external_identifiers:
        e.registry_object = target
    original.associations[0].target_object = target
    replacement, _ = load_submission("rplc.xml", pid, rplc_doc_uuid=target)
    results = register_document_sets([original, replacement])
    assert results[1].deprecated == [target] and status_of(target) == DEPRECATED


def test_large_batch_is_written_in_bulk():
    pid = fed_patient()
    subs = []
    for _ in range(COPY_THRESHOLD // 5 + 1):
        sub, _ = load_submission("single_doc.xml", pid)
        for _ in range(4):
            add_document_copy(sub)
        subs.append(sub)
    results = register_document_sets(subs)
    assert sum(r.document_count for r in results) == 5 * len(subs) > COPY_THRESHOLD
    assert counts()[1] == 5 * len(subs) and m.Association.objects.count() == 5 * len(subs)
    assert len(set(m.DocumentEntry.objects.values_list("id", flat=True))) == 5 * len(subs)
    _code_rows_match_their_objects()
    # Registrations after a bulk batch get fresh keys.
    single, _ = register("single_doc.xml", pid)
    de = m.DocumentEntry.objects.get(entry_uuid=single.entry_uuids["Document01"])
    assert m.RegistryCode.objects.filter(object_kind="DE", object_id=de.pk, attribute="classCode").count() == 1


def test_batch_locking_too_many_unique_ids_is_refused_before_anything_is_written(monkeypatch):
    from xds_registry import register_document_set as module

    monkeypatch.setattr(module, "MAX_BATCH_UNIQUE_IDS", 4)  # 2 uniqueIds per single_doc submission
    pid = fed_patient()
    subs = [load_submission("single_doc.xml", pid)[0] for _ in range(3)]
    before = counts()
    with pytest.raises(ValueError, match="too large"):
        register_document_sets(subs)
    assert counts() == before
    register_document_sets(subs[:2])
    assert counts()[1] == before[1] + 2
