"""Message-level ITI-42 validation: every rule with its error case (no database needed)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.xds_registry.registry_helpers import load_submission, new_patient_id
from xds_core.errors import ErrorCode
from xds_core.metadata.objects import Association, Classification, InternationalString, Slot, Submission
from xds_core.vocabulary import (
    AssociationType,
    ClassificationNode,
    ClassificationScheme,
    IdentificationScheme,
)
from xds_registry.validation.submission import attach_top_level_parts, validate_submission

DE = ClassificationScheme
META = ErrorCode.XDSRegistryMetadataError


def validate(sub: Submission) -> list[tuple[str, str, str]]:
    errors = attach_top_level_parts(sub) + validate_submission(sub, None)
    return [(e.error_code, e.location, e.code_context) for e in errors]


def single() -> Submission:
    return load_submission("single_doc.xml", new_patient_id())[0]


def drop_classification(scheme: str) -> Callable[[Submission], None]:
    def mutate(sub: Submission) -> None:
        de = sub.document_entries[0]
        de.classifications = [c for c in de.classifications if c.classification_scheme != scheme]
    return mutate


def drop_slot(name: str) -> Callable[[Submission], None]:
    return lambda sub: sub.document_entries[0].set_slot(name, None)


def set_slot(name: str, values: list[str]) -> Callable[[Submission], None]:
    return lambda sub: sub.document_entries[0].set_slot(name, values)


def drop_external_id(scheme: str, target: str = "de") -> Callable[[Submission], None]:
    def mutate(sub: Submission) -> None:
        obj = sub.document_entries[0] if target == "de" else sub.submission_set
        obj.external_identifiers = [e for e in obj.external_identifiers if e.identification_scheme != scheme]
    return mutate


def test_nist_sample_is_valid():
    assert validate(single()) == []


@pytest.mark.parametrize("mutate,expected", [
    # Required DocumentEntry classifications (NIST 11998a; ITI TF-3 Table 4.2.3.2-1).
    (drop_classification(DE.DocumentEntry_classCode), "missing classCode"),
    (drop_classification(DE.DocumentEntry_typeCode), "missing typeCode"),
    (drop_classification(DE.DocumentEntry_formatCode), "missing formatCode"),
    (drop_classification(DE.DocumentEntry_healthcareFacilityTypeCode), "missing healthcareFacilityTypeCode"),
    (drop_classification(DE.DocumentEntry_practiceSettingCode), "missing practiceSettingCode"),
    (drop_classification(DE.DocumentEntry_confidentialityCode), "missing confidentialityCode"),
    # Required slots.
    (drop_slot("creationTime"), "required slot creationTime"),
    (drop_slot("languageCode"), "required slot languageCode"),
    (drop_slot("sourcePatientId"), "required slot sourcePatientId"),
    (drop_slot("hash"), "required slot hash"),
    (drop_slot("size"), "required slot size"),
    (drop_slot("repositoryUniqueId"), "required slot repositoryUniqueId"),
    # Single-valued slots.
    (set_slot("creationTime", ["2004", "2005"]), "creationTime must have a single value"),
    (set_slot("languageCode", ["en-us", "de-de"]), "languageCode must have a single value"),
    # Formats.
    (set_slot("creationTime", ["2004-12-24"]), "is not a DTM"),
    (set_slot("serviceStartTime", ["20041223080000+0100"]), "is not a DTM"),
    (set_slot("hash", ["xyz"]), "not 40 hexadecimal digits"),
    (set_slot("size", ["-4"]), "not a non-negative integer"),
    (set_slot("repositoryUniqueId", ["repo.one"]), "repositoryUniqueId 'repo.one' is not an OID"),
    # ISO OIDs start with arc 0, 1 or 2 (ISO/IEC 8824; only sourceId tolerates another root arc).
    (set_slot("repositoryUniqueId", ["129.6.58.92.1.1"]), "repositoryUniqueId '129.6.58.92.1.1' is not an OID"),
    (set_slot("repositoryUniqueId", ["1.2.3\n"]), "is not an OID"),
    (set_slot("hash", ["da39a3ee5e6b4b0d3255bfef95601890afd80709\n"]), "not 40 hexadecimal digits"),
    (set_slot("size", ["12\n"]), "not a non-negative integer"),
    (set_slot("sourcePatientId", ["abc"]), "CX.1 (id) and CX.4 (assigning authority) are required"),
    (set_slot("sourcePatientId", ["^^^&1.2.3&ISO"]), "CX.1 (id) and CX.4 (assigning authority) are required"),
    (set_slot("languageCode", ["en us"]), "not an RFC 5646"),
    (set_slot("legalAuthenticator", ["^^^"]), "XCN needs an id"),
    (set_slot("sourcePatientInfo", ["Doe^John"]), "not 'PID-<n>|<value>'"),
    (set_slot("urn:ihe:iti:xds:2013:referenceIdList", ["A1^^^&1.2.3&ISO"]), "CXi.5"),
    (set_slot("documentAvailability", ["Online"]), "documentAvailability 'Online'"),
    (set_slot("serviceStopTime", ["20041222"]), "serviceStopTime 20041222 is before serviceStartTime"),
    (lambda s: setattr(s.document_entries[0], "unique_id", "Document01"), "uniqueId root 'Document01' is not an OID"),
    (lambda s: setattr(s.document_entries[0], "unique_id", "1.2.3." + "4" * 130), "longer than 128"),
    (lambda s: setattr(s.document_entries[0], "unique_id", "1.2.3^" + "x" * 17), "extension is 17 characters"),
    (lambda s: setattr(s.document_entries[0], "patient_id", "123^^^&1.2.3"), "CX.4 must be &<OID>&ISO"),
    (lambda s: setattr(s.document_entries[0], "mime_type", ""), "mimeType is required"),
    (lambda s: setattr(s.document_entries[0], "mime_type", "text"), "is not a MIME type"),
    (lambda s: setattr(s.document_entries[0], "object_type", "urn:uuid:00000000-0000-0000-0000-000000000000"),
     "is not a DocumentEntry type"),
    (drop_external_id(IdentificationScheme.DocumentEntry_uniqueId),
     "missing ExternalIdentifier DocumentEntry.uniqueId"),
    (drop_external_id(IdentificationScheme.DocumentEntry_patientId),
     "missing ExternalIdentifier DocumentEntry.patientId"),
])
def test_document_entry_rule(mutate: Callable[[Submission], None], expected: str):
    sub = single()
    mutate(sub)
    findings = validate(sub)
    assert findings, "expected a finding"
    assert any(code == META and loc == "Document01" and expected in ctx for code, loc, ctx in findings), findings


def test_coded_value_needs_scheme_and_display_name():
    sub = single()
    code = sub.document_entries[0].classifications_of(DE.DocumentEntry_classCode)[0]
    code.set_slot("codingScheme", None)
    code.name = InternationalString()
    contexts = [ctx for _, _, ctx in validate(sub)]
    assert any("codingScheme slot must have exactly one value" in c for c in contexts)
    assert any("display name (rim:Name) is required" in c for c in contexts)


def test_two_class_codes_are_refused():
    sub = single()
    de = sub.document_entries[0]
    de.classifications.append(de.classifications_of(DE.DocumentEntry_classCode)[0])
    assert any("2 classCode classifications" in ctx for _, _, ctx in validate(sub))


def test_author_rules():
    sub = single()
    author = sub.document_entries[0].classifications_of(DE.DocumentEntry_author)[0]
    author.set_slot("authorPerson", ["^A^B", "^C^D"])
    author.node_representation = "x"
    author.set_slot("authorTelecommunication", ["555-1234"])
    contexts = [ctx for _, _, ctx in validate(sub)]
    assert any("authorPerson must have a single value" in c for c in contexts)
    assert any("empty nodeRepresentation" in c for c in contexts)
    assert any("XTN.3" in c for c in contexts)


@pytest.mark.parametrize("mutate,expected", [
    (lambda s: s.submission_set.set_slot("submissionTime", None), "required slot submissionTime"),
    (lambda s: s.submission_set.set_slot("submissionTime", ["yesterday"]), "is not a DTM"),
    (lambda s: setattr(s.submission_set, "classifications", [
        c for c in s.submission_set.classifications
        if c.classification_scheme != DE.SubmissionSet_contentTypeCode]), "missing contentTypeCode"),
    (drop_external_id(IdentificationScheme.SubmissionSet_sourceId, "ss"), "SubmissionSet.sourceId"),
    (drop_external_id(IdentificationScheme.SubmissionSet_uniqueId, "ss"), "SubmissionSet.uniqueId"),
    (drop_external_id(IdentificationScheme.SubmissionSet_patientId, "ss"), "SubmissionSet.patientId"),
    (lambda s: setattr(s.submission_set, "source_id", "source"), "sourceId 'source' is not an OID"),
    (lambda s: setattr(s.submission_set, "source_id", "1.02.3"), "sourceId '1.02.3' is not an OID"),
    (lambda s: setattr(s.submission_set, "unique_id", "3.1.2"), "uniqueId '3.1.2' is not an OID"),
])
def test_submission_set_rule(mutate: Callable[[Submission], None], expected: str):
    sub = single()
    mutate(sub)
    assert any(code == META and loc == "SubmissionSet01" and expected in ctx for code, loc, ctx in validate(sub))


def test_the_nist_testkit_source_id_is_accepted_though_its_root_arc_is_129():
    sub = single()
    sub.submission_set.source_id = "129.6.58.92.1.1"
    assert validate(sub) == []


def test_folder_needs_code_list():
    sub = load_submission("empty_folder.xml", new_patient_id())[0]
    assert validate(sub) == []
    folder = sub.folders[0]
    folder.classifications = [c for c in folder.classifications if c.classification_scheme != DE.Folder_codeList]
    assert any("missing codeList" in ctx and loc == folder.id for _, loc, ctx in validate(sub))


def test_folder_of_another_patient():
    sub = load_submission("folder_with_doc.xml", new_patient_id())[0]
    sub.folders[0].patient_id = new_patient_id()
    assert [(c, loc) for c, loc, _ in validate(sub)] == [(ErrorCode.XDSPatientIdDoesNotMatch, sub.folders[0].id)]


def test_limited_metadata_marker_is_refused():
    sub = single()
    de = sub.document_entries[0]
    de.classifications.append(Classification.marker(ClassificationNode.LIMITED_DOCUMENT_ENTRY, de.id))
    assert any("limited-metadata" in ctx for _, _, ctx in validate(sub))


def test_missing_submission_set():
    sub = single()
    sub.submission_set = None
    assert any("no SubmissionSet" in ctx for _, _, ctx in validate(sub))


def test_document_not_member_of_the_submission_set():
    sub = single()
    sub.associations = []
    assert any("not linked to the SubmissionSet" in ctx for _, loc, ctx in validate(sub))


def test_has_member_without_submission_set_status():
    sub = single()
    sub.associations[0].set_slot("SubmissionSetStatus", None)
    assert any("SubmissionSetStatus" in ctx for _, _, ctx in validate(sub))


def test_has_member_original_must_target_a_submitted_document():
    sub = single()
    sub.associations[0].target_object = "urn:uuid:8d1d6b2b-3f5e-4c4e-9a39-0d5a4d3a6e01"
    assert any("Original but" in ctx for _, _, ctx in validate(sub))


def test_has_member_from_a_document_is_refused():
    sub = single()
    de = sub.document_entries[0]
    sub.associations.append(Association(id="bad", association_type=AssociationType.HasMember.value,
                                        source_object=de.id, target_object=sub.submission_set.id))
    assert any("only a SubmissionSet or Folder has members" in ctx for _, _, ctx in validate(sub))


def test_folder_membership_must_be_a_member_of_the_submission_set():
    sub = load_submission("folder_with_doc.xml", new_patient_id())[0]
    inner = next(a for a in sub.associations if a.source_object == sub.folders[0].id)
    sub.associations = [a for a in sub.associations if a.target_object != inner.id]
    assert any("4.2.2.1.3" in ctx for _, _, ctx in validate(sub))


def test_unknown_association_type():
    sub = single()
    sub.associations[0].association_type = "urn:example:Friends"
    assert any("not an XDS association type" in ctx for _, _, ctx in validate(sub))


def test_symbolic_reference_to_nothing():
    sub = single()
    sub.associations[0].target_object = "Document99"
    assert any("symbolic id that names no object" in ctx for _, _, ctx in validate(sub))


def test_relationship_source_must_be_a_submitted_document():
    sub = single()
    sub.associations.append(Association(
        id="r", association_type=AssociationType.RPLC.value,
        source_object="urn:uuid:8d1d6b2b-3f5e-4c4e-9a39-0d5a4d3a6e01",
        target_object="urn:uuid:8d1d6b2b-3f5e-4c4e-9a39-0d5a4d3a6e02"))
    assert any("must be a DocumentEntry of this submission" in ctx for _, _, ctx in validate(sub))


def test_relationship_target_must_not_be_in_the_submission():
    sub = load_submission("two_doc.xml", new_patient_id())[0]
    a, b = sub.document_entries
    sub.associations.append(Association(id="r", association_type=AssociationType.APND.value,
                                        source_object=a.id, target_object=b.id))
    assert any("already in the registry" in ctx for _, _, ctx in validate(sub))


def test_documentation_classification_only_on_relationships():
    # NIST 12370/not_configured: a documentation Classification on an SS-DE HasMember.
    sub = single()
    assoc = sub.associations[0]
    assoc.classifications.append(Classification(
        id="doc", classification_scheme=DE.Association_documentation, classified_object=assoc.id,
        node_representation="Additional_Information", slots=[Slot("codingScheme", ["1.3.6.1.4.1.21367.2017.3"])],
        name=InternationalString.of("Additional Information")))
    assert any("association-documentation" in ctx for _, _, ctx in validate(sub))


def test_metadata_update_association_is_refused():
    sub = single()
    sub.associations[0].association_type = AssociationType.UpdateAvailabilityStatus.value
    assert any("Metadata Update" in ctx for _, _, ctx in validate(sub))


def test_duplicate_ids_in_the_message():
    sub = load_submission("two_doc.xml", new_patient_id())[0]
    sub.document_entries[1].id = sub.document_entries[0].id
    assert any("is used by 2 objects" in ctx for _, _, ctx in validate(sub))


def test_all_findings_are_collected():
    sub = single()
    drop_slot("creationTime")(sub)
    drop_slot("languageCode")(sub)
    drop_classification(DE.DocumentEntry_typeCode)(sub)
    sub.submission_set.set_slot("submissionTime", None)
    contexts = " | ".join(ctx for _, _, ctx in validate(sub))
    for expected in ("creationTime", "languageCode", "typeCode", "submissionTime"):
        assert expected in contexts


def test_top_level_classification_pointing_nowhere():
    sub = single()
    sub.classifications.append(Classification.marker(ClassificationNode.FOLDER, "Nothing"))
    assert any("not an object of this submission" in ctx for _, _, ctx in validate(sub))


def test_source_patient_id_may_use_a_local_namespace():
    sub = single()
    sub.document_entries[0].set_slot("sourcePatientId", ["123^^^LOCALHOSP"])
    assert validate(sub) == []


def test_on_demand_entry_needs_no_hash_size_or_creation_time():
    sub = single()
    de = sub.document_entries[0]
    de.object_type = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"
    for name in ("hash", "size", "creationTime"):
        de.set_slot(name, None)
    assert validate(sub) == []
