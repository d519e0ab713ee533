"""The metadata model: builders, typed accessors over the generic ebRIM content, package typing."""

from __future__ import annotations

from xds_core.metadata.objects import (
    Association,
    Classification,
    DocumentEntry,
    Folder,
    RegistryPackage,
    Submission,
    SubmissionSet,
    new_id,
)
from xds_core.metadata.values import Author, Code
from xds_core.vocabulary import (
    REFERENCE_ID_LIST_SLOT,
    AssociationType,
    ClassificationNode,
    ClassificationScheme,
    IdentificationScheme,
    ObjectType,
    SubmissionSetStatus,
)

PATIENT = "P1^^^&1.2.3&ISO"


def test_new_ids_are_distinct_urn_uuids() -> None:
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("urn:uuid:") and len(i) == 45 for i in ids)


def test_document_entry_build_sets_every_attribute_and_points_children_at_the_entry() -> None:
    entry = DocumentEntry.build(
        patient_id=PATIENT, unique_id="1.2.3.4", mime_type="application/dicom", id="Document01",
        class_code=Code("C", "1.1", "Class"), type_code=Code("T", "1.2", "Type"),
        format_code=Code("F", "1.3", "Format"), healthcare_facility_type_code=Code("H", "1.4", "Hcft"),
        practice_setting_code=Code("P", "1.5", "Practice"),
        confidentiality_codes=[Code("N", "1.6", "Normal"), Code("R", "1.6", "Restricted")],
        event_codes=[Code("CT", "DCM", "CT")], authors=[Author(person="^Doe")],
        creation_time="20240101", service_start_time="2023", service_stop_time="2024", language_code="en-US",
        source_patient_id="L^^^&1.9&ISO", source_patient_info=["PID-8|F"], legal_authenticator="^Boss",
        reference_ids=["S^^^^urn:ihe:iti:xds:2016:studyInstanceUID"], hash="0" * 40, size=7,
        repository_unique_id="1.7", title="T", comments="C")

    assert entry.id == "Document01" and entry.object_type == ObjectType.STABLE_DOCUMENT_ENTRY
    assert (entry.patient_id, entry.unique_id, entry.mime_type) == (PATIENT, "1.2.3.4", "application/dicom")
    assert (entry.class_code.code, entry.type_code.code, entry.format_code.code) == ("C", "T", "F")
    assert entry.healthcare_facility_type_code.display_name == "Hcft"
    assert entry.practice_setting_code.scheme == "1.5"
    assert [c.code for c in entry.confidentiality_code] == ["N", "R"]
    assert [c.code for c in entry.event_code_list] == ["CT"]
    assert entry.author == [Author(person="^Doe")]
    assert (entry.creation_time, entry.service_start_time, entry.service_stop_time) == ("20240101", "2023", "2024")
    assert (entry.language_code, entry.source_patient_id, entry.legal_authenticator) == (
        "en-US", "L^^^&1.9&ISO", "^Boss")
    assert entry.source_patient_info == ["PID-8|F"]
    assert entry.reference_id_list == ["S^^^^urn:ihe:iti:xds:2016:studyInstanceUID"]
    assert entry.slot_values(REFERENCE_ID_LIST_SLOT) == entry.reference_id_list
    assert (entry.hash, entry.size, entry.repository_unique_id) == ("0" * 40, "7", "1.7")
    assert (entry.title, entry.comments) == ("T", "C")
    assert all(c.classified_object == "Document01" and c.id.startswith("urn:uuid:") for c in entry.classifications)
    assert all(e.registry_object == "Document01" and e.id.startswith("urn:uuid:")
               for e in entry.external_identifiers)
    names = {e.identification_scheme: e.name.text for e in entry.external_identifiers}
    assert names == {IdentificationScheme.DocumentEntry_patientId: "XDSDocumentEntry.patientId",
                     IdentificationScheme.DocumentEntry_uniqueId: "XDSDocumentEntry.uniqueId"}
    author_classification = entry.classifications_of(ClassificationScheme.DocumentEntry_author)[0]
    assert author_classification.node_representation == ""


def test_document_entry_build_minimal_leaves_optional_parts_out() -> None:
    entry = DocumentEntry.build(patient_id=PATIENT, unique_id="1.2", mime_type="text/plain",
                                object_type=ObjectType.ON_DEMAND_DOCUMENT_ENTRY)

    assert entry.id.startswith("urn:uuid:") and entry.is_on_demand
    assert entry.slots == [] and entry.classifications == [] and len(entry.external_identifiers) == 2
    assert entry.title is None and entry.class_code is None and entry.author == []


def test_setters_replace_rather_than_duplicate() -> None:
    entry = DocumentEntry.build(patient_id=PATIENT, unique_id="1.2", mime_type="text/plain", hash="a" * 40)
    entry.patient_id = "P2^^^&1.2.3&ISO"
    entry.hash = "b" * 40
    entry.set_codes(ClassificationScheme.DocumentEntry_eventCodeList, [Code("A", "s"), Code("B", "s")])
    entry.set_codes(ClassificationScheme.DocumentEntry_eventCodeList, [Code("C", "s")])

    assert len(entry.external_identifiers) == 2 and entry.patient_id == "P2^^^&1.2.3&ISO"
    assert entry.slot_values("hash") == ["b" * 40]
    assert [c.code for c in entry.event_code_list] == ["C"]
    entry.set_slot("hash", None)
    assert entry.hash is None


def test_submission_set_build_carries_its_marker_and_attributes() -> None:
    package = SubmissionSet.build(patient_id=PATIENT, unique_id="1.2.9", source_id="1.2.8",
                                  submission_time="20240101120000", content_type_code=Code("I", "1.1", "Imaging"),
                                  authors=[Author(institutions=["H"])], intended_recipients=["Org^^^^^^^^^1.2"],
                                  title="Title", comments="Comments", id="SubmissionSet01")

    assert package.has_node(ClassificationNode.SUBMISSION_SET)
    assert package.object_type == ObjectType.REGISTRY_PACKAGE
    assert (package.patient_id, package.unique_id, package.source_id) == (PATIENT, "1.2.9", "1.2.8")
    assert package.submission_time == "20240101120000"
    assert package.content_type_code == Code("I", "1.1", "Imaging")
    assert package.author == [Author(institutions=["H"])]
    assert package.intended_recipient == ["Org^^^^^^^^^1.2"]
    assert (package.title, package.comments) == ("Title", "Comments")
    marker = next(c for c in package.classifications if c.classification_node)
    assert marker.classified_object == "SubmissionSet01" and marker.classification_scheme is None


def test_folder_build() -> None:
    folder = Folder.build(patient_id=PATIENT, unique_id="1.2.10", code_list=[Code("A", "s", "a"), Code("B", "s")],
                          title="F", last_update_time="20240101")

    assert folder.has_node(ClassificationNode.FOLDER)
    assert [c.code for c in folder.code_list] == ["A", "B"]
    assert (folder.patient_id, folder.unique_id, folder.title, folder.last_update_time) == (
        PATIENT, "1.2.10", "F", "20240101")
    folder.last_update_time = "20250101"
    assert folder.slot_values("lastUpdateTime") == ["20250101"]


def test_associations() -> None:
    member = Association.has_member("ss", "de")
    plain = Association.has_member("ss", "folder", submission_set_status=None)
    rplc = Association.build(AssociationType.RPLC, "new", "old", id="a1")

    assert member.type == AssociationType.HasMember
    assert member.submission_set_status == SubmissionSetStatus.ORIGINAL
    assert member.object_type == ObjectType.ASSOCIATION and member.id.startswith("urn:uuid:")
    assert plain.slots == [] and plain.submission_set_status is None
    assert Association.has_member("ss", "de", submission_set_status="Reference").submission_set_status == "Reference"
    assert (rplc.id, rplc.source_object, rplc.target_object, rplc.type) == ("a1", "new", "old", AssociationType.RPLC)
    assert Association(association_type="urn:example:odd").type is None


def test_package_as_kind_follows_the_marker() -> None:
    def package(node: str | None) -> RegistryPackage:
        p = RegistryPackage(id="p", slots=[], lid="p")
        if node:
            p.classifications.append(Classification.marker(node, "p"))
        return p

    submission_set = package(ClassificationNode.SUBMISSION_SET).as_kind()
    folder = package(ClassificationNode.FOLDER).as_kind()
    plain = package(None)

    assert type(submission_set) is SubmissionSet and submission_set.lid == "p"
    assert type(folder) is Folder
    assert plain.as_kind() is plain
    assert folder.as_kind() is folder


def test_submission_indexes_objects() -> None:
    entry = DocumentEntry.build(patient_id=PATIENT, unique_id="1.2", mime_type="text/plain", id="d")
    package = SubmissionSet.build(patient_id=PATIENT, unique_id="1.3", source_id="1.4", submission_time="2024",
                                  id="s")
    association = Association.has_member("s", "d", id="a")
    submission = Submission(submission_set=package, document_entries=[entry], associations=[association])

    assert [o.id for o in submission.all_objects()] == ["s", "d", "a"]
    assert submission.by_id()["d"] is entry
