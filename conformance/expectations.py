"""Judging a response against a manifest step's ``expect`` (conformance README §5, CASES.md legend).

Every check returns a list of findings (empty = passed) so a step reports all
its problems at once.  The functions read plain lxml trees by local name: a
vendor's prefixes and namespace declarations are its own business.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lxml import etree

from conformance.testplan import (
    DOCUMENT_ENTRIES,
    DocumentEntriesSpec,
    UnsupportedError,
    parse_document_entries,
)
from conformance.transforms import substitute_string
from conformance.xmlutil import children, descendants, first, local, text_of
from xds_core.vocabulary import (
    ClassificationNode,
    IdentificationScheme,
    ObjectType,
)

SS_NODE = ClassificationNode.SUBMISSION_SET.value
FOLDER_NODE = ClassificationNode.FOLDER.value
DE_UNIQUE_ID = IdentificationScheme.DocumentEntry_uniqueId.value
SS_UNIQUE_ID = IdentificationScheme.SubmissionSet_uniqueId.value
FOLDER_UNIQUE_ID = IdentificationScheme.Folder_uniqueId.value


# --- status and errors ----------------------------------------------------------------

@dataclass(frozen=True)
class ReportedError:
    error_code: str
    code_context: str
    severity: str

    @property
    def is_error(self) -> bool:
        # rs.xsd: severity defaults to ...ErrorSeverityType:Error when absent.
        return not self.severity or self.severity.endswith("Error")


def response_status(body: etree._Element | None) -> str | None:
    """``@status`` of a RegistryResponse / AdhocQueryResponse, or of the RegistryResponse inside a retrieve answer."""
    if body is None:
        return None
    if local(body) in ("RegistryResponse", "AdhocQueryResponse") and body.get("status"):
        return body.get("status")
    inner = first(body, "RegistryResponse")
    return inner.get("status") if inner is not None else None


def reported_errors(body: etree._Element | None) -> list[ReportedError]:
    if body is None:
        return []
    return [ReportedError(e.get("errorCode", ""), e.get("codeContext", "") or text_of(e), e.get("severity", ""))
            for e in descendants(body, "RegistryError")]


def check_status(expected: list[str], status: str | None, fault: str | None) -> list[str]:
    """Status must end in one of ``expected`` (any-of); ``Fault`` = a SOAP Fault is the pass condition."""
    if fault is not None:
        return [] if "Fault" in expected else [f"SOAP Fault instead of {'/'.join(expected)}: {fault}"]
    if "Fault" in expected and len(expected) == 1:
        return [f"expected a SOAP Fault, got status {status}"]
    if status is None:
        return ["response carries no status"]
    suffix = status.rsplit(":", 1)[-1]
    if any(suffix == e for e in expected if e != "Fault"):
        return []
    return [f"status {suffix}, expected {' or '.join(expected)}"]


def check_error_message(expected: str, errors: list[ReportedError]) -> list[str]:
    """ExpectedErrorMessage: substring of codeContext or errorCode of an Error-severity RegistryError."""
    if any(expected in e.error_code or expected in e.code_context for e in errors if e.is_error):
        return []
    return [f"no RegistryError mentioning {expected} (got {describe_errors(errors)})"]


def check_error_code(expected: str, errors: list[ReportedError]) -> list[str]:
    """ExpectedErrorCode: equals one returned errorCode, any severity."""
    if any(e.error_code == expected for e in errors):
        return []
    return [f"no errorCode {expected} (got {describe_errors(errors)})"]


def describe_errors(errors: list[ReportedError]) -> str:
    if not errors:
        return "no RegistryError"
    return ", ".join(f"{e.error_code or '?'}" + (f" '{e.code_context[:80]}'" if e.code_context else "")
                     for e in errors[:4]) + (" ..." if len(errors) > 4 else "")


# --- contents (SQ/MPQ) ----------------------------------------------------------------

@dataclass
class QueryContents:
    """The RegistryObjectList of an AdhocQueryResponse, sorted by kind."""

    documents: list[etree._Element]
    submission_sets: list[etree._Element]
    folders: list[etree._Element]
    associations: list[etree._Element]
    object_refs: list[etree._Element]
    others: list[etree._Element]

    @classmethod
    def of(cls, body: etree._Element | None) -> QueryContents:
        object_list = first(body, "RegistryObjectList") if body is not None else None
        objects = children(object_list) if object_list is not None else []
        loose = [o for o in objects if local(o) == "Classification"]
        packages = [o for o in objects if local(o) == "RegistryPackage"]
        ss = [p for p in packages if _package_kind(p, loose) == "ss"]
        fol = [p for p in packages if _package_kind(p, loose) == "folder"]
        return cls(
            documents=[o for o in objects if local(o) == "ExtrinsicObject"],
            submission_sets=ss, folders=fol,
            associations=[o for o in objects if local(o) == "Association"],
            object_refs=[o for o in objects if local(o) == "ObjectRef"],
            others=[o for o in objects if local(o) not in (
                "ExtrinsicObject", "RegistryPackage", "Association", "ObjectRef", "Classification")]
            + [p for p in packages if p not in ss and p not in fol],
        )

    def has_member(self, source: etree._Element, target: etree._Element, kind: str = "HasMember") -> bool:
        return any(a.get("sourceObject") == source.get("id") and a.get("targetObject") == target.get("id")
                   and (a.get("associationType") or "").endswith(kind) for a in self.associations)


def _package_kind(package: etree._Element, loose: list[etree._Element]) -> str | None:
    pid = package.get("id")
    nodes = {c.get("classificationNode") for c in children(package, "Classification")}
    nodes |= {c.get("classificationNode") for c in loose if c.get("classifiedObject") == pid}
    schemes = {e.get("identificationScheme") for e in children(package, "ExternalIdentifier")}
    if SS_NODE in nodes or SS_UNIQUE_ID in schemes:
        return "ss"
    if FOLDER_NODE in nodes or FOLDER_UNIQUE_ID in schemes:
        return "folder"
    return None


def _status_is(element: etree._Element, status: str) -> bool:
    return (element.get("status") or "").rsplit(":", 1)[-1] == status


def _count(label: str, items: list[etree._Element], n: int) -> list[str]:
    return [] if len(items) == n else [f"{len(items)} {label}, expected {n}"]


def _shape(c: QueryContents, *, docs: int, folders: int) -> list[str]:
    problems = _count("SubmissionSets", c.submission_sets, 1) + _count("Documents", c.documents, docs)
    problems += _count("Folders", c.folders, folders)
    if problems:
        return problems
    ss = c.submission_sets[0]
    for member in c.documents + c.folders:
        if not c.has_member(ss, member):
            problems.append(f"no SubmissionSet HasMember association to {member.get('id')}")
    if not _status_is(ss, "Approved"):
        problems.append(f"SubmissionSet status {ss.get('status')}, expected Approved")
    return problems


#: Resolves a ``DocumentEntry/UseId`` of the manifest to the entryUUID it names; raises ValueError.
UseIdResolver = Callable[[str | Mapping[str, Any]], str]


def check_contents(items: Iterable[Any], body: etree._Element | None, *,
                   symbols: dict[str, str] | None = None, resolve: UseIdResolver | None = None) -> list[str]:
    """``expect.contents`` per the CASES.md legend and the toolkit's ``Validator``.

    ``DocumentEntries`` UseIds given as symbols are looked up in ``symbols``; references to other
    steps (``{from, key}`` or testkit-shaped) need ``resolve`` (the runner's binding resolver).
    """
    c = QueryContents.of(body)
    problems: list[str] = []
    for item in items:
        if isinstance(item, dict):
            for key, value in item.items():
                if key == DOCUMENT_ENTRIES:
                    problems += _document_entries(c, value, symbols or {}, resolve)
                elif isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
                    problems += _contents_count(c, str(key), int(value))
                else:
                    problems.append(f"unknown contents expectation {key!r}")
            continue
        name = str(item)
        if name == "None":
            if c.submission_sets or c.documents or c.folders or c.associations:
                problems.append(f"expected nothing, got {len(c.submission_sets)} SubmissionSets, "
                                f"{len(c.documents)} Documents, {len(c.folders)} Folders, "
                                f"{len(c.associations)} Associations")
        elif name == "SSwithOneDoc":
            problems += _shape(c, docs=1, folders=0) + _count("Associations", c.associations, 1)
        elif name == "SSwithOneDocOnly":  # SSwithOneDoc without the SubmissionSet status check
            found = _count("SubmissionSets", c.submission_sets, 1) + _count("Documents", c.documents, 1)
            found += _count("Associations", c.associations, 1)
            if not found and not c.has_member(c.submission_sets[0], c.documents[0]):
                found.append(f"no SubmissionSet HasMember association to {c.documents[0].get('id')}")
            problems += found
        elif name == "NoSubmissionSet":
            problems += _count("SubmissionSets", c.submission_sets, 0)
        elif name == "NoDocument":
            problems += _count("Documents", c.documents, 0)
        elif name == "DocRplcDoc":
            problems += _doc_rplc_doc(c)
        elif name == "HasSnapshotPattern":
            problems += _snapshot_pattern(c)
        elif name == "SSwithTwoDoc":
            problems += _shape(c, docs=2, folders=0) + _count("Associations", c.associations, 2)
        elif name == "SSwithOneFol":
            problems += _shape(c, docs=0, folders=1)
        elif name in ("SSwithOneDocOneFol", "SSwithTwoDocOneFol", "SSwithTwoDocOneFolOneDocInFol"):
            docs = 1 if name == "SSwithOneDocOneFol" else 2
            found = _shape(c, docs=docs, folders=1)
            problems += found
            if not found and name != "SSwithTwoDocOneFol":
                folder = c.folders[0]
                in_folder = [d for d in c.documents if c.has_member(folder, d)]
                if len(in_folder) != 1:
                    problems.append(f"{len(in_folder)} DocumentEntries in the Folder, expected 1")
        elif name in ("DocApp", "DocDep"):
            wanted = "Approved" if name == "DocApp" else "Deprecated"
            if not c.documents:
                problems.append(f"no DocumentEntry to be {wanted}")
            problems += [f"DocumentEntry {d.get('id')} is {d.get('status')}, expected {wanted}"
                         for d in c.documents if not _status_is(d, wanted)]
        elif name in ("OneDocApp", "OneDocDep"):
            wanted = "Approved" if name == "OneDocApp" else "Deprecated"
            n = sum(_status_is(d, wanted) for d in c.documents)
            if n != 1:
                problems.append(f"{n} {wanted} DocumentEntries, expected exactly 1")
        elif name == "SSApproved":
            if not c.submission_sets:
                problems.append("no SubmissionSet")
            problems += [f"SubmissionSet {s.get('id')} is {s.get('status')}"
                         for s in c.submission_sets if not _status_is(s, "Approved")]
        elif name == "FolApp":
            if not c.folders:
                problems.append("no Folder")
            problems += [f"Folder {f.get('id')} is {f.get('status')}"
                         for f in c.folders if not _status_is(f, "Approved")]
        elif name.startswith("Has") and name[3:] in ("XFRM_RPLC", "RPLC", "APND", "XFRM"):
            kind = name[3:]
            found_assocs = [a for a in c.associations
                            if (a.get("associationType") or "").rsplit(":", 1)[-1] == kind]
            targets = [a.get("targetObject") for a in found_assocs]
            if not found_assocs:
                problems.append(f"no {kind} association")
            elif len(set(targets)) != len(targets):
                problems.append(f"several {kind} associations for one target")
        else:
            problems.append(f"unknown contents expectation {name!r}")
    return problems


def _doc_rplc_doc(c: QueryContents) -> list[str]:
    """Toolkit ``docRplcDoc``: two DocumentEntries, one RPLC association from the Approved one to the
    Deprecated one."""
    problems = _count("Documents", c.documents, 2) + _count("Associations", c.associations, 1)
    if problems:
        return problems
    approved = [d for d in c.documents if _status_is(d, "Approved")]
    if len(approved) != 1:
        return [f"{len(approved)} Approved DocumentEntries, expected 1 (the replacement)"]
    new = approved[0]
    old = next(d for d in c.documents if d is not new)
    if not _status_is(old, "Deprecated"):
        problems.append(f"replaced DocumentEntry {old.get('id')} is {old.get('status')}, expected Deprecated")
    if not any(a.get("sourceObject") == new.get("id") and a.get("targetObject") == old.get("id")
               and (a.get("associationType") or "").rsplit(":", 1)[-1] == "RPLC" for a in c.associations):
        problems.append(f"no RPLC association {new.get('id')} -> {old.get('id')}")
    return problems


def _snapshot_pattern(c: QueryContents) -> list[str]:
    """Toolkit ``hasSnapshotPattern``: one IsSnapshotOf from an Approved stable entry to an Approved On-Demand one."""
    snapshots = [a for a in c.associations if (a.get("associationType") or "").endswith(":IsSnapshotOf")]
    if len(snapshots) != 1:
        return [f"{len(snapshots)} IsSnapshotOf associations, expected 1"]
    by_id = {d.get("id"): d for d in c.documents}
    source, target = by_id.get(snapshots[0].get("sourceObject")), by_id.get(snapshots[0].get("targetObject"))
    if source is None or target is None:
        return ["the IsSnapshotOf source or target DocumentEntry is not in the result"]
    problems = [f"DocumentEntry {d.get('id')} is {d.get('status')}, expected Approved"
                for d in (source, target) if not _status_is(d, "Approved")]
    if source.get("objectType") != ObjectType.STABLE_DOCUMENT_ENTRY.value:
        problems.append(f"snapshot objectType {source.get('objectType')}, expected the stable DocumentEntry type")
    if target.get("objectType") != ObjectType.ON_DEMAND_DOCUMENT_ENTRY.value:
        problems.append(f"target objectType {target.get('objectType')}, expected the On-Demand DocumentEntry type")
    return problems


def _contents_count(c: QueryContents, key: str, n: int) -> list[str]:
    if key == "Documents":
        return _count("Documents", c.documents, n)
    if key == "SubmissionSets":
        return _count("SubmissionSets", c.submission_sets, n)
    if key == "Folders":
        return _count("Folders", c.folders, n)
    if key == "Associations":
        return _count("Associations", c.associations, n)
    if key == "ObjectRefs":
        problems = _count("ObjectRefs", c.object_refs, n)
        extra = len(c.documents) + len(c.submission_sets) + len(c.folders) + len(c.associations) + len(c.others)
        if extra:
            problems.append(f"{extra} objects besides ObjectRefs")
        return problems
    return [f"unknown contents count {key!r}"]


def _document_entries(c: QueryContents, value: Any, symbols: dict[str, str],
                      resolve: UseIdResolver | None) -> list[str]:
    """``ExpectedContents/DocumentEntries`` as the toolkit's ``Validator.verifyDocumentEntries`` judges it:

    * ``MustOnlyInclude``: every listed entry is in the result and the result holds no other DocumentEntry;
    * ``Include``: every listed entry is in the result; ``Exclude``: none of them is;
    * ``DocumentEntry/DocumentEntryType``: the matched entry has that objectType;
      ``DocumentEntries/DocumentEntryType``: every DocumentEntry of the result has it.
    """
    try:
        spec: DocumentEntriesSpec = parse_document_entries(value)
    except UnsupportedError as exc:
        return [f"unsupported: {exc}"]
    by_id = {d.get("id"): d for d in c.documents}
    problems: list[str] = []
    for kind, entries in spec.selections:
        wanted: list[str] = []
        for entry in entries:
            try:
                entry_uuid = _resolve_use_id(entry.use_id, symbols, resolve)
            except ValueError as exc:
                problems.append(f"{kind}: UseId {_label(entry.use_id)} unresolved: {exc}")
                continue
            wanted.append(entry_uuid)
            found = by_id.get(entry_uuid)
            if kind == "Exclude":
                if found is not None:
                    problems.append(f"Exclude: DocumentEntry {entry_uuid} ({_label(entry.use_id)}) is in the result")
            elif found is None:
                problems.append(f"{kind}: DocumentEntry {entry_uuid} ({_label(entry.use_id)}) not in the result "
                                f"(got {sorted(str(i) for i in by_id)})")
            elif entry.document_entry_type and found.get("objectType") != entry.document_entry_type:
                problems.append(f"DocumentEntry {entry_uuid}: objectType {found.get('objectType')}, "
                                f"expected {entry.document_entry_type}")
        if kind == "MustOnlyInclude":
            extra = [str(i) for i in by_id if i not in wanted]
            if extra:
                problems.append(f"MustOnlyInclude: {len(extra)} DocumentEntries besides the listed ones "
                                f"(e.g. {extra[0]})")
    if spec.document_entry_type:
        problems += [f"DocumentEntry {d.get('id')}: objectType {d.get('objectType')}, expected "
                     f"{spec.document_entry_type}" for d in c.documents
                     if d.get("objectType") != spec.document_entry_type]
    return problems


def _label(use_id: str | Mapping[str, Any]) -> str:
    if isinstance(use_id, str):
        return use_id
    return str(use_id.get("symbol") or use_id.get("key") or use_id.get("id") or dict(use_id))


def _resolve_use_id(use_id: str | Mapping[str, Any], symbols: dict[str, str],
                    resolve: UseIdResolver | None) -> str:
    if isinstance(use_id, str):
        value = substitute_string(use_id, symbols).strip()
        if value == use_id.strip() and not value.startswith("urn:uuid:"):
            raise ValueError(f"{use_id} is not bound by the step")
        return value
    if resolve is None:
        raise ValueError("a reference to another step needs the runner")
    return resolve(use_id)


# --- assertions over the synthetic log (README §5) ---------------------------------------

TRANSACTION_ELEMENT = {
    "ITI-42": "RegisterTransaction", "ITI-41": "ProvideAndRegisterTransaction",
    "RAD-68": "ProvideAndRegisterTransaction", "ITI-18": "StoredQueryTransaction",
    "ITI-43": "RetrieveTransaction", "ITI-51": "MPQTransaction", "RAD-69": "ImagingDocSetRetrieveTransaction",
    "CHECK": "NullTransaction", "CHECK-RAD69-RESPONSE": "XmlDetailTransaction",
    "CHECK-IDS-OUTPUT": "ImgDetailTransaction", "PIF": "PatientIdentityFeedTransaction", "SETUP": "NullTransaction",
}


def log_document(entries: list[tuple[str, str, etree._Element | None, etree._Element | None]]) -> etree._Element:
    """``<TestResults><TestStep id><XTransaction><InputMetadata/><Result/>`` per (step id, transaction,
    request, response): the shape of the toolkit's ``log.xml`` that assertions are written against."""
    root = etree.Element("TestResults")
    for step_id, transaction, request, response in entries:
        step = etree.SubElement(root, "TestStep", id=step_id)
        txn = etree.SubElement(step, TRANSACTION_ELEMENT.get(transaction, "NullTransaction"))
        input_metadata = etree.SubElement(txn, "InputMetadata")
        if request is not None:
            input_metadata.append(_copy(request))
        result = etree.SubElement(txn, "Result")
        if response is not None:
            result.append(_copy(response))
    return root


def _copy(element: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(element))


def evaluate_xpath(document: etree._Element, expression: str) -> bool:
    """XPath 1.0 truth value (booleans, numbers, strings, node-sets)."""
    value = document.xpath(expression)
    if isinstance(value, bool):
        return value
    if isinstance(value, float | int):
        return value != 0 and value == value
    if isinstance(value, str):
        return bool(value)
    return bool(value)


def check_assertion(document: etree._Element, assertion_id: str, expression: str,
                    symbols: dict[str, str]) -> list[str]:
    """One ``Assert``: UseReport symbols (also bare words) and ``$DATE$`` substituted first.

    ``$DATE$`` is the tester's date; a registry that stamps UTC may be a day off
    near midnight (CASES.md note 8), so the UTC date is accepted too.
    """
    dates = [datetime.now().strftime("%Y%m%d"), datetime.now(UTC).strftime("%Y%m%d")]
    for date in dict.fromkeys(dates):
        expr = substitute_string(expression, {**symbols, "$DATE$": date})
        try:
            if evaluate_xpath(document, expr):
                return []
        except etree.XPathError as exc:
            return [f"assertion {assertion_id}: bad XPath ({exc}): {expr[:120]}"]
    return [f"assertion {assertion_id} is false: {substitute_string(expression, symbols)[:200]}"]


def xpath_string(element: etree._Element | None, expression: str) -> str | None:
    """String value of a Report XPath (first node), None when nothing matches."""
    if element is None:
        return None
    try:
        value = element.xpath(expression)
    except etree.XPathError:
        return None
    if isinstance(value, list):
        if not value:
            return None
        node = value[0]
        return (node if isinstance(node, str) else text_of(node)).strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- retrieve (ITI-43 / RAD-69) ----------------------------------------------------------

@dataclass
class RetrievedDocument:
    repository_unique_id: str
    document_unique_id: str
    mime_type: str
    content: bytes | None
    problem: str | None = None


def check_retrieved_equal(expected: list[tuple[str, Path]], retrieved: list[RetrievedDocument]) -> list[str]:
    """``retrievedDocumentsEqual``: byte comparison with the file that was attached."""
    problems: list[str] = []
    by_uid = {d.document_unique_id: d for d in retrieved}
    for uid, path in expected:
        doc = by_uid.get(uid)
        if doc is None:
            problems.append(f"document {uid} not returned")
        elif doc.content is None:
            problems.append(f"document {uid}: {doc.problem or 'no content'}")
        elif doc.content != path.read_bytes():
            problems.append(f"document {uid}: {len(doc.content)} bytes differ from {path.name}")
    return problems


def check_against_query(retrieved: list[RetrievedDocument], query_response: etree._Element | None,
                        requested: dict[str, str]) -> list[str]:
    """``compareWithQueryResultOf``: mimeType, SHA-1 and size of each returned document equal the
    DocumentEntry in that query result; RepositoryUniqueId equals the request's (README §5)."""
    if query_response is None:
        return ["no query result to compare with"]
    entries: dict[str, etree._Element] = {}
    for eo in descendants(query_response, "ExtrinsicObject"):
        for ei in children(eo, "ExternalIdentifier"):
            if ei.get("identificationScheme") == DE_UNIQUE_ID:
                entries[ei.get("value", "")] = eo
    problems: list[str] = []
    for doc in retrieved:
        eo = entries.get(doc.document_unique_id)
        if eo is None:
            problems.append(f"document {doc.document_unique_id} not in the query result")
            continue
        if requested.get(doc.document_unique_id) not in (None, doc.repository_unique_id):
            problems.append(f"document {doc.document_unique_id}: RepositoryUniqueId {doc.repository_unique_id}, "
                            f"requested {requested[doc.document_unique_id]}")
        if eo.get("mimeType") != doc.mime_type:
            problems.append(f"document {doc.document_unique_id}: mimeType {doc.mime_type}, "
                            f"registry says {eo.get('mimeType')}")
        if doc.content is None:
            problems.append(f"document {doc.document_unique_id}: {doc.problem or 'no content'}")
            continue
        slots = slot_values(eo)
        sha1 = hashlib.sha1(doc.content).hexdigest()  # noqa: S324 - the XDS hash is SHA-1 by definition
        if slots.get("hash", [""])[0].lower() != sha1:
            problems.append(f"document {doc.document_unique_id}: SHA-1 {sha1}, registry says {slots.get('hash')}")
        if slots.get("size", [""])[0].lstrip("0") != str(len(doc.content)).lstrip("0"):
            problems.append(f"document {doc.document_unique_id}: size {len(doc.content)}, "
                            f"registry says {slots.get('size')}")
    return problems


def slot_values(element: etree._Element) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for slot in children(element, "Slot"):
        out.setdefault(slot.get("name", ""), []).extend(text_of(v) for v in descendants(slot, "Value"))
    return out


def requested_documents(request: etree._Element | None) -> dict[str, str]:
    """DocumentUniqueId -> RepositoryUniqueId of an ITI-43 / RAD-69 request."""
    out: dict[str, str] = {}
    if request is None:
        return out
    for dr in descendants(request, "DocumentRequest"):
        out[text_of(first(dr, "DocumentUniqueId"))] = text_of(first(dr, "RepositoryUniqueId"))
    return out


def check_same_ret_imgs(request: etree._Element | None, retrieved: list[RetrievedDocument],
                        status: str | None) -> list[str]:
    """``sameRetImgs``: one DocumentResponse per requested instance, matching uid, application/dicom."""
    problems: list[str] = []
    if status is None or not status.endswith("Success"):
        problems.append(f"status {status}, expected Success")
    wanted = list(requested_documents(request))
    got = [d.document_unique_id for d in retrieved]
    missing = [u for u in wanted if u not in got]
    extra = [u for u in got if u not in wanted]
    if missing:
        problems.append(f"{len(missing)} requested instances not returned (e.g. {missing[0]})")
    if extra:
        problems.append(f"{len(extra)} instances not requested (e.g. {extra[0]})")
    if len(got) != len(set(got)):
        problems.append("an instance returned twice")
    bad_mime = [d for d in retrieved if d.mime_type != "application/dicom"]
    if bad_mime:
        problems.append(f"mimeType {bad_mime[0].mime_type} for {bad_mime[0].document_unique_id}")
    return problems


def check_registry_error_list_not_empty(status: str | None, errors: list[ReportedError]) -> list[str]:
    problems = [] if status and status.endswith("Failure") else [f"status {status}, expected Failure"]
    if not errors:
        problems.append("RegistryErrorList is empty")
    return problems
