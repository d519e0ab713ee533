"""The ``--codes`` rewrite (NIST CodesUpdater): metadata Classifications, query OR lists and AND groups,
one map for both, distinct replacements, the not_in_CE_format exception; and a run against our server."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from lxml import etree

from conformance.codes import CodeRewriter, CodesFileError, is_skipped_query, load_codes, parse_codes
from conformance.manifest import load_manifest
from conformance.patients import Hl7Feed, PatientPool
from conformance.runner import PASS, Config, Runner, StepRecord
from conformance.xmlutil import descendants
from xds_core.vocabulary import ClassificationScheme

CLASS = ClassificationScheme.DocumentEntry_classCode.value
EVENT = ClassificationScheme.DocumentEntry_eventCodeList.value
AUTHOR = ClassificationScheme.DocumentEntry_author.value

CODES = f"""<?xml version="1.0"?>
<Codes>
  <CodeType name="classCode" classScheme="{CLASS}">
    <Code code="OLD-LISTED" display="Listed" codingScheme="S" deprecated="yes"/>
    <Code code="C1" display="Class one" codingScheme="S"/>
    <Code code="C2" display="Class two" codingScheme="S"/>
  </CodeType>
  <CodeType name="eventCodeList" classScheme="{EVENT}">
    <Code code="E1" display="Event one" codingScheme="E"/>
    <Code code="E2" display="Event two" codingScheme="E"/>
  </CodeType>
  <CodeType name="mimeType"><Code code="text/plain"/></CodeType>
</Codes>""".encode()

RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"


def _classification(scheme: str, code: str, coding_scheme: str, display: str) -> str:
    return (f'<rim:Classification classificationScheme="{scheme}" classifiedObject="Document01" '
            f'nodeRepresentation="{code}"><rim:Name><rim:LocalizedString value="{display}"/></rim:Name>'
            f'<rim:Slot name="codingScheme"><rim:ValueList><rim:Value>{coding_scheme}</rim:Value></rim:ValueList>'
            f'</rim:Slot></rim:Classification>')


def _metadata(*classifications: str) -> etree._Element:
    return etree.fromstring(
        f'<rim:RegistryObjectList xmlns:rim="{RIM}"><rim:ExtrinsicObject id="Document01" mimeType="text/x-odd">'
        + "".join(classifications) + "</rim:ExtrinsicObject></rim:RegistryObjectList>")


def _query(*slots: tuple[str, list[str]]) -> etree._Element:
    body = "".join(f'<rim:Slot name="{name}"><rim:ValueList>'
                   + "".join(f"<rim:Value>{v}</rim:Value>" for v in values) + "</rim:ValueList></rim:Slot>"
                   for name, values in slots)
    return etree.fromstring(f'<query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" '
                            f'xmlns:rim="{RIM}"><rim:AdhocQuery id="urn:uuid:x">{body}</rim:AdhocQuery>'
                            f'</query:AdhocQueryRequest>')


def _codes_of(root: etree._Element) -> list[tuple[str, str, str]]:
    out = []
    for cl in descendants(root, "Classification"):
        value = next(descendants(cl, "Value"))
        display = next(descendants(cl, "LocalizedString")).get("value")
        out.append((cl.get("nodeRepresentation"), value.text, display))
    return out


def _values(root: etree._Element) -> list[str]:
    return [v.text for v in descendants(root, "Value")]


@pytest.fixture
def rewriter() -> CodeRewriter:
    return CodeRewriter(parse_codes(CODES))


def test_metadata_classification_outside_the_value_set_is_replaced(rewriter: CodeRewriter) -> None:
    root = _metadata(_classification(CLASS, "FOREIGN", "X", "Foreign"),
                     _classification(CLASS, "OLD-LISTED", "S", "Listed"),          # conforming: kept
                     _classification(AUTHOR, "FOREIGN", "X", "not a code"))        # scheme not in codes.xml
    done = rewriter.rewrite_metadata(root)
    # Non-deprecated codes first (file order): C1; code, codingScheme Value and display all follow.
    assert _codes_of(root) == [("C1", "S", "Class one"), ("OLD-LISTED", "S", "Listed"),
                               ("FOREIGN", "X", "not a code")]
    assert [str(m) for m in done] == ["classCode: FOREIGN^^X -> C1^^S"]
    assert root[0].get("mimeType") == "text/x-odd"   # mimeType is never touched
    assert rewriter.report() == ["classCode: FOREIGN^^X -> C1^^S"]


def test_query_or_list_is_rewritten_inside_its_quotes(rewriter: CodeRewriter) -> None:
    root = _query(("$XDSDocumentEntryClassCode", ["('FOREIGN^^X', 'OLD-LISTED^^S')", "('OTHER^^Y')"]),
                  ("$XDSDocumentEntryPatientId", ["'FOREIGN^^X'"]))     # not a coded parameter
    rewriter.rewrite_query(root)
    assert _values(root) == ["('C1^^S', 'OLD-LISTED^^S')", "('C2^^S')", "'FOREIGN^^X'"]


def test_query_and_groups_are_rewritten_slot_by_slot(rewriter: CodeRewriter) -> None:
    root = _query(("$XDSDocumentEntryEventCodeList", ["('policy-a^^P')"]),
                  ("$XDSDocumentEntryEventCodeList", ["('policy-b^^P', 'OTHER^^Q')"]))
    rewriter.rewrite_query(root)
    # Each group is rewritten; the two groups named different codes and still do.
    assert _values(root) == ["('E1^^E')", "('E2^^E', 'E1^^E')"]
    assert [str(m) for m in rewriter.rewrite_query(_query(("$XDSDocumentEntryEventCodeList", ["('policy-b^^P')"])))
            ] == ["eventCodeList: policy-b^^P -> E2^^E"]


def test_same_old_code_maps_to_the_same_new_code_in_metadata_and_queries(rewriter: CodeRewriter) -> None:
    metadata = _metadata(_classification(CLASS, "FOREIGN", "X", "Foreign"))
    query = _query(("$XDSDocumentEntryClassCode", ["('FOREIGN^^X')"]))
    rewriter.rewrite_query(query)
    rewriter.rewrite_metadata(metadata)
    again = _metadata(_classification(CLASS, "FOREIGN", "X", "Foreign"))
    rewriter.rewrite_metadata(again)
    assert _values(query) == ["('C1^^S')"]
    assert _codes_of(metadata)[0][:2] == _codes_of(again)[0][:2] == ("C1", "S")
    assert len(rewriter.report()) == 1


def test_distinct_old_codes_get_distinct_new_codes_then_wrap_around(rewriter: CodeRewriter) -> None:
    new = [rewriter.replacement(CLASS, f"F{n}", "X") for n in range(4)]
    # C1, C2 (not deprecated, file order), then the deprecated listing, then around again.
    assert [str(c) for c in new] == ["C1^^S", "C2^^S", "OLD-LISTED^^S", "C1^^S"]
    assert rewriter.replacement(CLASS, "C2", "S") is None                       # conforming: no replacement
    assert rewriter.replacement(ClassificationScheme.DocumentEntry_typeCode.value, "T", "X") is None  # unconstrained


def test_plan_reserves_codes_the_corpus_uses_and_maps_in_order(tmp_path: Path, rewriter: CodeRewriter) -> None:
    (tmp_path / "a.xml").write_bytes(etree.tostring(_metadata(_classification(CLASS, "FOREIGN", "X", "F"))))
    (tmp_path / "b.xml").write_bytes(etree.tostring(_query(("$XDSDocumentEntryClassCode", ["('C1^^S')"]))))
    assert rewriter.plan([(tmp_path / "a.xml", "metadata"), (tmp_path / "b.xml", "query")]) == []
    # C1 is used as is by b.xml: FOREIGN must not become it, or b.xml's query would find FOREIGN's data.
    assert str(rewriter.replacement(CLASS, "FOREIGN", "X")) == "C2^^S"
    assert rewriter.report() == []                      # planned, not yet applied to a request
    assert rewriter.report(used_only=False) == ["classCode: FOREIGN^^X -> C2^^S"]


def test_not_in_ce_format_query_folders_are_recognised(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "errors.properties").write_text("not_in_CE_format=true")
    (tmp_path / "good").mkdir()
    assert is_skipped_query(tmp_path / "bad" / "query.xml")
    assert not is_skipped_query(tmp_path / "good" / "query.xml")


def test_assertion_naming_a_replaced_code_follows_the_map(rewriter: CodeRewriter) -> None:
    rewriter.replacement(CLASS, "FOREIGN", "X")
    xpath = (f"count(//*[@classificationScheme=\"{CLASS}\"][@nodeRepresentation=\"FOREIGN\"]) = 1 and "
             "//*[@nodeRepresentation='UNMAPPED']")
    assert rewriter.rewrite_assertion(xpath) == xpath.replace('"FOREIGN"', '"C1"')
    other_scheme = f"//*[@classificationScheme=\"{EVENT}\"][@nodeRepresentation=\"FOREIGN\"]"
    assert rewriter.rewrite_assertion(other_scheme) == other_scheme


def test_bad_codes_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CodesFileError):
        load_codes(tmp_path / "missing.xml")
    (tmp_path / "x.xml").write_text("<NotCodes/>")
    with pytest.raises(CodesFileError):
        load_codes(tmp_path / "x.xml")
    with pytest.raises(CommandError, match="--codes"):
        call_command("xds_conformance", "--registry", "http://127.0.0.1:1/", "--codes", str(tmp_path / "x.xml"),
                     stdout=io.StringIO(), stderr=io.StringIO())


# --- the real corpus and the real NIST codes.xml --------------------------------------------------

@pytest.fixture(scope="module")
def manifest(corpus_dir: Path):
    return load_manifest(corpus_dir / "manifest.yaml")


@pytest.fixture(scope="module")
def codes_xml(corpus_dir: Path) -> Path:
    return corpus_dir / "affinity-domain" / "codes.xml"


def _build(runner: Runner, step_id: str) -> etree._Element:
    step = runner.manifest.steps[step_id]
    record = StepRecord(step)
    runner.records[step_id] = record
    request, _attachments = runner.build_request(step, record, runner.bindings(step, record))
    record.request = request
    runner._reports(step, record, "InputMetadata")
    return request


def test_corpus_requests_conform_after_the_rewrite_and_queries_follow(manifest, codes_xml: Path) -> None:
    from conformance.codes import QUERY_CODE_PARAMETERS
    from xds_core.affinity_domain import load_affinity_domain

    codes = load_codes(codes_xml)
    domain = load_affinity_domain(codes_xml)
    assert domain is not None
    runner = Runner(manifest, Config(endpoints={}, feed_configured=False, codes=codes),
                    PatientPool(manifest.patients, None), progress=io.StringIO())
    submission = _build(runner, "12346/single_doc/submit_doc")   # the SQ fixture (P_SQ)
    names = {ct.class_scheme: ct.name for ct in codes.by_scheme.values()}
    for cl in descendants(submission, "Classification"):
        scheme = cl.get("classificationScheme")
        if scheme in names:
            value = next(descendants(cl, "Value")).text or ""
            assert domain.accepts_code(names[scheme], cl.get("nodeRepresentation") or "", value), etree.tostring(cl)
    hcft = next(cl for cl in descendants(submission, "Classification")
                if cl.get("classificationScheme") == ClassificationScheme.DocumentEntry_healthcareFacilityTypeCode)
    new_hcft = f"'{hcft.get('nodeRepresentation')}^^{next(descendants(hcft, 'Value')).text}'"
    query = _build(runner, "11897/hcftc/hcftc")   # asks for 264372000 or the submission's (old) 66280005
    asked = [v.text or "" for v in descendants(query, "Value")
             if v.getparent().getparent().get("name") in QUERY_CODE_PARAMETERS]
    # ... and now for the submission's new hcft instead.
    assert f"({new_hcft})" in asked and not any("66280005" in a or "264372000" in a for a in asked), asked
    # not_in_CE_format: the malformed query goes out as written.
    query = _build(runner, "11897/classcode_scheme_mismatch/classcode_scheme_mismatch")
    assert "('DEMO-Lab^^1.3.6.1.4.1.21367.100.1', 'a^^')" in [v.text for v in descendants(query, "Value")]
    # XDS-I: the IMG-01 submission is also IMG-03's reference; its formatCode stays (it is in codes.xml).
    kos = _build(runner, "_imagecache/std/IDS-DEPT002-a/kos/submit_doc")
    assert any(cl.get("nodeRepresentation") == "1.2.840.10008.5.1.4.1.1.88.59"
               for cl in descendants(kos, "Classification"))


def test_junit_and_verbose_output_list_the_mappings(codes_xml: Path, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit):
        call_command("xds_conformance", "--registry", "http://127.0.0.1:1/", "--cases", "REG-01",
                     "--codes", str(codes_xml), "--junit", str(tmp_path / "j.xml"), "--verbosity", "2",
                     stdout=out, stderr=err)
    suite = etree.parse(str(tmp_path / "j.xml")).getroot()[0]
    system_out = suite.find("system-out")
    assert system_out is not None
    assert "contentTypeCode: 225728007^^2.16.840.1.113883.6.96 -> " in system_out.text
    assert "contentTypeCode: 225728007^^2.16.840.1.113883.6.96 -> " in err.getvalue()


# --- against our own registry over HTTP -----------------------------------------------------------

@pytest.fixture
def feed_listener(settings, codes_xml: Path):
    from xds_core.affinity_domain import load_affinity_domain
    from xds_registry.patient_identity_feed.mllp import MllpServer

    server = MllpServer(("127.0.0.1", 0), load_affinity_domain(codes_xml))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.django_db(transaction=True)
def test_sq_cases_pass_against_our_registry_validating_codes(live_server, settings, manifest, codes_xml: Path,
                                                              feed_listener: int) -> None:
    """With the NIST codes.xml configured the registry rejects the corpus' own codes; rewritten, the
    code-sensitive stored queries (class, practice setting, hcft, event AND/OR, folder codes) and the
    association-documentation assertion all hold."""
    settings.XDS_AFFINITY_DOMAIN_CODES = str(codes_xml)
    endpoints = {"registry": f"{live_server.url}/xds/registry", "repository": f"{live_server.url}/xds/repository",
                 "imaging-source": ""}
    cases = ["SQ-03", "SQ-05", "SQ-06", "SQ-09", "SQ-10", "SQ-18", "SQ-20", "REG-36"]

    def run(codes):
        config = Config(endpoints=endpoints, feed_configured=True, timeout=30, codes=codes)
        pool = PatientPool(manifest.patients, Hl7Feed("127.0.0.1", feed_listener, timeout=10))
        return Runner(manifest, config, pool, progress=io.StringIO()).run(manifest.select(cases))

    results = run(load_codes(codes_xml))
    assert [(r.case.id, r.verdict, r.reason) for r in results if r.verdict != PASS] == []
    assert {r.case.id for r in results} >= set(cases)
    without = {r.case.id: r for r in run(None)}
    assert without["FIX-02"].verdict != PASS and "XDSRegistryMetadataError" in without["FIX-02"].reason
