"""The identifier rules of xds_core.identifiers, with edge and hostile inputs per rule."""

from __future__ import annotations

import pytest

from xds_core.identifiers import (
    MAX_DICOM_UID_LENGTH,
    MAX_OID_LENGTH,
    any_root_oid_problems,
    is_any_root_oid,
    is_dicom_uid,
    is_iso_oid,
    is_urn_uuid,
    iso_assigning_authority_problems,
    iso_oid_problems,
    xds_unique_id_problems,
)

# Inputs no rule here may accept: regex traps ($ before a newline, \d on Unicode digits) and separators.
HOSTILE = [
    "", ".", "1.", ".1", "1..2", "1.2.", "1.2\n", "1.2\r", "\n1.2", " 1.2", "1.2 ", "1.2\x00", "1. 2",
    "1.2.\u0661",  # ARABIC-INDIC DIGIT ONE: str.isdigit() and \d take it
    "1.\uff12",  # FULLWIDTH DIGIT TWO
    "1.2.3/../4", "1.2\\1.3", "1.2*", "1.2?", "1.-2", "1.+2", "1.2e3", "0x1.2", "1,2",
]


def _long(length: int, root: str = "1.2.") -> str:
    return root + "9" * (length - len(root))


# --- DICOM UID (PS3.5 §9.1) ------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "1.2", "0.0", "1.2.840.10008.5.1.4.1.1.88.59", "2.25.329800735698586629295641978511506172918",
    "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322", "9.9",  # PS3.5 does not let a receiver check the root
    "1.0.2", _long(MAX_DICOM_UID_LENGTH),
])
def test_dicom_uids_that_follow_ps3_5_are_accepted(value: str) -> None:
    assert is_dicom_uid(value)


@pytest.mark.parametrize("value", [
    *HOSTILE,
    "1",  # one component
    "01.2", "1.02", "1.00", "1.2.03",  # leading zeros
    _long(MAX_DICOM_UID_LENGTH + 1),  # 65 characters
    "1.2.840.10008.5.1.4.1.1.88.59\x00",  # UI padding is the caller's to strip
])
def test_dicom_uids_that_break_ps3_5_are_refused(value: str) -> None:
    assert not is_dicom_uid(value)


# --- ISO OID (X.660 / ISO/IEC 8824-1; ITI TF-3 Table 4.2.3.1.7-2 length) ---------------------------

@pytest.mark.parametrize("value", [
    "1", "0.0", "2.999", "1.3.6.1.4.1.21367.13.20.1000", "1." + "1." * 30 + "1",
    "1.42.20161103091815.2",  # second arc > 39 under 1: the NIST test data uses it
    _long(MAX_OID_LENGTH),
])
def test_iso_oids_are_accepted(value: str) -> None:
    assert is_iso_oid(value)
    assert iso_oid_problems(value) == []


@pytest.mark.parametrize(("value", "fragment"), [
    *((v, "not an OID") for v in HOSTILE if v),
    ("", "empty"),
    ("3.1", "not an OID"),
    ("129.6.58.92.1.1", "not an OID"),
    ("00.1", "not an OID"),
    ("1.02", "not an OID"),
    ("urn:oid:1.2", "not an OID"),
    ("1." + "2" * 63, "at most 64"),
])
def test_iso_oids_that_break_the_rule_are_refused_with_a_reason(value: str, fragment: str) -> None:
    assert not is_iso_oid(value)
    problems = iso_oid_problems(value, "repositoryUniqueId")
    assert problems and any(fragment in p for p in problems)
    assert all(p.startswith("repositoryUniqueId") for p in problems)


def test_any_root_oid_takes_the_nist_source_id_but_nothing_else_that_iso_refuses() -> None:
    assert is_any_root_oid("129.6.58.92.1.1") and any_root_oid_problems("129.6.58.92.1.1") == []
    assert not is_iso_oid("129.6.58.92.1.1")
    for value in [*HOSTILE, "01.2", _long(MAX_OID_LENGTH + 1)]:
        assert not is_any_root_oid(value), value
        assert any_root_oid_problems(value, "sourceId")[0].startswith(f"sourceId {value!r} is not an OID")


# --- XDS uniqueId (ITI TF-3 4.2.3.2.26 / 4.2.3.3.12 / 4.2.3.4.7) ------------------------------------

@pytest.mark.parametrize("value", ["1.2.3", "1.2.3^ext-1", "1.2.3^" + "x" * 16, _long(64) + "^" + "e" * 16])
def test_document_unique_ids_may_carry_an_extension_of_up_to_16_characters(value: str) -> None:
    assert xds_unique_id_problems(value) == []


@pytest.mark.parametrize(("value", "fragment"), [
    ("", "empty"),
    ("1.2.3^", "empty extension"),
    ("1.2.3^" + "x" * 17, "at most 16"),
    ("1.2.3^a^b", "more than one"),
    ("1.2.x^a", "uniqueId root"),
    ("^abc", "uniqueId root is empty"),
    ("1.2.3\n", "uniqueId root"),
    ("3.2.3", "uniqueId root"),
    (_long(65) + "^e", "at most 64"),
    ("1." * 64 + "1", "longer than 128"),
    ("1." * 64 + "1", "at most 128"),
])
def test_malformed_unique_ids_are_refused_with_the_broken_part(value: str, fragment: str) -> None:
    assert any(fragment in p for p in xds_unique_id_problems(value))


def test_submission_set_and_folder_unique_ids_are_plain_oids() -> None:
    assert xds_unique_id_problems("1.2.3", allow_extension=False) == []
    assert xds_unique_id_problems("1.2.3^x", allow_extension=False) == ["uniqueId must be a plain OID (no ^extension)"]


# --- HD assigning authority of CX / XCN / XON (ITI TF-3 Table 4.2.3.1.7-2) -----------------------

def test_assigning_authority_is_oid_and_iso_with_a_namespace_only_where_allowed() -> None:
    assert iso_assigning_authority_problems("&1.2.3&ISO", "CX.4", namespace_allowed=False) == []
    assert iso_assigning_authority_problems("IHENA&1.2.3&ISO", "XCN.9") == []
    assert iso_assigning_authority_problems("NS&1.2.3&ISO", "CX.4", namespace_allowed=False) == [
        "CX.4 must be &<OID>&ISO, got 'NS&1.2.3&ISO'"]


@pytest.mark.parametrize("value", ["", "&1.2.3", "&1.2.3&DNS", "&1.2.3&iso", "&1.02&ISO", "&3.1&ISO",
                                   "&1.2.3\n&ISO", "&1.2&ISO&", "&&ISO", "&1.\u0662&ISO"])
def test_assigning_authority_without_an_iso_oid_is_refused(value: str) -> None:
    assert iso_assigning_authority_problems(value, "XON.6") != []


# --- urn:uuid (RFC 4122 §3) --------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1",
                                   "urn:uuid:7EDCA82F-054D-47F2-A032-9B2A5B5186C1"])
def test_urn_uuids_are_accepted_in_either_case_of_hex(value: str) -> None:
    assert is_urn_uuid(value)


@pytest.mark.parametrize("value", [
    "", "urn:uuid:", "7edca82f-054d-47f2-a032-9b2a5b5186c1",  # no URN prefix
    "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1\n",
    "urn:uuid:7edca82f054d47f2a0329b2a5b5186c1",  # no hyphens
    "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c",  # 11 digits in the last group
    "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1a",
    "urn:uuid:7edca82g-054d-47f2-a032-9b2a5b5186c1",  # g is not hex
    "urn:uuid:{7edca82f-054d-47f2-a032-9b2a5b5186c1}",
    "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186\u0661\u0662",
    "Document01",
])
def test_anything_else_is_not_a_urn_uuid(value: str) -> None:
    assert not is_urn_uuid(value)
