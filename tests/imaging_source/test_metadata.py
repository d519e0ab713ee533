"""RAD-68 metadata built from a study, compared with the NIST reference metadata (IMG-03)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from django.conf import settings

from imaging_source.metadata import (
    MetadataConfig,
    build_submission,
    dicom_to_dtm,
    event_codes,
    hl7_name,
    reference_ids,
)
from imaging_source.patient_mapping import source_patient_id
from imaging_source.study import SeriesRef, StudyRef
from tests.conftest import CORPUS_DIR
from xds_core.affinity_domain import load_affinity_domain
from xds_core.ebxml.parse import parse_provide_and_register_request
from xds_core.ebxml.schema import validate as schema_validate
from xds_core.ebxml.serialize import submit_objects_request
from xds_core.metadata.objects import DocumentEntry
from xds_core.safe_xml import parse_xml
from xds_core.vocabulary import AssociationType, ClassificationNode, ClassificationScheme
from xds_registry.validation.submission import validate_submission

from .conftest import AFFINITY_PATIENT, metadata_config

REFERENCE = CORPUS_DIR / "nist" / "ids_4802" / \
    "ValidateMetadata" / "metadata.xml"
KOS_UID = "2.25.52342449726056264552113473327672641971"


@pytest.fixture(scope="module")
def reference_entry() -> DocumentEntry:
    pnr = parse_provide_and_register_request(parse_xml(REFERENCE.read_bytes()))
    return pnr.submission.document_entries[0]


@pytest.fixture
def built(ids_study):
    return build_submission(
        ids_study, kos_sop_instance_uid=KOS_UID, patient_id=AFFINITY_PATIENT,
        source_patient_id=source_patient_id(ids_study.patient_id, None, "1.3.6.1.4.1.21367.1800.13.20.1000"),
        config=metadata_config(), now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))


def _code(c) -> tuple[str, str]:
    return (c.code, c.scheme)


def test_document_entry_matches_the_reference_on_the_compared_fields(built, reference_entry) -> None:
    entry = built.document_entry
    # sameKOSMetadata compares patientId, mimeType, formatCode and uniqueId (= the KOS SOP Instance UID).
    assert entry.patient_id == reference_entry.patient_id.strip()
    assert entry.mime_type == reference_entry.mime_type == "application/dicom"
    assert _code(entry.format_code) == (reference_entry.format_code.code,
                                        reference_entry.format_code.scheme.strip())
    assert entry.unique_id == KOS_UID
    # Beyond the comparison: the affinity-domain defaults and the patient identity are the reference's.
    for scheme in (ClassificationScheme.DocumentEntry_classCode, ClassificationScheme.DocumentEntry_confidentialityCode,
                   ClassificationScheme.DocumentEntry_healthcareFacilityTypeCode):
        ours, theirs = entry.code(scheme), reference_entry.code(scheme)
        assert (ours.code, ours.scheme) == (theirs.code, theirs.scheme.strip()), scheme
    assert entry.source_patient_id == reference_entry.source_patient_id.strip()
    assert entry.language_code == reference_entry.language_code
    theirs = {v.strip().split("|")[0]: v.strip().split("|", 1)[1] for v in reference_entry.source_patient_info}
    ours = {v.split("|")[0]: v.split("|", 1)[1] for v in entry.source_patient_info}
    assert ours["PID-3"] == theirs["PID-3"]
    assert ours["PID-5"] == theirs["PID-5"].rstrip("^")
    assert (ours["PID-7"], ours["PID-8"]) == (theirs["PID-7"], theirs["PID-8"])


def test_settings_defaults_carry_the_reference_affinity_codes(reference_entry) -> None:
    config = MetadataConfig.from_settings(settings)
    assert _code(config.class_code) == _code(reference_entry.class_code)
    assert _code(config.confidentiality_code) == _code(reference_entry.confidentiality_code[0])
    # The reference's practiceSettingCode (309964003, SRT) is not in the NIST affinity domain's value
    # set, so the default is the domain's radiology code instead.
    assert _code(config.practice_setting_code) == ("R-3027B", "SRT")
    hcft = reference_entry.healthcare_facility_type_code
    assert _code(config.facility_type_code) == (hcft.code, hcft.scheme.strip())


CODES_XML = CORPUS_DIR / "affinity-domain" / "codes.xml"


def _as_repository_forwards_it(built) -> None:
    """The repository adds hash, size and repositoryUniqueId before ITI-42 (ITI TF-3 4.2.3.2)."""
    built.document_entry.set_slot("hash", "0" * 40)
    built.document_entry.set_slot("size", "1234")
    built.document_entry.set_slot("repositoryUniqueId", "1.3.6.1.4.1.21367.13.70.201")


def test_submission_is_schema_valid_and_passes_the_registry_metadata_rules(built) -> None:
    assert schema_validate(submit_objects_request(built.submission)) == []
    _as_repository_forwards_it(built)
    assert validate_submission(built.submission, None) == []


def test_defaults_are_accepted_by_the_nist_affinity_domain(ids_study) -> None:
    domain = load_affinity_domain(CODES_XML)
    config = replace(MetadataConfig.from_settings(settings), affinity_domain=domain)
    built = build_submission(ids_study, kos_sop_instance_uid=KOS_UID, patient_id=AFFINITY_PATIENT,
                             source_patient_id="IDS-DEPT002-a^^^&1.3.6.1.4.1.21367.1800.13.20.1000&ISO",
                             config=config)
    _as_repository_forwards_it(built)
    assert validate_submission(built.submission, domain) == []
    # BRAIN is written in the scheme the domain knows (SNM3 T-A0100), not the SCT default it lacks.
    assert [(c.code, c.scheme) for c in built.document_entry.event_code_list] == [("MR", "DCM"), ("T-A0100", "SNM3")]


def test_xds_i_specific_attributes(built, ids_study) -> None:
    entry = built.document_entry
    assert [(c.code, c.scheme, c.display_name) for c in entry.event_code_list] == [
        ("MR", "DCM", "Magnetic Resonance"), ("12738006", "SCT", "Brain")]
    assert entry.reference_id_list == [
        "IDC002-a^^^^urn:ihe:iti:xds:2013:accession",
        f"{ids_study.study_instance_uid}^^^^urn:ihe:iti:xds:2016:studyInstanceUID"]
    assert entry.service_start_time == "20150202154122"
    assert entry.creation_time == "20260102030405"
    assert entry.id == built.entry_uuid and entry.id.startswith("urn:uuid:")
    ss = built.submission_set
    assert ss.has_node(ClassificationNode.SUBMISSION_SET)
    assert ss.patient_id == AFFINITY_PATIENT and ss.source_id == metadata_config().source_id
    assert ss.unique_id == built.submission_set_unique_id and ss.unique_id.startswith("2.25.")
    [member] = built.submission.associations
    assert (member.type, member.source_object, member.target_object, member.submission_set_status) == (
        AssociationType.HasMember, ss.id, entry.id, "Original")


def test_replacement_carries_rplc_to_the_previous_entry(ids_study) -> None:
    previous = "urn:uuid:0b5c3a7e-58d5-4b6f-9c5d-111111111111"
    built = build_submission(ids_study, kos_sop_instance_uid="1.2.3.4", patient_id=AFFINITY_PATIENT,
                             source_patient_id="X^^^&1.2.3&ISO", config=metadata_config(),
                             replaces_entry_uuid=previous)
    rplc = [a for a in built.submission.associations if a.type == AssociationType.RPLC]
    assert [(a.source_object, a.target_object) for a in rplc] == [(built.entry_uuid, previous)]


def test_accession_issuer_and_non_acquisition_modalities() -> None:
    study = StudyRef("1.2.3", "P1", accession_number="A-7", issuer_of_accession_number="1.2.840.99",
                     series=[SeriesRef("1.2.3.1", "CT", body_part_examined="CHEST"),
                             SeriesRef("1.2.3.2", "SR"), SeriesRef("1.2.3.3", "PT", body_part_examined="chest")])
    assert reference_ids(study)[0] == "A-7^^^&1.2.840.99&ISO^urn:ihe:iti:xds:2013:accession"
    assert [(c.code, c.scheme) for c in event_codes(study, "SCT")] == [
        ("CT", "DCM"), ("PT", "DCM"), ("51185008", "SCT")]
    assert [c.code for c in event_codes(study, "none")] == ["CT", "PT"]


def test_dicom_local_time_becomes_utc_dtm() -> None:
    from zoneinfo import ZoneInfo

    assert dicom_to_dtm("20150202", "154122.413", ZoneInfo("Europe/Berlin")) == "20150202144122"
    assert dicom_to_dtm("20150202", "", UTC) == "20150202"
    assert dicom_to_dtm("20150202", "1541", UTC) == "20150202154100"
    assert dicom_to_dtm("", "1541", UTC) is None


def test_dicom_person_name_becomes_hl7_xpn() -> None:
    assert hl7_name("Multi^Mr^a") == "Multi^Mr^a"
    assert hl7_name("Doe^John^Q^Dr^Jr") == "Doe^John^Q^Jr^Dr"
    assert hl7_name("Yamada^Tarou=山田^太郎") == "Yamada^Tarou"


@pytest.mark.parametrize("value", ["IMAGES", "IMAGES^1.2.3^Images", "IMAGES^^^Images", "^^1.2.3^x", "a^^b^c^d"])
def test_coded_setting_must_be_code_caret_caret_scheme(monkeypatch, value: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from config import env

    monkeypatch.setenv("X_TEST_CODE", value)
    with pytest.raises(ImproperlyConfigured, match="X_TEST_CODE"):
        env.custom("X_TEST_CODE", "", "d", env.xds_code)


def test_coded_setting_parses_into_code_scheme_display(monkeypatch) -> None:
    from config import env

    monkeypatch.setenv("X_TEST_CODE", "IMAGES^^1.3.6.1.4.1.19376.1.2.6.1^Images")
    assert env.custom("X_TEST_CODE", "", "d", env.xds_code) == ("IMAGES", "1.3.6.1.4.1.19376.1.2.6.1", "Images")
    monkeypatch.setenv("X_TEST_CODE", "R^^2.16.840.1.113883.5.25")
    assert MetadataConfig.code(env.custom("X_TEST_CODE", "", "d", env.xds_code)).display_name == "R"
