"""One instance by RAD-69, into memory: what a thumbnail of a series needs (a middle image, not the series).

The request is an ``iherad:RetrieveImagingDocumentSetRequest`` (RAD TF-3 4.69.4.1.2) holding one
StudyRequest / SeriesRequest / DocumentRequest (RepositoryUniqueId = the series' Retrieve Location UID,
DocumentUniqueId = the SOP Instance UID) and the consumer's TransferSyntaxUIDList.  The answer (RAD TF-3
4.69.4.2, MTOM/XOP) is read whole, at most ``max_size`` bytes; the document is accepted only when it is
a complete Part 10 object whose SOP Instance UID (and SOP Class UID, when known) are the ones asked for,
as :mod:`consumer.retrieval` checks for a whole manifest.  Audited as the consumer's side of RAD-69
(RAD TF-3 4.69.5, DICOM PS3.15 A.5.3.7).
"""

from __future__ import annotations

from collections.abc import Sequence

from consumer.part10 import Part10Error, read_identity
from xds_core import audit, ns
from xds_core.ebxml.messages import DocumentRequest, RetrieveImagingDocumentSetRequest, SeriesRequest, StudyRequest
from xds_core.ebxml.parse import parse_retrieve_document_set_response
from xds_core.ebxml.serialize import retrieve_imaging_document_set_request
from xds_core.errors import XdsError
from xds_core.identifiers import is_dicom_uid, is_iso_oid
from xds_core.soap.client import SoapClient, TransportError
from xds_core.vocabulary import Action

#: A single instance larger than this is refused (a thumbnail needs one image, not a 2 GB multi-frame).
MAX_INSTANCE_SIZE = 256 * 1024 * 1024

_B_RESPONSE = f"{{{ns.XDSB}}}RetrieveDocumentSetResponse"


class SingleRetrieveError(Exception):
    """The instance could not be had; the message says why (UIDs and codes, never patient data)."""


def retrieve_instance(url: str, *, study_uid: str, series_uid: str, sop_instance_uid: str, location_uid: str,
                      transfer_syntaxes: Sequence[str], sop_class_uid: str = "", timeout: float = 60.0,
                      max_size: int = MAX_INSTANCE_SIZE) -> bytes:
    """The Part 10 bytes of one instance from the Imaging Document Source at ``url`` (RAD-69).

    :raises SingleRetrieveError: bad UIDs, the source unreachable, a SOAP Fault, a RegistryError, no
        document, or not the instance asked for.
    """
    for name, uid in (("Study Instance UID", study_uid), ("Series Instance UID", series_uid),
                      ("SOP Instance UID", sop_instance_uid)):
        if not is_dicom_uid(uid):
            raise SingleRetrieveError(f"{name} {uid[:80]!r} is not a DICOM UID (PS3.5 9.1)")
    if not is_iso_oid(location_uid):
        raise SingleRetrieveError(f"Retrieve Location UID {location_uid[:80]!r} is not an OID")
    if not transfer_syntaxes:
        raise SingleRetrieveError("no transfer syntax to ask for")
    request = RetrieveImagingDocumentSetRequest(
        [StudyRequest(study_uid, [SeriesRequest(series_uid, [DocumentRequest(location_uid, sop_instance_uid)])])],
        list(transfer_syntaxes))
    client = SoapClient(url, timeout=timeout, max_response_size=max_size)
    outcome = audit.EventOutcome.MAJOR_FAILURE
    try:
        data = _exchange(client, request, sop_instance_uid, sop_class_uid)
        outcome = audit.EventOutcome.SUCCESS
        return data
    except SingleRetrieveError as exc:
        if not isinstance(exc.__cause__, TransportError):
            outcome = audit.EventOutcome.SERIOUS_FAILURE
        raise
    finally:  # RAD TF-3 4.69.5: the consumer's side of RAD-69 (DICOM Instances Transferred)
        audit.record_sent(audit.Transaction.RAD_69, client.url, outcome, audit.imaging_objects, None,
                          {study_uid: [sop_instance_uid]})


def _exchange(client: SoapClient, request: RetrieveImagingDocumentSetRequest, sop_instance_uid: str,
              sop_class_uid: str) -> bytes:
    what = f"SOP Instance {sop_instance_uid} from {client.url}"
    try:
        result = client.call(Action.RetrieveImagingDocumentSet.value,
                             retrieve_imaging_document_set_request(request))
    except TransportError as exc:
        raise SingleRetrieveError(f"cannot retrieve {what}: {exc}") from exc
    try:
        if result.fault is not None:
            raise SingleRetrieveError(f"{what}: SOAP Fault {result.fault.code}: {result.fault.reason}")
        response = result.body
        if response is not None and response.tag != _B_RESPONSE:
            response = response.find(f".//{_B_RESPONSE}")
        if response is None:
            raise SingleRetrieveError(f"{what}: the answer has no xdsb:RetrieveDocumentSetResponse "
                                      "(RAD TF-3 4.69.4.2)")
        try:
            _status, errors, documents = parse_retrieve_document_set_response(response)
        except XdsError as exc:
            raise SingleRetrieveError(f"{what}: unreadable RetrieveDocumentSetResponse: "
                                      + "; ".join(e.code_context for e in exc.errors)) from None
        document = next((d for d in documents if d.document_unique_id == sop_instance_uid), None)
        if document is None:
            reasons = "; ".join(f"{e.error_code}: {e.code_context}" for e in errors if e.is_error)
            raise SingleRetrieveError(f"{what}: {reasons or 'the answer returns no such document'}")
        try:
            data = result.binary(document.element).read_bytes()
        except (ValueError, KeyError) as exc:
            raise SingleRetrieveError(f"{what}: no content for the document: {exc}") from None
        try:
            identity = read_identity(data)
        except Part10Error as exc:
            raise SingleRetrieveError(f"{what}: not a complete Part 10 object: {exc}") from None
        if identity[0] != sop_instance_uid or (sop_class_uid and identity[1] != sop_class_uid):
            raise SingleRetrieveError(f"{what}: the answer is SOP Instance {identity[0]} of SOP Class {identity[1]}, "
                                      "not the one asked for")
        return data
    finally:
        result.close()
