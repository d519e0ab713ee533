"""Value-format checkers of the HL7 v2 data types XDS uses (ITI TF-3 Table 4.2.3.1.7-2)."""

from __future__ import annotations

import pytest

from xds_core.metadata.values import (
    CX,
    DTM,
    XCN,
    Author,
    Code,
    cx_problems,
    dtm_problems,
    xcn_problems,
    xon_problems,
    xtn_problems,
)

# --- CX ------------------------------------------------------------------------------------

def test_valid_patient_id() -> None:
    assert cx_problems("P1^^^&1.3.6.1.4.1.21367.13.20.1000&ISO") == []
    assert CX.from_str("P1^^^&1.2.3&ISO") == CX("P1", "1.2.3")
    assert str(CX("P1", "1.2.3")) == "P1^^^&1.2.3&ISO"


@pytest.mark.parametrize(("value", "fragment"), [
    ("^^^&1.2&ISO", "CX.1"),
    ("P1", "CX.4"),
    ("P1^x^^&1.2&ISO", "CX.2 and CX.3"),
    ("P1^^^NS&1.2&ISO", "&<OID>&ISO"),
    ("P1^^^&1.2&DNS", "&<OID>&ISO"),
    ("P1^^^&abc&ISO", "&<OID>&ISO"),
    ("P1^^^&1.2&ISO^PI", "only CX.1 and CX.4"),
])
def test_invalid_patient_ids(value: str, fragment: str) -> None:
    assert any(fragment in p for p in cx_problems(value))


# --- XCN / XON / XTN ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "^Smitty^Gerald^^^",
    "2.3.515.3.12345^DePinto^John^F^II^Mr.^^^IHENA&1.3.6.1.4.1.21367.2010.1.2.300&ISO",
    "11375^Welby^Marcus^J^Jr. MD^Dr^^^&1.2.840.113619.6.197&ISO",
    "id-only",
])
def test_valid_persons(value: str) -> None:
    assert xcn_problems(value) == []
    assert XCN(value).id == value.split("^")[0]


@pytest.mark.parametrize(("value", "fragment"), [
    ("^^Gerald", "XCN needs an id"),
    ("", "XCN needs an id"),
    ("1^Doe^^^^^^^&1.2&DNS", "XCN.9"),
    ("1^Doe^^^^^^^&notoid&ISO", "XCN.9"),
])
def test_invalid_persons(value: str, fragment: str) -> None:
    assert any(fragment in p for p in xcn_problems(value))


@pytest.mark.parametrize("value", [
    "Cleveland Clinic",
    "Some Hospital^^^^^^^^^1.2.3.4.5.6.7.8.9.1789.45",
    "Some Hospital^^^^^&1.2.3.4.5.6.7.8.9.1789&ISO^^^^45",
])
def test_valid_organizations(value: str) -> None:
    assert xon_problems(value) == []


@pytest.mark.parametrize(("value", "fragment"), [
    ("^^^^^^^^^1.2.3", "XON.1"),
    ("Hospital^x", "only XON.1, XON.6 and XON.10"),
    ("Hospital^^^^^^^^^45", "XON.6 (assigning authority &OID&ISO) is required"),
    ("Hospital^^^^^&1.2&DNS^^^^45", "XON.6"),
])
def test_invalid_organizations(value: str, fragment: str) -> None:
    assert any(fragment in p for p in xon_problems(value))


@pytest.mark.parametrize("value", ["^^Internet^radiology@example.org", "^PRN^PH^^^555^1234567",
                                   "^WPN^FX^^^^^^^^^+15551234567"])
def test_valid_telecommunications(value: str) -> None:
    assert xtn_problems(value) == []


@pytest.mark.parametrize(("value", "fragment"), [
    ("radiology@example.org", "XTN.3"),
    ("^^Email^a@b", "XTN.3"),
    ("^^Internet", "XTN.4"),
    ("^^PH", "telephone number"),
])
def test_invalid_telecommunications(value: str, fragment: str) -> None:
    assert any(fragment in p for p in xtn_problems(value))


# --- DTM ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["2024", "202402", "20240229", "2024022923", "202402292359", "20240229235959",
                                   "20000229"])
def test_valid_times(value: str) -> None:
    assert dtm_problems(value) == []


@pytest.mark.parametrize(("value", "fragment"), [
    ("20240", "is not a DTM"),
    ("2024-01-01", "is not a DTM"),
    ("20240101120000.123", "is not a DTM"),
    ("20240101120000+0100", "is not a DTM"),
    ("2024\n", "is not a DTM"),  # `$` would match before the newline, and int("\n") then raised
    ("\u0661\u0669\u0667\u0660", "is not a DTM"),  # Arabic-Indic digits: int() takes them, XDS does not
    ("202413", "month 13"),
    ("20240001", "month 00"),
    ("20240132", "day 32"),
    ("20230229", "day 29 does not exist in month 02"),
    ("19000229", "day 29 does not exist"),
    ("20240431", "day 31 does not exist in month 04"),
    ("2024010124", "hour 24"),
    ("202401012360", "minute 60"),
    ("20240101235960", "second 60"),
])
def test_invalid_times(value: str, fragment: str) -> None:
    problems = dtm_problems(value)
    assert problems and fragment in problems[0]


def test_dtm_lower_bound_pads_to_the_earliest_instant() -> None:
    assert DTM.lower_bound("2024") == "20240101000000"
    assert DTM.lower_bound("20240229235959") == "20240229235959"


# --- Code / Author ------------------------------------------------------------------------------

def test_code_query_form() -> None:
    assert str(Code("CT", "DCM", "Computed Tomography")) == "CT^^DCM"


def test_author_slots_round_trip() -> None:
    author = Author(person="^Doe^John", institutions=["Hospital"], roles=["Radiologist"],
                    specialties=["Radiology"], telecommunications=["^^Internet^a@b"])
    slots = author.to_slots()

    assert [s.name for s in slots] == ["authorPerson", "authorInstitution", "authorRole", "authorSpecialty",
                                       "authorTelecommunication"]
    assert Author.from_slots({s.name: s.values for s in slots}) == author
    assert Author(institutions=["H"]).to_slots()[0].name == "authorInstitution"
