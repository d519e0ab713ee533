"""SOAP operations ITI-18 and ITI-51 (registered in :mod:`xds_registry.soap_operations`).

This is the view layer: it reads the settings (result limit, homeCommunityId, whether ITI-51 is
enabled) and hands them to :func:`~xds_registry.stored_query.execute.run_stored_query`.
XdsError raised below becomes a Failure ``query:AdhocQueryResponse`` in the endpoint.
"""

from __future__ import annotations

from django.conf import settings
from lxml import etree

from xds_core import audit, ns
from xds_core.ebxml.parse import parse_adhoc_query_request
from xds_core.ebxml.responses import adhoc_query_response
from xds_core.soap.envelope import SoapRequest, SoapResponse
from xds_core.soap.faults import SoapFault
from xds_core.vocabulary import Action
from xds_registry.stored_query.execute import QueryConfig, Transaction, run_stored_query


def query_config() -> QueryConfig:
    return QueryConfig(max_results=settings.XDS_MAX_QUERY_RESULTS,
                       home_community_id=settings.XDS_HOME_COMMUNITY_ID or None)


def registry_stored_query_operation(request: SoapRequest) -> SoapResponse:
    """ITI-18 Registry Stored Query (ITI TF-2a 3.18): query:AdhocQueryRequest -> query:AdhocQueryResponse."""
    query = parse_adhoc_query_request(request.body)
    audit.describe(audit.query_objects, audit.Transaction.ITI_18, query, request.body)  # patient(s), the query
    outcome = run_stored_query(query, query_config(), Transaction.RegistryStoredQuery)
    return SoapResponse(Action.RegistryStoredQueryResponse.value, adhoc_query_response([], outcome.objects))


def multi_patient_stored_query_operation(request: SoapRequest) -> SoapResponse:
    """ITI-51 Multi-Patient Stored Query (ITI TF-2b 3.51), only when ``XDS_MPQ_ENABLED``.

    Disabled, the action is answered exactly as an unknown one: a ``wsa:ActionNotSupported``
    fault (WS-Addressing 1.0 SOAP Binding §6.4.4), so a disabled registry does not pretend to
    support the transaction.
    """
    if not settings.XDS_MPQ_ENABLED:
        detail = etree.Element(f"{{{ns.WSA}}}ProblemAction", nsmap={"wsa": ns.WSA})
        etree.SubElement(detail, f"{{{ns.WSA}}}Action").text = request.action
        raise SoapFault("Sender", "ITI-51 Multi-Patient Stored Query is not enabled on this registry "
                                  "(setting XDS_MPQ_ENABLED)", subcode="wsa:ActionNotSupported", detail=detail)
    query = parse_adhoc_query_request(request.body)
    audit.describe(audit.query_objects, audit.Transaction.ITI_51, query, request.body)  # patient(s), the query
    outcome = run_stored_query(query, query_config(), Transaction.MultiPatientStoredQuery)
    return SoapResponse(Action.MultiPatientStoredQueryResponse.value, adhoc_query_response([], outcome.objects))
