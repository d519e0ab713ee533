"""SOAP operations of the Document Repository, dispatched by :class:`xds_core.http.endpoint.XdsEndpoint`.

``OPERATIONS`` maps a request ``wsa:Action`` to an :class:`~xds_core.http.endpoint.Operation`
(ITI-41 / RAD-68, ITI-43).  An action missing here is answered with an honest
``wsa:ActionNotSupported`` SOAP fault, never a fake success.

This is the view layer: it reads the settings (through :mod:`xds_repository.conf`)
and passes them to the domain functions, which never read settings themselves.
"""

from __future__ import annotations

from lxml import etree

from xds_core.ebxml.parse import parse_provide_and_register_request, parse_retrieve_document_set_request
from xds_core.ebxml.responses import registry_response, retrieve_document_set_response
from xds_core.errors import ErrorCode, XdsError
from xds_core.http.endpoint import EndpointSpec, Operation, XdsEndpoint
from xds_core.soap.envelope import SoapRequest, SoapResponse
from xds_core.soap.faults import SoapFault
from xds_core.vocabulary import Action
from xds_repository.conf import repository_config, retrieve_limits
from xds_repository.provide_and_register import (
    ProvideAndRegisterDocumentSet,
    SubmittedDocument,
    provide_and_register,
)
from xds_repository.retrieve_document_set import retrieve_document_set


def _provide_and_register(request: SoapRequest) -> SoapResponse:
    """ITI-41 and RAD-68 share the action and the response (RAD TF-3 4.68.4.1.2)."""
    # Structural findings are the repository's own: XDSRepositoryMetadataError (ITI TF-3 Table 4.2.4.1-2).
    parsed = parse_provide_and_register_request(request.body, error_code=ErrorCode.XDSRepositoryMetadataError)
    documents = [_submitted_document(doc_id, element, request) for doc_id, element in parsed.documents]
    result = provide_and_register(ProvideAndRegisterDocumentSet(parsed.submission, documents), repository_config())
    return SoapResponse(Action.ProvideAndRegisterDocumentSetResponse, registry_response(result.warnings))


def _submitted_document(doc_id: str, element: etree._Element, request: SoapRequest) -> SubmittedDocument:
    """The content of one ``xdsb:Document`` (xop:Include or inline base64), or why it cannot be read."""
    try:
        return SubmittedDocument(doc_id, request.binary(element))
    except XdsError as exc:
        return SubmittedDocument(doc_id, None, errors=tuple(exc.errors))
    except SoapFault as exc:  # xop:Include naming no MIME part
        return SubmittedDocument(doc_id, None, unreadable=exc.reason)
    except ValueError as exc:  # bad base64
        return SubmittedDocument(doc_id, None, unreadable=str(exc))


def _retrieve_document_set(request: SoapRequest) -> SoapResponse:
    """ITI-43 (ITI TF-2b 3.43): the answer is MTOM even without documents (3.43.5.1)."""
    result = retrieve_document_set(parse_retrieve_document_set_request(request.body), repository_config(),
                                   retrieve_limits())
    body, parts = retrieve_document_set_response(result.errors, result.documents)
    return SoapResponse(Action.RetrieveDocumentSetResponse, body, attachments=parts, mtom=True)


OPERATIONS: dict[str, Operation] = {
    Action.ProvideAndRegisterDocumentSet: Operation(
        "ITI-41", _provide_and_register, Action.ProvideAndRegisterDocumentSetResponse, "RegistryResponse"),
    Action.RetrieveDocumentSet: Operation(
        "ITI-43", _retrieve_document_set, Action.RetrieveDocumentSetResponse, "RetrieveDocumentSetResponse"),
}

#: The actor's endpoint: mounted by ``xds_repository/urls.py``, reachable in process as ``local:repository``
#: (registered by ``xds_repository/apps.py``).
ENDPOINT = XdsEndpoint(EndpointSpec(
    name="repository", title="XDS.b Document Repository", wsdl="XDS.b_DocumentRepository.wsdl",
    operations=OPERATIONS, internal_error=ErrorCode.XDSRepositoryError))
