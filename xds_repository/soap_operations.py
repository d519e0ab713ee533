"""SOAP operations of the Document Repository, dispatched by :class:`xds_registry.endpoint.XdsEndpoint`.

``OPERATIONS`` maps a request ``wsa:Action`` to an :class:`~xds_registry.endpoint.Operation`
(ITI-41 / RAD-68, ITI-43).  An action missing here is answered with an honest
``wsa:ActionNotSupported`` SOAP fault, never a fake success.

This is the view layer: it reads the settings (through :mod:`xds_repository.conf`)
and passes them to the domain functions, which never read settings themselves.
"""

from __future__ import annotations

from xds_registry.ebxml.responses import registry_response
from xds_registry.ebxml.vocabulary import Action
from xds_registry.endpoint import Operation
from xds_registry.soap.envelope import SoapRequest, SoapResponse
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
