"""SOAP operations of the Document Registry, dispatched by :class:`xds_core.http.endpoint.XdsEndpoint`.

``OPERATIONS`` maps a request ``wsa:Action`` to an :class:`~xds_core.http.endpoint.Operation`
(ITI-42, ITI-18, ITI-51, ITI-57, ITI-62, ITI-92, ITI-44).  An action missing here is answered with an honest
``wsa:ActionNotSupported`` SOAP fault, never a fake success.

This is the view layer: it reads settings and passes them to the domain code as arguments.
"""

from __future__ import annotations

from django.conf import settings

from xds_core import audit
from xds_core.affinity_domain import load_affinity_domain
from xds_core.ebxml.parse import parse_submit_objects_request
from xds_core.ebxml.responses import registry_response
from xds_core.errors import ErrorCode
from xds_core.http.endpoint import EndpointSpec, Operation, XdsEndpoint
from xds_core.soap.envelope import SoapRequest, SoapResponse
from xds_core.vocabulary import Action
from xds_registry.register_document_set import register_document_set
from xds_registry.stored_query.operations import (
    multi_patient_stored_query_operation,
    registry_stored_query_operation,
)


def register_document_set_operation(request: SoapRequest) -> SoapResponse:
    """ITI-42 Register Document Set-b (ITI TF-2b 3.42): lcm:SubmitObjectsRequest -> rs:RegistryResponse."""
    submission = parse_submit_objects_request(request.body)
    audit.describe(audit.submission_objects, submission)  # ITI TF-2b 3.42.5.1.2: patient, SubmissionSet
    result = register_document_set(submission, affinity_domain=load_affinity_domain(settings.XDS_AFFINITY_DOMAIN_CODES))
    return SoapResponse(Action.RegisterDocumentSetResponse.value, registry_response(result.warnings))


OPERATIONS: dict[str, Operation] = {
    Action.RegisterDocumentSet.value: Operation(
        transaction="ITI-42", handler=register_document_set_operation,
        response_action=Action.RegisterDocumentSetResponse.value, error_body="RegistryResponse"),
    # ITI-18 / ITI-51 (stored-query engineer): xds_registry.stored_query.operations.
    Action.RegistryStoredQuery.value: Operation(
        transaction="ITI-18", handler=registry_stored_query_operation,
        response_action=Action.RegistryStoredQueryResponse.value, error_body="AdhocQueryResponse"),
    # Answers wsa:ActionNotSupported unless XDS_MPQ_ENABLED (checked per request).
    Action.MultiPatientStoredQuery.value: Operation(
        transaction="ITI-51", handler=multi_patient_stored_query_operation,
        response_action=Action.MultiPatientStoredQueryResponse.value, error_body="AdhocQueryResponse"),
}

#: The actor's endpoint: mounted by ``xds_registry/urls.py``, reachable in process as ``local:registry``
#: (registered by ``xds_registry/apps.py``).
ENDPOINT = XdsEndpoint(EndpointSpec(
    name="registry", title="XDS.b Document Registry", wsdl="XDS.b_DocumentRegistry.wsdl",
    operations=OPERATIONS, internal_error=ErrorCode.XDSRegistryError))
