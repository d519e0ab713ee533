"""ITI-18 and ITI-51 over real SOAP/HTTP on loopback (the registry endpoint)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from xds_core import ns
from xds_core.ebxml.responses import parse_registry_errors
from xds_core.ebxml.serialize import adhoc_query_request
from xds_core.soap.client import SoapClient, SoapResult
from xds_core.vocabulary import Action, AvailabilityStatus, ResponseStatus, StoredQuery
from xds_registry.stored_query import parameters as prm

from .conftest import HOME, P1, Registry, q, ql

APPROVED = AvailabilityStatus.APPROVED.value
RIM = f"{{{ns.RIM}}}"


@pytest.fixture
def client(live_server, registry: Registry) -> SoapClient:
    return SoapClient(f"{live_server.url}/xds/registry", timeout=30)


def call(client: SoapClient, query: StoredQuery, parameters: list[tuple[str, list[str]]], *,
         return_type: str = "LeafClass", action: Action = Action.RegistryStoredQuery) -> SoapResult:
    return client.call(action.value, adhoc_query_request(query.value, parameters, return_type=return_type))


def objects(result: SoapResult) -> list:
    assert result.body is not None
    object_list = result.body.find(f"{RIM}RegistryObjectList")
    return list(object_list) if object_list is not None else []


def errors(result: SoapResult) -> list[str]:
    assert result.body is not None
    return [e.error_code for e in parse_registry_errors(result.body.find(f"{{{ns.RS}}}RegistryErrorList"))]


FIND = [(prm.DE_PATIENT_ID, [q(P1)]), (prm.DE_STATUS, [ql(APPROVED)])]


@pytest.mark.django_db(transaction=True)
@override_settings(XDS_HOME_COMMUNITY_ID=HOME)
def test_find_documents_over_http(client: SoapClient, registry: Registry) -> None:
    result = call(client, StoredQuery.FindDocuments, FIND)
    assert result.fault is None
    assert result.action == Action.RegistryStoredQueryResponse.value
    assert result.body.tag == f"{{{ns.QUERY}}}AdhocQueryResponse"
    assert result.body.get("status") == ResponseStatus.SUCCESS.value
    found = objects(result)
    assert [el.get("id") for el in found] == [registry.uuid["doc_b"], registry.uuid["doc_d"]]
    assert {el.get("home") for el in found} == {HOME}


@pytest.mark.django_db(transaction=True)
def test_errors_are_a_failure_adhoc_query_response(client: SoapClient, registry: Registry) -> None:
    result = call(client, StoredQuery.FindDocuments, [(prm.DE_STATUS, [ql(APPROVED)])])
    assert result.fault is None
    assert result.body.get("status") == ResponseStatus.FAILURE.value
    assert errors(result) == ["XDSStoredQueryMissingParam"]
    assert objects(result) == []


@pytest.mark.django_db(transaction=True)
@override_settings(XDS_MAX_QUERY_RESULTS=1)
def test_too_many_results_over_http(client: SoapClient, registry: Registry) -> None:
    result = call(client, StoredQuery.FindDocuments, FIND, return_type="ObjectRef")
    assert result.body.get("status") == ResponseStatus.FAILURE.value
    assert errors(result) == ["XDSTooManyResults"]
    assert objects(result) == []


@pytest.mark.django_db(transaction=True)
def test_unknown_query_over_http(client: SoapClient, registry: Registry) -> None:
    body = adhoc_query_request("urn:uuid:00000000-1111-2222-3333-444444444444", FIND)
    result = client.call(Action.RegistryStoredQuery.value, body)
    assert errors(result) == ["XDSUnknownStoredQuery"]


@pytest.mark.django_db(transaction=True)
@override_settings(XDS_MPQ_ENABLED=False)
def test_iti51_is_action_not_supported_unless_enabled(client: SoapClient, registry: Registry) -> None:
    result = call(client, StoredQuery.FindDocumentsForMultiplePatients,
                  [(prm.DE_STATUS, [ql(APPROVED)]), (prm.DE_PATIENT_ID, [ql(P1)])],
                  action=Action.MultiPatientStoredQuery)
    assert result.fault is not None
    assert "ActionNotSupported" in (result.fault.subcode or "")


@pytest.mark.django_db(transaction=True)
@override_settings(XDS_MPQ_ENABLED=True)
def test_iti51_when_enabled(client: SoapClient, registry: Registry) -> None:
    result = call(client, StoredQuery.FindDocumentsForMultiplePatients,
                  [(prm.DE_STATUS, [ql(APPROVED)]), (prm.DE_PATIENT_ID, [ql(P1)])],
                  action=Action.MultiPatientStoredQuery, return_type="ObjectRef")
    assert result.action == Action.MultiPatientStoredQueryResponse.value
    assert [el.get("id") for el in objects(result)] == [registry.uuid["doc_b"], registry.uuid["doc_d"]]
    # ITI-51 refuses the single-patient queries.
    result = call(client, StoredQuery.FindDocuments, FIND, action=Action.MultiPatientStoredQuery)
    assert errors(result) == ["XDSUnknownStoredQuery"]
    # ... and ITI-18 the multi-patient ones.
    result = call(client, StoredQuery.FindDocumentsForMultiplePatients,
                  [(prm.DE_STATUS, [ql(APPROVED)]), (prm.DE_PATIENT_ID, [ql(P1)])])
    assert errors(result) == ["XDSUnknownStoredQuery"]
