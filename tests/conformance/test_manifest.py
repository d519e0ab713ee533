"""Loading the real replay manifest and refusing malformed ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.manifest import TRANSACTION_ENDPOINTS, ManifestError, load_manifest


@pytest.fixture(scope="module")
def manifest(corpus_dir: Path):
    return load_manifest(corpus_dir / "manifest.yaml")


def test_real_manifest_loads_with_every_file_present(manifest) -> None:
    assert len(manifest.cases) >= 90
    for step in manifest.steps.values():
        assert step.transaction in TRANSACTION_ENDPOINTS
        if step.request:
            assert manifest.file(step.request["body"]).is_file()
            for doc in step.request.get("documents") or []:
                assert manifest.file(doc["file"]).is_file()


def test_every_case_step_exists_and_every_reference_resolves(manifest) -> None:
    for case in manifest.cases:
        assert case.step_ids, case.id
        for step_id in case.step_ids:
            assert step_id in manifest.steps
            for dependency in manifest.steps[step_id].dependencies():
                assert dependency in manifest.steps


def test_case_selection_by_glob_and_dependencies(manifest) -> None:
    assert [c.id for c in manifest.select(["REG-0[1-3]"])] == ["REG-01", "REG-02", "REG-03"]
    with_deps = [c.id for c in manifest.with_dependencies(manifest.select(["REG-05"]))]
    assert with_deps == ["REG-04", "REG-05"]
    sq36 = [c.id for c in manifest.with_dependencies(manifest.select(["SQ-36"]))]
    assert {"FIX-02", "FIX-03", "SQ-36"} <= set(sq36)


def test_step_ids_split_into_section_and_testplan_id(manifest) -> None:
    step = manifest.steps["idc_init/XDS-I-idc-a/submit_doc#3"]
    assert step.section == "idc_init/XDS-I-idc-a"
    assert step.local_id == "submit_doc"


def test_mutually_exclusive_sections_are_recognised(manifest) -> None:
    assert manifest.steps["12379/support/support"].exclusive_with() == "12379/no_support"
    assert manifest.steps["12379/no_support/no_support"].exclusive_with() == "12379/support"


def test_blocked_cases_are_marked(manifest) -> None:
    assert manifest.case("IMG-15").blocked
    assert manifest.case("IMG-16").blocked
    assert not manifest.case("IMG-04").blocked


def test_malformed_manifest_lists_every_problem(tmp_path: Path) -> None:
    (tmp_path / "manifest.yaml").write_text("""
manifestVersion: 1
cases:
  - {id: X-01, transaction: ITI-42, steps: [t/s/a, t/s/missing]}
scenarios:
  - id: t
    steps:
      - id: t/s/a
        transaction: ITI-99
        request: {body: nowhere.xml, format: ebrim-2.1}
        bind: {$x$: {from: t/s/ghost, key: uid.A}}
""")
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "manifest.yaml")
    text = " ".join(info.value.problems)
    assert "ITI-99" not in text  # unknown vocabulary is a SKIP naming it (test_vocabulary.py), not a broken manifest
    assert "nowhere.xml" in text
    assert "unknown step t/s/missing" in text
    assert "unknown step t/s/ghost" in text


def test_unreadable_manifest_is_a_manifest_error(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("[unclosed")
    with pytest.raises(ManifestError):
        load_manifest(tmp_path / "m.yaml")
