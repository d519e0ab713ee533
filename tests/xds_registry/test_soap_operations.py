"""ITI-42 over real HTTP on loopback: SOAP 1.2 request to /xds/registry, RegistryResponse back."""

from __future__ import annotations

import pytest

from tests.xds_registry.registry_helpers import fed_patient, new_patient_id, submission_bytes
from xds_core.ebxml.responses import parse_registry_response
from xds_core.errors import ErrorCode
from xds_core.safe_xml import parse_xml
from xds_core.soap.client import SoapClient
from xds_core.vocabulary import Action, ResponseStatus
from xds_registry import models as m

pytestmark = pytest.mark.django_db(transaction=True)


def post(live_server, name: str, patient_id: str, **placeholders: str):
    data, _ = submission_bytes(name, patient_id, **placeholders)
    result = SoapClient(f"{live_server.url}/xds/registry").call(Action.RegisterDocumentSet.value, parse_xml(data))
    assert result.fault is None and result.http_status == 200
    assert result.action == Action.RegisterDocumentSetResponse.value
    return parse_registry_response(result.body)


def test_register_over_http_succeeds(live_server):
    status, errors = post(live_server, "single_doc.xml", fed_patient())
    assert (status, errors) == (ResponseStatus.SUCCESS.value, [])
    assert m.DocumentEntry.objects.count() == 1


def test_rplc_over_http(live_server):
    pid = fed_patient()
    post(live_server, "single_doc.xml", pid)
    original = m.DocumentEntry.objects.get().entry_uuid
    status, _ = post(live_server, "rplc.xml", pid, rplc_doc_uuid=original)
    assert status == ResponseStatus.SUCCESS.value
    assert m.DocumentEntry.objects.get(entry_uuid=original).status.endswith("Deprecated")


def test_unknown_patient_over_http_is_a_failure_with_its_code(live_server):
    pid = new_patient_id()
    status, errors = post(live_server, "single_doc.xml", pid)
    assert status == ResponseStatus.FAILURE.value
    assert [(e.error_code, e.location) for e in errors] == [(ErrorCode.XDSUnknownPatientId, "SubmissionSet01")]
    assert pid in errors[0].code_context
    assert m.SubmissionSet.objects.count() == 0


def test_wrong_body_for_the_action_is_a_metadata_error(live_server):
    body = parse_xml(b'<query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"/>')
    result = SoapClient(f"{live_server.url}/xds/registry").call(Action.RegisterDocumentSet.value, body)
    status, errors = parse_registry_response(result.body)
    assert status == ResponseStatus.FAILURE.value
    assert errors and errors[0].error_code == ErrorCode.XDSRegistryMetadataError
