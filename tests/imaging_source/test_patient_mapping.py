"""Local DICOM Patient ID -> affinity-domain patientId: table first, then authority rewrite rules."""

from __future__ import annotations

import pytest

from imaging_source.models import PatientMapping
from imaging_source.patient_mapping import (
    RewriteRule,
    UnmappedPatient,
    map_patient,
    parse_rewrite_rules,
    set_mapping,
    source_patient_id,
)

AFFINITY = "1.3.6.1.4.1.21367.2005.13.20.1000"
pytestmark = pytest.mark.django_db


def test_table_row_for_the_exact_issuer_wins_over_the_any_issuer_row_and_rules() -> None:
    set_mapping("P1", f"AD-ANY^^^&{AFFINITY}&ISO")
    set_mapping("P1", f"AD-H1^^^&{AFFINITY}&ISO", issuer="HOSP1")
    rules = [RewriteRule("*", "1.2.3")]
    assert map_patient("P1", "HOSP1", rules) == f"AD-H1^^^&{AFFINITY}&ISO"
    assert map_patient("P1", "HOSP2", rules) == f"AD-ANY^^^&{AFFINITY}&ISO"
    assert map_patient("P1", None, rules) == f"AD-ANY^^^&{AFFINITY}&ISO"


def test_rewrite_rules_keep_the_local_id_under_the_affinity_authority() -> None:
    rules = parse_rewrite_rules(f"HOSP1=>{AFFINITY}, *=>1.2.3.4")
    assert map_patient("P9", "HOSP1", rules) == f"P9^^^&{AFFINITY}&ISO"
    assert map_patient("P9", "OTHER", rules) == "P9^^^&1.2.3.4&ISO"
    assert map_patient("P9", None, rules) == "P9^^^&1.2.3.4&ISO"


def test_no_table_row_and_no_matching_rule_is_unmapped() -> None:
    with pytest.raises(UnmappedPatient, match="P404"):
        map_patient("P404", "HOSP1", parse_rewrite_rules(f"HOSP2=>{AFFINITY}"))
    with pytest.raises(UnmappedPatient):
        map_patient("", None, [RewriteRule("*", AFFINITY)])  # an empty Patient ID is never mapped


@pytest.mark.parametrize("text", ["HOSP1", "HOSP1=>not-an-oid", "=>", "*=>1.2.abc"])
def test_malformed_rewrite_rules_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="rewrite rule"):
        parse_rewrite_rules(text)


def test_set_mapping_refuses_a_malformed_affinity_id_and_updates_an_existing_row() -> None:
    with pytest.raises(ValueError, match="CX"):
        set_mapping("P1", "AD-1^^^1.2.3")
    assert set_mapping("P1", f"AD-1^^^&{AFFINITY}&ISO") is True
    assert set_mapping("P1", f"AD-2^^^&{AFFINITY}&ISO") is False
    assert PatientMapping.objects.get().affinity_patient_id == f"AD-2^^^&{AFFINITY}&ISO"


def test_source_patient_id_carries_the_local_issuer() -> None:
    assert source_patient_id("P1", "1.2.840.9", "9.9.9") == "P1^^^&1.2.840.9&ISO"
    assert source_patient_id("P1", "HOSP1", "9.9.9") == "P1^^^&9.9.9&ISO"
    assert source_patient_id("P1", "HOSP1", "") == "P1^^^HOSP1"
    assert source_patient_id("P1", None, "") == "P1"
