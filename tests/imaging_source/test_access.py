"""The imaging source's access gate (imaging_source.access): UIDs judged by PS3.5 §9.1 before any PACS call,
every finding collected, and the PACS URL builder refusing what is not a UID."""

from __future__ import annotations

import pytest

from imaging_source.access import (
    CheckedInstance,
    CheckedSeries,
    NotADicomUid,
    UidRole,
    check_documents,
    check_instance,
    check_series,
    check_transfer_syntaxes,
    pacs_path_segment,
    uid_problem,
)

GOOD_STUDY, GOOD_SERIES, GOOD_SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
#: value -> a word of the reason the gate gives.
HOSTILE = {
    "..": "empty component",
    "../../etc/passwd": "only the digits",
    "1.2.3/../4": "only the digits",
    "1.2.3?x=1": "only the digits",
    "1.2.3#": "only the digits",
    "%2e%2e": "only the digits",
    "1.2.3%2F..": "only the digits",
    "1." + "2" * 63: "65 characters",
    "1.2.03": "leading zero",
    "": "empty",
    "   ": "empty",
    "1.2.\u0661": "only the digits",  # ARABIC-INDIC DIGIT ONE: a Unicode digit, not a UID digit
    "\uff11.2.3": "only the digits",  # FULLWIDTH DIGIT ONE
    "1.2.3\n": None,  # XML whitespace around a value is not part of it (stripped, then a UID)
    "1..2": "empty component",
    "1.2.": "empty component",
    "12345": "at least two components",
    "1.2\\1.3": "only the digits",  # a DICOM multi-value separator would make a UID list
    "1.2.*": "only the digits",  # a C-FIND wildcard
}


@pytest.mark.parametrize("value", sorted(HOSTILE))
def test_each_hostile_value_is_judged_with_its_reason(value: str) -> None:
    reason = uid_problem(value.strip())
    expected = HOSTILE[value]
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason, (value, reason)


@pytest.mark.parametrize("value", ["1.2", "0.0", "1.2.840.10008.1.2.1", "1." + "2" * 62, "2.25.0"])
def test_dicom_uids_pass(value: str) -> None:
    assert uid_problem(value) is None
    assert pacs_path_segment(value) == value


def test_sixty_four_characters_pass_and_sixty_five_do_not() -> None:
    assert uid_problem("1." + "2" * 62) is None
    assert "65 characters" in (uid_problem("1." + "2" * 63) or "")


@pytest.mark.parametrize("value", [v for v, why in HOSTILE.items() if why is not None])
def test_the_pacs_url_builder_refuses_every_non_uid(value: str) -> None:
    with pytest.raises(NotADicomUid, match="not a DICOM UID"):
        pacs_path_segment(value)


def test_rad69_documents_get_every_finding_not_only_the_first() -> None:
    gate = check_documents([
        ("1.2.3?x=1", "..", "%2e%2e"),  # three bad UIDs in one DocumentRequest
        (GOOD_STUDY, GOOD_SERIES, GOOD_SOP),
        (GOOD_STUDY, GOOD_SERIES, "1.2.03"),
        ("", GOOD_SERIES, GOOD_SOP),
        (" 1.2.3 ", GOOD_SERIES, " 1.2.3.4.6\n"),  # XML whitespace: stripped, then a UID
    ])
    assert [a.index for a in gate] == [0, 1, 2, 3, 4]
    assert [(f.role, f.value) for f in gate[0].findings] == [
        (UidRole.STUDY, "1.2.3?x=1"), (UidRole.SERIES, ".."), (UidRole.SOP_INSTANCE, "%2e%2e")]
    assert gate[0].checked is None and gate[0].document_unique_id == "%2e%2e"
    assert gate[1].checked == CheckedInstance(GOOD_STUDY, GOOD_SERIES, GOOD_SOP) and gate[1].findings == ()
    assert [(f.role, f.reason) for f in gate[2].findings] == [(UidRole.SOP_INSTANCE, "a component has a leading zero")]
    assert [(f.role, f.reason) for f in gate[3].findings] == [(UidRole.STUDY, "empty")]
    assert gate[3].document_unique_id == GOOD_SOP
    assert gate[4].checked == CheckedInstance("1.2.3", GOOD_SERIES, "1.2.3.4.6")
    assert gate[4].document_unique_id == " 1.2.3.4.6\n"  # the location is the value as received


def test_a_bad_series_is_reported_for_every_document_of_it() -> None:
    gate = check_documents([(GOOD_STUDY, "1.2.3#", f"{GOOD_SOP}.{n}") for n in range(1, 4)])
    assert [[(f.role, f.value) for f in a.findings] for a in gate] == [[(UidRole.SERIES, "1.2.3#")]] * 3


def test_rad55_instance_gets_every_finding() -> None:
    assert check_instance(GOOD_STUDY, GOOD_SERIES, GOOD_SOP) == CheckedInstance(GOOD_STUDY, GOOD_SERIES, GOOD_SOP)
    findings = check_instance("1.2.3?x=1", "1.2.\u0661", "1." + "2" * 63)
    assert isinstance(findings, list)
    assert [f.role for f in findings] == [UidRole.STUDY, UidRole.SERIES, UidRole.SOP_INSTANCE]
    assert "not a DICOM UID" in str(findings[0]) and "'1.2.3?x=1'" in str(findings[0])


def test_transfer_syntaxes_keep_the_uids_in_order_and_report_the_rest() -> None:
    access = check_transfer_syntaxes(["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.1?x", "1.2.840.10008.1.2.1",
                                      "1.2.840.10008.1.2.4.80", "..", "1.2.840.10008.1.2.01"])
    assert access.uids == ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.1")
    assert [f.value for f in access.findings] == ["1.2.840.10008.1.2.1?x", "..", "1.2.840.10008.1.2.01"]
    assert {f.role for f in access.findings} == {UidRole.TRANSFER_SYNTAX}


def test_a_series_sent_ahead_is_checked_whole() -> None:
    assert check_series(GOOD_STUDY, GOOD_SERIES, ["1.2.9", "1.2.8", "1.2.9"]) == CheckedSeries(
        GOOD_STUDY, GOOD_SERIES, ("1.2.9", "1.2.8"))
    findings = check_series("..", GOOD_SERIES, ["1.2.9", "1.2.3?x=1"])
    assert isinstance(findings, list) and [f.value for f in findings] == ["..", "1.2.3?x=1"]
