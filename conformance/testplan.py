"""The NIST testplan vocabulary the runner implements, and the check that names whatever it does not.

The corpus keeps every ``testplan.xml`` verbatim (they *are* the expectations) and ``manifest.yaml``
restates them (corpus README §7).  A step is only judged when the runner understands all of both:

* :data:`VOCABULARY` lists every testplan element the runner knows, with where it may appear, its
  attributes and how the runner handles it (implemented, or documentation only).  :func:`scan_testplan`
  walks the ``TestStep`` of a manifest step and returns each element, attribute or attribute value it
  does not know, so the runner can SKIP the case naming it instead of silently judging less than the
  testplan asks (``AssignNewUuid``, ``UseObjectRef``, ``NoConvert``, ``UseId@value``, …).
* the manifest restatement of ``ExpectedContents/DocumentEntries`` (``MustOnlyInclude`` / ``Include`` /
  ``Exclude`` lists of ``DocumentEntry`` with a nested ``UseId`` and ``DocumentEntryType``) is parsed by
  :func:`parse_document_entries`; testkit-shaped ``UseId`` / ``UseReport`` / ``UseRepositoryUniqueId`` /
  ``UseXPath`` references become manifest bindings through :func:`testkit_binding`.

Semantics follow the toolkit (usnistgov/iheos-toolkit2 ``gov.nist.toolkit.testengine``: ``Validator``,
``Linkage``, ``BasicTransaction``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from conformance.xmlutil import XmlError, children, local, parse


class UnsupportedError(ValueError):
    """A testplan or manifest element the runner does not implement; the message names it."""


# --- ExpectedContents (toolkit Validator.run_test_assertion) ----------------------------------

#: ExpectedContents children that carry ``count`` (manifest: ``{Documents: 2}``).
CONTENTS_COUNTS = frozenset({"Documents", "SubmissionSets", "Folders", "Associations", "ObjectRefs"})
#: ExpectedContents children without attributes (manifest: a plain string).
CONTENTS_FLAGS = frozenset({
    "None", "SSwithOneDoc", "SSwithOneDocOnly", "SSwithTwoDoc", "SSwithOneFol", "SSwithOneDocOneFol",
    "SSwithTwoDocOneFol", "SSwithTwoDocOneFolOneDocInFol", "NoSubmissionSet", "NoDocument", "SSApproved",
    "DocApp", "DocDep", "OneDocApp", "OneDocDep", "FolApp", "HasRPLC", "HasAPND", "HasXFRM", "HasXFRM_RPLC",
    "DocRplcDoc", "HasSnapshotPattern",
})
#: ``ExpectedContents/DocumentEntries``: the selections of ``Validator.verifyDocumentEntries``.
DOCUMENT_ENTRIES = "DocumentEntries"
ENTRY_FILTERS = ("MustOnlyInclude", "Include", "Exclude")

#: ``Assert/@process`` values per manifest transaction.
ASSERTION_PROCESSES: dict[str, frozenset[str]] = {
    "CHECK-RAD69-RESPONSE": frozenset({"sameRetImgs", "sameDcmImgs", "registryErrorListNotEmpty"}),
    "CHECK-IDS-OUTPUT": frozenset({"sameKOSDcm", "sameKOSMetadata"}),
}

#: ``UseId/@section`` -> the export prefix of the manifest (README §7: ``uid.X``, ``uuid.X``, ``patient.X``).
USE_ID_SECTIONS = {"AssignedUids": "uid", "AssignedUuids": "uuid", "AssignedPatientId": "patient"}


@dataclass(frozen=True)
class DocumentEntrySpec:
    """One ``DocumentEntry`` of a selection: the entryUUID its ``UseId`` yields, optionally its objectType.

    ``use_id`` is what the manifest holds: a symbol bound by the step (``$docid$``), a literal
    ``urn:uuid:``, a binding (``{from, key}``) or a testkit-shaped UseId (``{testdir, step, section, id}``).
    """

    use_id: str | Mapping[str, Any]
    document_entry_type: str | None = None


@dataclass(frozen=True)
class DocumentEntriesSpec:
    """``ExpectedContents/DocumentEntries``: (filter, entries) selections plus a type every entry must have."""

    selections: tuple[tuple[str, tuple[DocumentEntrySpec, ...]], ...] = ()
    document_entry_type: str | None = None

    def use_ids(self) -> list[str | Mapping[str, Any]]:
        return [e.use_id for _f, entries in self.selections for e in entries]


def _pairs(value: Any, where: str) -> list[tuple[str, Any]]:
    """A mapping, or a list of one-key mappings (YAML for repeated XML children), as (key, value) pairs."""
    if isinstance(value, Mapping):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(i, Mapping) and len(i) == 1 for i in value):
        return [(str(k), v) for i in value for k, v in i.items()]
    raise UnsupportedError(f"{where}: expected child elements, got {value!r}")


def _is_reference(value: Mapping[str, Any]) -> bool:
    return bool(value.keys() & {"from", "step", "symbol", "id", "testdir", "reportName"}) and "UseId" not in value


def _entry(value: Any, where: str, default_type: str | None) -> DocumentEntrySpec:
    if isinstance(value, str):
        return DocumentEntrySpec(value, default_type)
    if not isinstance(value, Mapping):
        raise UnsupportedError(f"{where}: unreadable DocumentEntry {value!r}")
    if _is_reference(value):
        return DocumentEntrySpec(value, default_type)
    use_id: str | Mapping[str, Any] | None = None
    entry_type = default_type
    for key, item in value.items():
        if key == "UseId" and isinstance(item, str | Mapping):
            use_id = item
        elif key == "DocumentEntryType" and isinstance(item, str):
            entry_type = item
        else:
            raise UnsupportedError(f"{where}/{key}")
    if use_id is None:
        raise UnsupportedError(f"{where}: DocumentEntry without UseId")
    return DocumentEntrySpec(use_id, entry_type)


def _entries(value: Any, where: str) -> tuple[DocumentEntrySpec, ...]:
    if isinstance(value, str):
        return (DocumentEntrySpec(value),)
    if isinstance(value, list) and not all(isinstance(i, Mapping) and set(i) <= {"DocumentEntry"} for i in value):
        return tuple(_entry(i, f"{where}/DocumentEntry", None) for i in value)
    if isinstance(value, Mapping) and _is_reference(value):
        return (DocumentEntrySpec(value),)
    pairs = _pairs(value, where)
    default_type = next((str(v) for k, v in pairs if k == "DocumentEntryType"), None)
    out: list[DocumentEntrySpec] = []
    for key, item in pairs:
        if key == "DocumentEntry":
            items = item if isinstance(item, list) else [item]
            out += [_entry(i, f"{where}/DocumentEntry", default_type) for i in items]
        elif key == "UseId":
            out.append(DocumentEntrySpec(item, default_type))
        elif key != "DocumentEntryType":
            raise UnsupportedError(f"{where}/{key}")
    if not out:
        raise UnsupportedError(f"{where}: no DocumentEntry")
    return tuple(out)


def parse_document_entries(value: Any) -> DocumentEntriesSpec:
    """The manifest form of ``ExpectedContents/DocumentEntries`` (YAML of the XML, element names kept).

    Accepted: ``{MustOnlyInclude|Include|Exclude: <entries>, DocumentEntryType: <objectType>}`` where
    ``<entries>`` is a ``DocumentEntry`` (or a list of them), each ``{UseId: <ref>, DocumentEntryType: …}``
    or just the ``<ref>``.  Anything else raises :class:`UnsupportedError` naming the element.
    """
    where = "ExpectedContents/DocumentEntries"
    selections: list[tuple[str, tuple[DocumentEntrySpec, ...]]] = []
    entry_type: str | None = None
    for key, item in _pairs(value, where):
        if key in ENTRY_FILTERS:
            selections.append((key, _entries(item, f"{where}/{key}")))
        elif key == "DocumentEntryType" and isinstance(item, str):
            entry_type = item
        else:
            raise UnsupportedError(f"{where}/{key}")
    if not selections and entry_type is None:
        raise UnsupportedError(f"{where}: empty")
    return DocumentEntriesSpec(tuple(selections), entry_type)


# --- testkit references -> manifest bindings (toolkit Linkage) --------------------------------

def _test_of(section: str) -> str:
    return section.rsplit("/", 1)[0] if "/" in section else section


def testkit_binding(spec: Mapping[str, Any], section: str) -> dict[str, str]:
    """A testkit-shaped reference as a manifest binding (``{from, key}`` or ``{from, xpath}``).

    ``section`` is the ``<test>/<section>`` of the step holding the reference; ``testdir`` is relative
    to that section's folder (omitted = this section), ``UseReport``'s ``test`` / ``section``
    (``THIS`` = this section) name the step like the toolkit's log lookup does.  Already-converted
    bindings (with ``from``) are returned unchanged.
    """
    if "from" in spec:
        return {str(k): str(v) for k, v in spec.items()}
    step = str(spec.get("step") or "")
    if not step:
        raise UnsupportedError(f"reference without step: {dict(spec)!r}")
    if "reportName" in spec:  # UseReport
        test = str(spec.get("test") or _test_of(section))
        name = str(spec.get("section") or "THIS")
        folder = section if name == "THIS" else f"{test}/{name}"
        return {"from": f"{folder}/{step}", "key": f"report.{spec['reportName']}"}
    testdir = str(spec.get("testdir") or "")
    folder = posixpath.normpath(posixpath.join(section, testdir)) if testdir else section
    if "xpath" in spec:  # UseXPath (testdir form)
        return {"from": f"{folder}/{step}", "xpath": str(spec["xpath"])}
    if "id" not in spec and "section" not in spec:  # UseRepositoryUniqueId
        return {"from": f"{folder}/{step}", "key": "repositoryUniqueId"}
    prefix = USE_ID_SECTIONS.get(str(spec.get("section") or ""))
    if prefix is None or not spec.get("id"):
        raise UnsupportedError(f"UseId@section={spec.get('section')!r}")
    return {"from": f"{folder}/{step}", "key": f"{prefix}.{spec['id']}"}


# --- the testplan vocabulary ------------------------------------------------------------------

TRANSACTIONS = frozenset({
    "RegisterTransaction", "ProvideAndRegisterTransaction", "StoredQueryTransaction", "RetrieveTransaction",
    "MPQTransaction", "ImagingDocSetRetrieveTransaction", "PatientIdentityFeedTransaction", "NullTransaction",
    "XmlDetailTransaction", "ImgDetailTransaction",
})


@dataclass(frozen=True)
class Element:
    """One testplan element kind: where it may appear, its attributes, how the runner handles it."""

    handling: str
    parents: frozenset[str] = frozenset()          # empty = the root
    attributes: frozenset[str] = frozenset()
    values: Mapping[str, frozenset[str]] = field(default_factory=dict)  # attribute -> accepted values
    opaque: bool = False                           # content is text/data, not vocabulary


def _e(handling: str, parents: Iterable[str] = (), attributes: Iterable[str] = (),
       values: Mapping[str, Iterable[str]] | None = None, opaque: bool = False) -> Element:
    return Element(handling, frozenset(parents), frozenset(attributes),
                   {k: frozenset(v) for k, v in (values or {}).items()}, opaque)


_T = TRANSACTIONS
_ASSERT_PROCESSES = frozenset().union(*ASSERTION_PROCESSES.values())

#: element -> how the runner handles it (manifest key in brackets).  Everything else is unsupported.
VOCABULARY: dict[str, Element] = {
    "TestPlan": _e("root"),
    "Test": _e("documentation (test id)", {"TestPlan"}, opaque=True),
    "Rule": _e("documentation", {"TestPlan", "TestStep"}, opaque=True),
    "Goal": _e("documentation [goal]", {"TestStep"}, opaque=True),
    "TestStep": _e("one manifest step [id]", {"TestPlan"}, {"id"}),
    "ExpectedStatus": _e("status must end in one of the values [expect.status]", {"TestStep"}, opaque=True),
    "ExpectedErrorMessage": _e("substring of an Error's errorCode/codeContext [expect.errorMessageContains]",
                               {"TestStep"}, opaque=True),
    "ExpectedErrorCode": _e("equals a returned errorCode [expect.errorCode]", {"TestStep"}, opaque=True),
    "AltPatientId": _e("never-fed patient P_UNKNOWN [patient]", {"TestStep"}),
    "NewPatientId": _e("fresh unfed patient P_NEW [SETUP]", {"TestStep"}),
    "Standard": _e("gold response, informative; sameRetImgs judges against the request", {"TestStep"},
                   opaque=True),
    **{t: _e("sent and judged [transaction]", {"TestStep"}) for t in TRANSACTIONS},
    "XDSb": _e("SOAP 1.2 + WS-Addressing (always)", _T),
    "MetadataFile": _e("request body [request.body]", _T, opaque=True),
    "NoPatientId": _e("placeholders only [patient.mode: placeholder]", _T),
    "NoMetadata": _e("patient feed without metadata [PIF]", {"PatientIdentityFeedTransaction"}),
    "AssignUuids": _e("symbolic ids -> urn:uuid [assign.uuids]", _T),
    "Exclude": _e("AssignUuids: keep that scheme's uniqueIds [assign.uniqueIdExcludeSchemes]; DocumentEntries: "
                  "listed entries must be absent", {"AssignUuids", "DocumentEntries"}, {"value"}),
    "NoAssignUids": _e("keep that object's uniqueId [assign.uniqueIdExcludeObjects]", _T, {"id"}),
    "UseId": _e("binding to an earlier step's id map [bind: from/key uid.|uuid.|patient.]", _T | {"DocumentEntry"},
                {"testdir", "step", "section", "id", "symbol"}, {"section": USE_ID_SECTIONS}),
    "UseReport": _e("binding to an earlier step's report [bind: from/key report.]", _T,
                    {"test", "section", "step", "reportName", "useAs"}),
    "UseRepositoryUniqueId": _e("repositoryUniqueId of an earlier query result [bind: key repositoryUniqueId]",
                                _T, {"testdir", "step", "symbol"}),
    "UseXPath": _e("XPath over an earlier step's log [bind: from/xpath]", _T, {"testdir", "step", "symbol"},
                   opaque=True),
    "Report": _e("publish an XPath value [reports]", _T, {"name", "section"},
                 {"section": {"InputMetadata", "Result"}}, opaque=True),
    "WaitBefore": _e("pause before sending [waitBeforeMs]", _T, opaque=True),
    "Document": _e("MTOM attachment [request.documents]", {"ProvideAndRegisterTransaction"}, {"id"}, opaque=True),
    "ReferenceDocument": _e("byte comparison [expect.retrievedDocumentsEqual]", _T, {"uid"}, opaque=True),
    "ReferenceMetadata": _e("mimeType/hash/size against a query result [expect.compareWithQueryResultOf]", _T,
                            {"testdir", "step"}),
    "ExpectedContents": _e("query result shape [expect.contents]", _T),
    **{n: _e("count [expect.contents]", {"ExpectedContents"}, {"count"}) for n in CONTENTS_COUNTS},
    **{n: _e("shape/status check [expect.contents]", {"ExpectedContents"}) for n in CONTENTS_FLAGS},
    DOCUMENT_ENTRIES: _e("bound DocumentEntries [expect.contents: {DocumentEntries: …}]", {"ExpectedContents"}),
    "MustOnlyInclude": _e("exactly the listed DocumentEntries", {DOCUMENT_ENTRIES}),
    "Include": _e("the listed DocumentEntries are present", {DOCUMENT_ENTRIES}),
    "DocumentEntry": _e("one listed entry (its UseId yields the entryUUID)", set(ENTRY_FILTERS)),
    "DocumentEntryType": _e("objectType of the entry / of every entry", {"DocumentEntry", DOCUMENT_ENTRIES},
                            opaque=True),
    "Assertions": _e("checks [expect.assertions]", _T),
    "DataRef": _e("assertions see this section's log", {"Assertions"}, {"file", "as"},
                  {"file": {"THIS"}, "as": {"output"}}),
    "Assert": _e("XPath 1.0 over the section log, or a named XDS-I process [expect.assertions]", {"Assertions"},
                 {"id", "process"}, {"process": _ASSERT_PROCESSES}),
    "SimReference": _e("what the IDS submitted for pid [assertions.submittedFor]", {"Assert"},
                       {"id", "actor", "transaction", "pid"}),
    "TestResponse": _e("the RAD-69 response judged [assertions.response_of]", {"Assert"}, {"testDir", "step"}),
    "TagList": _e("DICOM keywords compared [assertions.dicomTags]", {"Assert"}, opaque=True),
    "DirList": _e("reference image folders [assertions.referenceImages]", {"Assert"}),
    "StdDir": _e("one reference image folder", {"DirList"}, opaque=True),
}


def scan_testplan(path: Path, local_id: str) -> list[str]:
    """Everything in ``path``'s TestPlan and ``TestStep id=local_id`` the runner does not implement.

    Findings read ``TestStep/RegisterTransaction/UseObjectRef`` (element), ``…/UseId@value``
    (attribute) or ``…/DataRef@file='log.xml'`` (attribute value).  An unreadable testplan is one finding.
    """
    try:
        root = parse(path.read_bytes())
    except (OSError, XmlError) as exc:
        return [f"testplan {path.name} unreadable: {exc}"]
    findings: list[str] = []
    if local(root) != "TestPlan":
        return [f"root element {local(root)}"]
    steps = [c for c in children(root, "TestStep") if c.get("id") == local_id]
    if not steps:
        findings.append(f"TestStep id={local_id!r} not in {path.name}")
    for child in children(root):
        if local(child) != "TestStep" or child in steps:
            _check(child, "TestPlan", "", findings)
    return list(dict.fromkeys(findings))


def _check(element: etree._Element, parent: str, path: str, findings: list[str]) -> None:
    name = local(element)
    here = f"{path}/{name}" if path else name
    spec = VOCABULARY.get(name)
    if spec is None or parent not in spec.parents:
        findings.append(here)
        return
    for attribute, value in element.attrib.items():
        attr = etree.QName(attribute).localname
        if attr not in spec.attributes:
            findings.append(f"{here}@{attr}")
        elif attr in spec.values and value not in spec.values[attr]:
            findings.append(f"{here}@{attr}={value!r}")
    if not spec.opaque:
        for child in children(element):
            _check(child, name, here, findings)


__all__ = [
    "ASSERTION_PROCESSES", "CONTENTS_COUNTS", "CONTENTS_FLAGS", "DOCUMENT_ENTRIES", "ENTRY_FILTERS",
    "DocumentEntriesSpec", "DocumentEntrySpec", "UnsupportedError", "VOCABULARY", "parse_document_entries",
    "scan_testplan", "testkit_binding",
]
