"""SOAP operations of the Document Repository, dispatched by :class:`xds_core.http.endpoint.XdsEndpoint`.

``OPERATIONS`` maps a request ``wsa:Action`` to an :class:`~xds_core.http.endpoint.Operation`
(ITI-41 / RAD-68, ITI-43).  An action missing here is answered with an honest
``wsa:ActionNotSupported`` SOAP fault, never a fake success.

This is the view layer: it reads the settings (through :mod:`xds_repository.conf`)
and passes them to the domain functions, which never read settings themselves.
"""

from __future__ import annotations

from xds_core.ebxml.responses import registry_response
from xds_core.errors import ErrorCode
from xds_core.http.endpoint import EndpointSpec, Operation, XdsEndpoint
from xds_core.soap.envelope import SoapRequest, SoapResponse
from xds_core.vocabulary import Action
from xds_repository.conf import repository_config
from xds_repository.provide_and_register import provide_and_register
from xds_repository.retrieve_document_set import retrieve_document_set


def _provide_and_register(request: SoapRequest) -> SoapResponse:
    """ITI-41 and RAD-68 share the action and the response (RAD TF-3 4.68.4.1.2; digest §2)."""
    warnings = provide_and_register(request, repository_config())
    return SoapResponse(Action.ProvideAndRegisterDocumentSetResponse, registry_response(warnings))


def _retrieve_document_set(request: SoapRequest) -> SoapResponse:
    return retrieve_document_set(request, repository_config())


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
