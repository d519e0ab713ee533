"""Typed forms of the XDS / XDS-I request and response messages (ITI TF-2 / RAD TF-3 schemas).

Produced by :mod:`xds_core.ebxml.parse`, consumed by
:mod:`xds_core.ebxml.serialize`.  Metadata objects themselves live in
:mod:`xds_core.metadata`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from xds_core.errors import RegistryError
from xds_core.metadata.objects import RegistryObject, Submission


@dataclass
class AdhocQueryRequest:
    """``query:AdhocQueryRequest`` of ITI-18 / ITI-51 (ITI TF-2a 3.18.4.1.2).

    ``parameters`` holds one tuple per ``rim:Slot`` in document order (a repeated
    slot appears twice: AND semantics, ITI TF-2a 3.18.4.1.2.3.5); values are the raw
    ``rim:Value`` texts, still quoted as sent (``'...'``, ``('a','b')``) --
    :mod:`xds_registry.stored_query.parameters` decodes them.
    """

    query_id: str
    return_type: str
    parameters: list[tuple[str, list[str]]] = field(default_factory=list)
    home_community_id: str | None = None
    return_composed_objects: bool = False

    def values(self, name: str) -> list[list[str]]:
        """Every occurrence of parameter ``name`` (one list of raw values per slot)."""
        return [values for slot_name, values in self.parameters if slot_name == name]


@dataclass
class DocumentRequest:
    """``xdsb:DocumentRequest`` (ITI TF-2b 3.43.4.1.2; also inside RAD-69 SeriesRequest)."""

    repository_unique_id: str
    document_unique_id: str
    home_community_id: str | None = None


@dataclass
class SeriesRequest:
    """``iherad:SeriesRequest@seriesInstanceUID`` (RAD TF-3 4.69.4.1.2)."""

    series_instance_uid: str
    documents: list[DocumentRequest] = field(default_factory=list)


@dataclass
class StudyRequest:
    """``iherad:StudyRequest@studyInstanceUID`` (RAD TF-3 4.69.4.1.2)."""

    study_instance_uid: str
    series: list[SeriesRequest] = field(default_factory=list)


@dataclass
class RetrieveImagingDocumentSetRequest:
    """``iherad:RetrieveImagingDocumentSetRequest`` of RAD-69 / RAD-75."""

    studies: list[StudyRequest] = field(default_factory=list)
    transfer_syntax_uids: list[str] = field(default_factory=list)

    def document_requests(self) -> list[tuple[str, str, DocumentRequest]]:
        """Flattened ``(studyInstanceUID, seriesInstanceUID, DocumentRequest)`` in request order."""
        return [(study.study_instance_uid, series.series_instance_uid, document)
                for study in self.studies for series in study.series for document in series.documents]


@dataclass
class ProvideAndRegisterRequest:
    """``xdsb:ProvideAndRegisterDocumentSetRequest`` (ITI-41 / RAD-68).

    ``documents`` pairs each ``xdsb:Document/@id`` with its element, to be turned
    into bytes by ``SoapRequest.binary(element)`` (xop:Include or inline base64).
    """

    submission: Submission
    documents: list[tuple[str, etree._Element]] = field(default_factory=list)


@dataclass
class AdhocQueryResult:
    """A parsed ``query:AdhocQueryResponse`` (consumer side)."""

    status: str
    errors: list[RegistryError] = field(default_factory=list)
    #: LeafClass results (DocumentEntry, SubmissionSet, Folder, Association, ...), in response order.
    objects: list[RegistryObject] = field(default_factory=list)
    #: ObjectRef results (entryUUIDs), in response order.
    object_refs: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RetrievedDocument:
    """One ``xdsb:DocumentResponse`` of an ITI-43 / RAD-69 response (consumer side).

    ``element`` is the ``xdsb:Document`` element: pass it to ``SoapResult.binary()``.
    """

    repository_unique_id: str
    document_unique_id: str
    mime_type: str
    home_community_id: str | None
    element: etree._Element
    new_repository_unique_id: str | None = None
    new_document_unique_id: str | None = None
