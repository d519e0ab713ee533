"""The NIST testplan vocabulary: what the runner implements is judged right and wrong, the rest is named.

* ``ExpectedContents/DocumentEntries`` (``MustOnlyInclude`` / ``Include`` / ``Exclude`` with a nested
  ``UseId`` and ``DocumentEntryType``), judged as the toolkit's ``Validator.verifyDocumentEntries``;
* bindings to the systems under test's configuration (``{config: repositoryUniqueId}``,
  ``{config: imagingSourceUniqueId}``, ``UseRepositoryUniqueId``, ``UseXPath``);
* anything else, in the manifest or in the step's ``testplan.xml``: a SKIP naming it, for the case and
  for every case depending on it.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest
from lxml import etree

from conformance import expectations as ex
from conformance.manifest import load_manifest
from conformance.patients import PatientPool
from conformance.runner import FAIL, NIST_IMAGING_SOURCE_UNIQUE_ID, PASS, SKIP, Config, Runner, StepError, StepRecord
from conformance.testplan import UnsupportedError, parse_document_entries, scan_testplan
from conformance.testplan import testkit_binding as binding_of  # not a test
from conformance.transport import Exchange
from conformance.xmlutil import descendants, parse, text_of

RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
ON_DEMAND = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"


def entry(uuid: str, object_type: str = STABLE, slots: str = "") -> str:
    return (f'<rim:ExtrinsicObject id="{uuid}" status="{APPROVED}" mimeType="text/plain" '
            f'objectType="{object_type}">{slots}</rim:ExtrinsicObject>')


def query_response(objects: str) -> etree._Element:
    return parse(f'<query:AdhocQueryResponse xmlns:query="{QUERY}" xmlns:rim="{RIM}" status="{SUCCESS}">'
                 f'<rim:RegistryObjectList>{objects}</rim:RegistryObjectList></query:AdhocQueryResponse>'.encode())


def repository_slot(value: str) -> str:
    return (f'<rim:Slot name="repositoryUniqueId"><rim:ValueList><rim:Value>{value}</rim:Value>'
            '</rim:ValueList></rim:Slot>')


def must_only_include(use_id: object, entry_type: str | None = STABLE) -> dict:
    document_entry: dict = {"UseId": use_id}
    if entry_type:
        document_entry["DocumentEntryType"] = entry_type
    return {"DocumentEntries": {"MustOnlyInclude": {"DocumentEntry": document_entry}}}


# --- DocumentEntries, judged on canned answers --------------------------------------------------

def test_must_only_include_passes_with_exactly_the_use_id_bound_entry() -> None:
    symbols = {"$docid$": "urn:uuid:d1"}
    assert ex.check_contents([must_only_include("$docid$")], query_response(entry("urn:uuid:d1")),
                             symbols=symbols) == []


def test_must_only_include_fails_on_an_extra_a_missing_or_a_retyped_entry() -> None:
    symbols = {"$docid$": "urn:uuid:d1"}
    item = must_only_include("$docid$")
    extra = ex.check_contents([item], query_response(entry("urn:uuid:d1") + entry("urn:uuid:d2")), symbols=symbols)
    assert extra == ["MustOnlyInclude: 1 DocumentEntries besides the listed ones (e.g. urn:uuid:d2)"]
    missing = ex.check_contents([item], query_response(entry("urn:uuid:d2")), symbols=symbols)
    assert any("urn:uuid:d1 ($docid$) not in the result" in p for p in missing)
    assert any("besides the listed ones" in p for p in missing)
    empty = ex.check_contents([item], query_response(""), symbols=symbols)
    assert empty and "not in the result" in empty[0]
    retyped = ex.check_contents([item], query_response(entry("urn:uuid:d1", ON_DEMAND)), symbols=symbols)
    assert retyped == [f"DocumentEntry urn:uuid:d1: objectType {ON_DEMAND}, expected {STABLE}"]


def test_must_only_include_lists_several_entries_in_the_yaml_shapes_of_the_xml() -> None:
    symbols = {"$a$": "urn:uuid:a", "$b$": "urn:uuid:b"}
    body = query_response(entry("urn:uuid:a") + entry("urn:uuid:b"))
    as_list = {"DocumentEntries": {"MustOnlyInclude": [{"DocumentEntry": {"UseId": "$a$"}},
                                                       {"DocumentEntry": {"UseId": "$b$"}}]}}
    as_children = {"DocumentEntries": [{"MustOnlyInclude": {"DocumentEntry": [{"UseId": "$a$"}, {"UseId": "$b$"}]}}]}
    for item in (as_list, as_children):
        assert ex.check_contents([item], body, symbols=symbols) == []
        assert ex.check_contents([item], query_response(entry("urn:uuid:a")), symbols=symbols) != []


def test_include_exclude_and_a_type_for_every_entry() -> None:
    symbols = {"$a$": "urn:uuid:a", "$gone$": "urn:uuid:gone"}
    body = query_response(entry("urn:uuid:a") + entry("urn:uuid:other"))
    item = {"DocumentEntries": {"Include": {"DocumentEntry": {"UseId": "$a$"}},
                                "Exclude": {"DocumentEntry": {"UseId": "$gone$"}}, "DocumentEntryType": STABLE}}
    assert ex.check_contents([item], body, symbols=symbols) == []  # Include tolerates other entries
    present = query_response(entry("urn:uuid:a") + entry("urn:uuid:gone"))
    assert ex.check_contents([item], present, symbols=symbols) == [
        "Exclude: DocumentEntry urn:uuid:gone ($gone$) is in the result"]
    on_demand = query_response(entry("urn:uuid:a") + entry("urn:uuid:od", ON_DEMAND))
    assert ex.check_contents([item], on_demand, symbols=symbols) == [
        f"DocumentEntry urn:uuid:od: objectType {ON_DEMAND}, expected {STABLE}"]


def test_use_id_references_need_a_resolver_and_an_unbound_symbol_is_a_failure() -> None:
    reference = {"testdir": "../submit", "step": "submit", "section": "AssignedUuids", "id": "Document01"}
    body = query_response(entry("urn:uuid:d1"))
    assert ex.check_contents([must_only_include(reference)], body, resolve=lambda r: "urn:uuid:d1") == []
    assert ex.check_contents([must_only_include(reference)], body, resolve=lambda r: "urn:uuid:zz") != []
    assert "needs the runner" in ex.check_contents([must_only_include(reference)], body)[0]
    assert "not bound" in ex.check_contents([must_only_include("$nobody$")], body, symbols={})[0]


def test_testkit_references_become_manifest_bindings() -> None:
    use_id = {"testdir": "../submit", "step": "submit", "section": "AssignedUuids", "id": "Document01"}
    assert binding_of(use_id, "12000/eval") == {"from": "12000/submit/submit", "key": "uuid.Document01"}
    assert binding_of({"step": "s", "section": "AssignedUids", "id": "X"}, "t/a") == {"from": "t/a/s",
                                                                                           "key": "uid.X"}
    report = {"test": "15817", "section": "pif", "step": "step", "reportName": "$patientid$"}
    assert binding_of(report, "11990/submit") == {"from": "15817/pif/step", "key": "report.$patientid$"}
    assert binding_of({"section": "THIS", "step": "q", "reportName": "r"}, "t/a") == {"from": "t/a/q",
                                                                                         "key": "report.r"}
    assert binding_of({"testdir": "../query", "step": "by_uid", "symbol": "$repuid$"}, "12029/retrieve") == {
        "from": "12029/query/by_uid", "key": "repositoryUniqueId"}
    with pytest.raises(UnsupportedError, match="AssignedSourceId"):
        binding_of({"step": "s", "section": "AssignedSourceId", "id": "SubmissionSet01"}, "t/a")


def test_unreadable_document_entries_are_named_not_ignored() -> None:
    with pytest.raises(UnsupportedError, match="MustOnlyInclude/Folder"):
        parse_document_entries({"MustOnlyInclude": {"Folder": {"UseId": "$f$"}}})
    with pytest.raises(UnsupportedError, match="DocumentEntries/Snapshot"):
        parse_document_entries({"Snapshot": {}})
    assert ex.check_contents([{"DocumentEntries": {"Bogus": 1}}], query_response(""))[0].startswith("unsupported:")


def test_toolkit_contents_names_beyond_the_corpus() -> None:
    rplc = "urn:ihe:iti:2007:AssociationType:RPLC"
    deprecated = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
    old = f'<rim:ExtrinsicObject id="old" status="{deprecated}" objectType="{STABLE}"/>'
    pair = query_response(entry("new") + old
                          + f'<rim:Association id="a" sourceObject="new" targetObject="old" associationType="{rplc}"/>')
    assert ex.check_contents(["DocRplcDoc", "NoSubmissionSet"], pair) == []
    assert ex.check_contents(["DocRplcDoc"], query_response(entry("new") + old)) != []
    assert ex.check_contents(["NoDocument"], pair) == ["2 Documents, expected 0"]
    snapshot = "urn:ihe:iti:2010:AssociationType:IsSnapshotOf"
    pattern = query_response(entry("snap") + entry("od", ON_DEMAND) + f'<rim:Association id="s" sourceObject="snap" '
                             f'targetObject="od" associationType="{snapshot}"/>')
    assert ex.check_contents(["HasSnapshotPattern"], pattern) == []
    assert ex.check_contents(["HasSnapshotPattern"], pair) == ["0 IsSnapshotOf associations, expected 1"]


# --- the testplan scan ----------------------------------------------------------------------

TESTPLAN = """<TestPlan><Test>t/eval</Test><Rule><Transaction>SQ</Transaction></Rule>
  <TestStep id="only"><Goal>g</Goal><ExpectedStatus>Success</ExpectedStatus>
    <StoredQueryTransaction><XDSb/><MetadataFile>query.xml</MetadataFile>{extra}
      <ExpectedContents><DocumentEntries><MustOnlyInclude><DocumentEntry>
        <UseId testdir="../submit" step="submit" section="AssignedUuids" id="Document01" symbol="$docid$"/>
        <DocumentEntryType>urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1</DocumentEntryType>
      </DocumentEntry></MustOnlyInclude></DocumentEntries></ExpectedContents>
    </StoredQueryTransaction></TestStep>
  <TestStep id="other"><Unknown/></TestStep></TestPlan>"""


def test_testplan_scan_accepts_the_supported_vocabulary_and_names_the_rest(tmp_path: Path) -> None:
    plan = tmp_path / "testplan.xml"
    plan.write_text(TESTPLAN.format(extra=""))
    assert scan_testplan(plan, "only") == []  # MustOnlyInclude/DocumentEntry/UseId is vocabulary; 'other' not read
    plan.write_text(TESTPLAN.format(extra='<UseObjectRef/><UseId step="s" section="AssignedUids" id="x" symbol="$x$"'
                                          ' value="1.2"/><Report name="r" section="Log">//x</Report>'
                                          '<Assertions><DataRef file="../other" as="output"/></Assertions>'))
    assert scan_testplan(plan, "only") == [
        "TestStep/StoredQueryTransaction/UseObjectRef", "TestStep/StoredQueryTransaction/UseId@value",
        "TestStep/StoredQueryTransaction/Report@section='Log'",
        "TestStep/StoredQueryTransaction/Assertions/DataRef@file='../other'"]
    assert scan_testplan(plan, "ghost") == ["TestStep id='ghost' not in testplan.xml"]


def test_every_step_of_the_corpus_is_within_the_supported_vocabulary(corpus_dir: Path) -> None:
    manifest = load_manifest(corpus_dir / "manifest.yaml")
    scanned = [s for s in manifest.steps.values() if manifest.testplan_of(s) is not None]
    assert len(scanned) > 200  # every testkit step is checked against its testplan.xml
    assert {s: manifest.unsupported(s) for s in manifest.steps if manifest.unsupported(s)} == {}


# --- the runner, with a stand-in registry -------------------------------------------------------

SUBMISSION = f"""<lcm:SubmitObjectsRequest xmlns:lcm="{LCM}" xmlns:rim="{RIM}"><rim:RegistryObjectList>
  <rim:ExtrinsicObject id="Document01" mimeType="text/plain" objectType="{STABLE}">
    <rim:ExternalIdentifier identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427" value="$patientid$"
        registryObject="Document01"/>
    <rim:ExternalIdentifier identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" value="1.2.3"
        registryObject="Document01"/>
  </rim:ExtrinsicObject>
  <rim:RegistryPackage id="SubmissionSet01">
    <rim:ExternalIdentifier identificationScheme="urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8" value="1.2.4"
        registryObject="SubmissionSet01"/>
  </rim:RegistryPackage>
  <rim:Association id="a1" associationType="HasMember" sourceObject="SubmissionSet01" targetObject="Document01"/>
</rim:RegistryObjectList></lcm:SubmitObjectsRequest>"""
QUERY_REQUEST = f"""<query:AdhocQueryRequest xmlns:query="{QUERY}" xmlns:rim="{RIM}">
  <query:ResponseOption returnComposedObjects="true" returnType="LeafClass"/>
  <rim:AdhocQuery id="urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"/></query:AdhocQueryRequest>"""

MANIFEST = """
manifestVersion: 1
patients: {P_REG: {fed: true}}
cases:
  - {id: T-01, transaction: ITI-42, steps: [t/submit/submit]}
  - {id: T-02, transaction: ITI-18, steps: [t/eval/only]}
  - {id: T-03, transaction: ITI-18, steps: [t/odd/odd]}
  - {id: T-04, transaction: ITI-18, steps: [t/after/after]}
  - {id: T-05, transaction: ITI-18, steps: [t/plan/plan]}
scenarios:
  - id: t
    runPatient: P_REG
    steps:
      - id: t/submit/submit
        transaction: ITI-42
        request: {body: submit.xml, format: ebrim-3.0}
        patient: {mode: assign, id: P_REG}
        assign: {uniqueIds: true, uuids: true, sourceId: true}
        expect: {status: [Success]}
      - id: t/eval/only
        transaction: ITI-18
        request: {body: query.xml, format: query-3.0, storedQuery: GetDocuments, returnType: LeafClass}
        expect:
          status: [Success]
          contents:
            - DocumentEntries:
                MustOnlyInclude:
                  DocumentEntry:
                    UseId: {testdir: ../submit, step: submit, section: AssignedUuids, id: Document01, symbol: $docid$}
                    DocumentEntryType: urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1
      - id: t/odd/odd
        transaction: ITI-18
        request: {body: query.xml, format: query-3.0}
        reports: {report.x: {from: Result, xpath: "//*[local-name()='ExtrinsicObject']/@id"}}
        expect: {status: [Success], contents: [HasSomethingNew]}
      - id: t/after/after
        transaction: ITI-18
        request: {body: query.xml, format: query-3.0}
        bind: {$x$: {from: t/odd/odd, key: report.x}}
        expect: {status: [Success]}
      - id: t/plan/plan
        transaction: ITI-18
        request: {body: query.xml, format: query-3.0}
        expect: {status: [Success]}
"""


class StandIn:
    """A registry that remembers the entryUUIDs of the last submission and answers queries with them,
    plus ``extra`` entries, minus ``drop`` ones."""

    def __init__(self, extra: tuple[str, ...] = (), drop: bool = False) -> None:
        self.extra, self.drop = extra, drop
        self.sent: list[tuple[str, etree._Element]] = []
        self.entries: list[str] = []

    def send(self, transaction: str, body: etree._Element, attachments=None) -> Exchange:
        self.sent.append((transaction, body))
        if transaction == "ITI-42":
            self.entries = [eo.get("id", "") for eo in descendants(body, "ExtrinsicObject")]
            answer = parse(f'<rs:RegistryResponse xmlns:rs="{RS}" status="{SUCCESS}"/>'.encode())
            return Exchange(200, None, answer)
        ids = ([] if self.drop else self.entries) + list(self.extra)
        return Exchange(200, None, query_response("".join(entry(i) for i in ids)))


@pytest.fixture
def manifest(tmp_path: Path):
    (tmp_path / "manifest.yaml").write_text(MANIFEST)
    (tmp_path / "submit.xml").write_text(SUBMISSION)
    (tmp_path / "query.xml").write_text(QUERY_REQUEST)
    plan = tmp_path / "nist" / "t" / "plan"
    plan.mkdir(parents=True)
    (plan / "testplan.xml").write_text(textwrap.dedent("""\
        <TestPlan><Test>t/plan</Test><TestStep id="plan"><ExpectedStatus>Success</ExpectedStatus>
          <StoredQueryTransaction><XDSb/><MetadataFile>query.xml</MetadataFile><AssignNewUuid symbol="$u$"/>
          </StoredQueryTransaction></TestStep></TestPlan>"""))
    return load_manifest(tmp_path / "manifest.yaml")


def _run(manifest, stand_in: StandIn, patterns: list[str], **config):
    runner = Runner(manifest, Config(endpoints={"registry": "http://stand-in"}, feed_configured=True, **config),
                    PatientPool(manifest.patients, None), progress=io.StringIO(), transport=stand_in)
    return {r.case.id: r for r in runner.run(manifest.select(patterns))}, runner


def test_runner_passes_must_only_include_with_the_submitted_entry_uuid(manifest) -> None:
    results, runner = _run(manifest, StandIn(), ["T-02"])
    assert results["T-01"].verdict == PASS and "dependency of T-02" in results["T-01"].reason
    assert results["T-02"].verdict == PASS, results["T-02"].reason
    assert runner.records["t/submit/submit"].exports["uuid.Document01"].startswith("urn:uuid:")


@pytest.mark.parametrize("stand_in,reason", [
    (StandIn(extra=("urn:uuid:someone-else",)), "1 DocumentEntries besides the listed ones"),
    (StandIn(drop=True), "not in the result"),
])
def test_runner_fails_must_only_include_on_an_extra_or_a_missing_entry(manifest, stand_in: StandIn,
                                                                       reason: str) -> None:
    results, _runner = _run(manifest, stand_in, ["T-02"])
    assert results["T-02"].verdict == FAIL and reason in results["T-02"].reason, results["T-02"].reason


def test_unsupported_elements_skip_their_case_and_its_dependents_naming_them(manifest) -> None:
    stand_in = StandIn()
    results, _runner = _run(manifest, stand_in, ["T-03", "T-04", "T-05"])
    assert results["T-03"].verdict == SKIP
    assert results["T-03"].reason == "unsupported by this runner: t/odd/odd: ExpectedContents/HasSomethingNew"
    assert results["T-04"].verdict == SKIP and results["T-04"].reason.startswith("depends on T-03, skipped (")
    assert results["T-05"].verdict == SKIP
    assert "testplan TestStep/StoredQueryTransaction/AssignNewUuid" in results["T-05"].reason
    assert stand_in.sent == []  # nothing judged on less than its testplan asks


def test_unknown_manifest_vocabulary_is_named(manifest) -> None:
    step = manifest.steps["t/plan/plan"]
    step.transaction = "ITI-57"
    step.raw.update({"useObjectRef": True,
                     "bind": {"$a$": {"config": "gatewayId"}, "$b$": {"xpathOf": "x"}},
                     "expect": {"status": ["Warning"], "assertions": [{"id": "k", "process": "sameKOSDcm"}]}})
    found = step.unsupported()
    assert "unknown transaction 'ITI-57'" in found and "step key 'useObjectRef'" in found
    assert "binding $a$: config value 'gatewayId'" in found
    assert any(f.startswith("binding $b$: binding kind") for f in found)
    assert "expected status 'Warning'" in found
    assert "Assert@process='sameKOSDcm' in a ITI-57 step" in found


# --- bindings to the systems under test's configuration ------------------------------------------

def _record(runner: Runner, step_id: str, response: etree._Element) -> None:
    record = StepRecord(runner.manifest.steps[step_id])
    record.exchange = Exchange(200, None, response)
    runner.records[step_id] = record


def _bind(runner: Runner, binding: dict) -> str:
    step = runner.manifest.steps["t/after/after"]
    return runner._resolve(step, StepRecord(step), "$s$", binding)


def test_repository_unique_id_from_the_command_line_or_discovered_else_named(manifest) -> None:
    _results, runner = _run(manifest, StandIn(), [], repository_unique_id="1.2.840.99")
    assert _bind(runner, {"config": "repositoryUniqueId"}) == "1.2.840.99"
    _results, runner = _run(manifest, StandIn(), [])
    with pytest.raises(StepError, match="--repository-unique-id"):
        _bind(runner, {"config": "repositoryUniqueId"})
    runner.provided_unique_ids.add("1.2.3")
    eo = (f'<rim:ExtrinsicObject id="urn:uuid:d" objectType="{STABLE}">{repository_slot("1.2.840.77")}'
          '<rim:ExternalIdentifier identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" '
          'value="1.2.3" registryObject="urn:uuid:d"/></rim:ExtrinsicObject>')
    runner._discover_repository_unique_id(query_response(eo))
    assert _bind(runner, {"config": "repositoryUniqueId"}) == "1.2.840.77"


def test_use_repository_unique_id_needs_one_repository_in_the_query_result(manifest) -> None:
    _results, runner = _run(manifest, StandIn(), [])
    _record(runner, "t/odd/odd", query_response(entry("a", slots=repository_slot("1.9")) * 2))
    assert _bind(runner, {"from": "t/odd/odd", "key": "repositoryUniqueId"}) == "1.9"
    _record(runner, "t/odd/odd", query_response(entry("a", slots=repository_slot("1.9"))
                                                + entry("b", slots=repository_slot("1.8"))))
    with pytest.raises(StepError, match="several repositoryUniqueIds"):
        _bind(runner, {"from": "t/odd/odd", "key": "repositoryUniqueId"})
    _record(runner, "t/odd/odd", query_response(""))
    with pytest.raises(StepError, match="no DocumentEntry"):
        _bind(runner, {"from": "t/odd/odd", "key": "repositoryUniqueId"})


def test_use_xpath_reads_the_earlier_step_log(manifest) -> None:
    _results, runner = _run(manifest, StandIn(), [])
    _record(runner, "t/odd/odd", query_response(entry("urn:uuid:x1")))
    xpath = "StoredQueryTransaction/Result//*[local-name()='ExtrinsicObject']/@id"
    assert _bind(runner, {"from": "t/odd/odd", "xpath": xpath}) == "urn:uuid:x1"
    with pytest.raises(StepError, match="matches nothing"):
        _bind(runner, {"from": "t/odd/odd", "xpath": "//Nothing"})


def test_imaging_source_unique_id_addresses_the_rad69_request(corpus_dir: Path) -> None:
    corpus = load_manifest(corpus_dir / "manifest.yaml")
    step = corpus.steps["ids_4811/Rad69RetrieveRequest/retrieve"]

    def repository_ids(**config) -> set[str]:
        runner = Runner(corpus, Config(endpoints={}, feed_configured=False, **config),
                        PatientPool(corpus.patients, None), progress=io.StringIO())
        record = StepRecord(step)
        request, _a = runner.build_request(step, record, runner.bindings(step, record))
        return {text_of(e) for e in descendants(request, "RepositoryUniqueId")}

    assert repository_ids() == {NIST_IMAGING_SOURCE_UNIQUE_ID}
    assert repository_ids(imaging_source_unique_id="1.2.840.5") == {"1.2.840.5"}
