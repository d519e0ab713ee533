"""A small registry populated through the real ITI-42 path (register_document_set).

Data set (patient P1 unless said otherwise), registered in this order:

* ``ss1``: stable ``doc_a`` (class A, events E1+E2, confidentiality N, author Ford, referenceId acc1,
  created 2020-01-01 12:00, service 2019..2020);
* ``ss2``: ``folder_f`` (codeList FC1) holding stable ``doc_b`` (class B, event E1, confidentiality
  N+R, author Smith, created 2020-02-01, format F2);
* ``ss3``: On-Demand ``doc_c`` (class A);
* ``ss4``: stable ``doc_d`` replacing ``doc_a`` (RPLC): ``doc_a`` becomes Deprecated;
* ``ss5``: patient P2, stable ``doc_e`` (class A), a folder ``folder_g``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from xds_core.ebxml.messages import AdhocQueryRequest
from xds_core.metadata.objects import Association, DocumentEntry, Folder, Submission, SubmissionSet
from xds_core.metadata.values import Author, Code
from xds_core.vocabulary import AssociationType, ObjectType, StoredQuery
from xds_registry import models
from xds_registry.register_document_set import register_document_set
from xds_registry.stored_query.execute import QueryConfig, StoredQueryOutcome, Transaction, run_stored_query

AUTHORITY = "1.3.6.1.4.1.21367.13.20.1000"
P1 = f"P1^^^&{AUTHORITY}&ISO"
P2 = f"P2^^^&{AUTHORITY}&ISO"
P_UNKNOWN = f"NOBODY^^^&{AUTHORITY}&ISO"
HOME = "urn:oid:1.2.3.4.5"

S = "1.2.3.99"
CLASS_A, CLASS_B = Code("A", S, "Class A"), Code("B", S, "Class B")
EVENT_1, EVENT_2 = Code("E1", S, "Event 1"), Code("E2", S, "Event 2")
CONF_N, CONF_R = Code("N", "2.16.840.1.113883.5.25", "normal"), Code("R", "2.16.840.1.113883.5.25", "restricted")
FORMAT_1, FORMAT_2 = Code("F1", S, "Format 1"), Code("F2", S, "Format 2")
FOLDER_CODE = Code("FC1", S, "Folder code 1")
REF_ACC1 = f"acc1^^^&{AUTHORITY}&ISO^urn:ihe:iti:xds:2013:accession"

_uids = itertools.count(1)


def uid() -> str:
    return f"1.2.3.4.5.6.{next(_uids)}"


def document(patient: str, *, class_code: Code = CLASS_A, object_type: str = ObjectType.STABLE_DOCUMENT_ENTRY,
             **values: object) -> DocumentEntry:
    defaults: dict[str, object] = dict(
        type_code=Code("T1", S, "Type 1"), format_code=FORMAT_1,
        healthcare_facility_type_code=Code("H1", S, "Facility 1"), practice_setting_code=Code("PS1", S, "Practice 1"),
        confidentiality_codes=[CONF_N], creation_time="20200101120000", language_code="en-US",
        source_patient_id=patient, hash="da39a3ee5e6b4b0d3255bfef95601890afd80709", size=0,
        repository_unique_id="1.2.3.4.5.6.7", title="a document")
    defaults.update(values)
    if object_type == ObjectType.ON_DEMAND_DOCUMENT_ENTRY:
        for name in ("hash", "size", "creation_time"):
            defaults.pop(name, None)
    return DocumentEntry.build(patient_id=patient, unique_id=uid(), mime_type="text/plain",
                               object_type=object_type, class_code=class_code, **defaults)  # type: ignore[arg-type]


def submission(patient: str, documents: list[DocumentEntry], folders: list[Folder] = (),  # type: ignore[assignment]
               in_folder: dict[int, list[int]] | None = None,
               relations: list[tuple[str, int, str]] = (),  # type: ignore[assignment]
               author: str = "^Dopplemeyer^Sherry") -> Submission:
    ss = SubmissionSet.build(patient_id=patient, unique_id=uid(), source_id="1.2.3.4.5.6.999",
                             submission_time="20041225235050", content_type_code=Code("CT1", S, "Content 1"),
                             authors=[Author(person=author)], title="a submission")
    associations = [Association.has_member(ss.id, d.id) for d in documents]
    associations += [Association.has_member(ss.id, f.id, submission_set_status=None) for f in folders]
    for folder_index, doc_indexes in (in_folder or {}).items():
        for i in doc_indexes:
            inner = Association.has_member(folders[folder_index].id, documents[i].id, submission_set_status=None)
            associations += [inner, Association.has_member(ss.id, inner.id, submission_set_status=None)]
    for association_type, i, target in relations:
        associations.append(Association.build(association_type, documents[i].id, target))
    return Submission(submission_set=ss, document_entries=list(documents), folders=list(folders),
                      associations=associations)


@dataclass
class Registry:
    """entryUUIDs / uniqueIds of the populated data set, by name."""

    uuid: dict[str, str] = field(default_factory=dict)
    uid: dict[str, str] = field(default_factory=dict)
    patient: dict[str, str] = field(default_factory=dict)

    def names(self, uuids: list[str]) -> list[str]:
        by_uuid = {v: k for k, v in self.uuid.items()}
        return [by_uuid.get(u, u) for u in uuids]


def register(registry: Registry, sub: Submission, names: dict[str, object]) -> None:
    result = register_document_set(sub)
    for name, obj in names.items():
        registry.uuid[name] = result.entry_uuids[obj.id]  # type: ignore[attr-defined]
        registry.uid[name] = obj.unique_id  # type: ignore[attr-defined]
        registry.patient[name] = obj.patient_id  # type: ignore[attr-defined]


@pytest.fixture
def registry(db) -> Registry:
    for pid in (P1, P2):
        models.Patient.objects.create(patient_id=pid, assigning_authority=AUTHORITY)
    reg = Registry()

    doc_a = document(P1, event_codes=[EVENT_1, EVENT_2], authors=[Author(person="^Ford^Harrison")],
                     reference_ids=[REF_ACC1], service_start_time="2019", service_stop_time="2020")
    ss1 = submission(P1, [doc_a])
    register(reg, ss1, {"ss1": ss1.submission_set, "doc_a": doc_a})

    doc_b = document(P1, class_code=CLASS_B, event_codes=[EVENT_1], confidentiality_codes=[CONF_N, CONF_R],
                     authors=[Author(person="^Smith^John")], creation_time="20200201", format_code=FORMAT_2)
    folder_f = Folder.build(patient_id=P1, unique_id=uid(), code_list=[FOLDER_CODE], title="folder f")
    ss2 = submission(P1, [doc_b], [folder_f], in_folder={0: [0]})
    register(reg, ss2, {"ss2": ss2.submission_set, "doc_b": doc_b, "folder_f": folder_f})

    doc_c = document(P1, object_type=ObjectType.ON_DEMAND_DOCUMENT_ENTRY)
    ss3 = submission(P1, [doc_c])
    register(reg, ss3, {"ss3": ss3.submission_set, "doc_c": doc_c})

    doc_d = document(P1, creation_time="20200301")
    ss4 = submission(P1, [doc_d], relations=[(AssociationType.RPLC, 0, reg.uuid["doc_a"])])
    register(reg, ss4, {"ss4": ss4.submission_set, "doc_d": doc_d})

    doc_e = document(P2)
    folder_g = Folder.build(patient_id=P2, unique_id=uid(), code_list=[FOLDER_CODE], title="folder g")
    ss5 = submission(P2, [doc_e], [folder_g])
    register(reg, ss5, {"ss5": ss5.submission_set, "doc_e": doc_e, "folder_g": folder_g})
    return reg


CONFIG = QueryConfig(max_results=100, home_community_id=HOME)


def run(query: StoredQuery, parameters: list[tuple[str, list[str]]], *, return_type: str = "ObjectRef",
        config: QueryConfig = CONFIG, transaction: Transaction = Transaction.RegistryStoredQuery
        ) -> StoredQueryOutcome:
    request = AdhocQueryRequest(query_id=query.value, return_type=return_type, parameters=parameters)
    return run_stored_query(request, config, transaction)


def q(value: str) -> str:
    """A quoted stored-query string value."""
    return "'" + value.replace("'", "''") + "'"


def ql(*values: str) -> str:
    """A quoted stored-query list value."""
    return "(" + ", ".join(q(v) for v in values) + ")"
