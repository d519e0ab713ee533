"""The audit seam (xds_core.audit): events, sinks, the SOAP endpoint's one event per exchange.

The actors' own transactions are audited in tests beside theirs (tests/xds_registry/test_audit_records.py,
tests/xds_repository/test_audit_records.py, tests/imaging_source/test_audit_records.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import pytest

from imaging_source.soap_operations import OPERATIONS as IMAGING_OPERATIONS
from xds_core import audit
from xds_core.ebxml.messages import AdhocQueryRequest
from xds_core.ebxml.responses import registry_response
from xds_core.errors import ErrorCode, RegistryError, XdsError
from xds_core.http.endpoint import EndpointSpec, Operation, XdsEndpoint
from xds_core.safe_xml import parse_xml
from xds_core.soap.client import SoapClient, register_local_endpoint
from xds_core.soap.envelope import SoapRequest, SoapResponse
from xds_core.vocabulary import Action, ResponseStatus
from xds_registry.soap_operations import OPERATIONS as REGISTRY_OPERATIONS
from xds_repository.soap_operations import OPERATIONS as REPOSITORY_OPERATIONS

PATIENT = "P-AUDIT-1^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"


def _event(**overrides: object) -> audit.AuditEvent:
    return audit.transaction_event(
        audit.Transaction.ITI_42, audit.Side.RESPONDER, requestor=audit.soap_client("192.0.2.7"),
        responder=audit.this_node("http://registry.example/xds/registry"), objects=[audit.patient(PATIENT)],
        **overrides)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- vocabulary and events


def test_each_side_of_each_transaction_records_its_ps3_15_event() -> None:
    expected = {  # (responder, requestor): (EventID, EventActionCode)
        "ITI-8": (("110110", "C"), ("110110", "C")),
        "ITI-18": (("110112", "E"), ("110112", "E")),
        "ITI-41": (("110107", "C"), ("110106", "R")),
        "ITI-42": (("110107", "C"), ("110106", "R")),
        "ITI-43": (("110106", "R"), ("110107", "C")),
        "ITI-51": (("110112", "E"), ("110112", "E")),
        "RAD-6": (("110111", "C"), ("110111", "C")),
        "RAD-7": (("110111", "U"), ("110111", "U")),
        "RAD-55": (("110104", "R"), ("110104", "C")),
        "RAD-68": (("110107", "C"), ("110106", "R")),
        "RAD-69": (("110104", "R"), ("110104", "C")),
    }
    assert {t.code for t in audit.Transaction} == set(expected) == {t.code for t in audit.AUDITED}
    for transaction in audit.Transaction:
        got = []
        for side in (audit.Side.RESPONDER, audit.Side.REQUESTOR):
            event = audit.transaction_event(transaction, side, requestor=audit.remote("them", "192.0.2.1"),
                                            responder=audit.this_node("us"))
            got.append((event.event_id.code, event.action.value))
            assert event.transaction is transaction and event.event_id.system == "DCM"
        assert tuple(got) == expected[transaction.code], transaction


def test_the_requestor_is_the_source_of_a_push_and_the_destination_of_a_pull() -> None:
    push = _event()
    assert push.requestor is not None and push.requestor.role is audit.ParticipantRole.SOURCE
    assert push.participant(audit.ParticipantRole.DESTINATION).user_id == "http://registry.example/xds/registry"
    assert push.requestor.network_address == "192.0.2.7"
    assert push.requestor.network_access_point_type is audit.NetworkAccessPointType.IP_ADDRESS
    pull = audit.transaction_event(audit.Transaction.ITI_43, audit.Side.RESPONDER,
                                   requestor=audit.soap_client("192.0.2.7"), responder=audit.this_node("us"))
    assert pull.requestor.role is audit.ParticipantRole.DESTINATION
    assert pull.participant(audit.ParticipantRole.SOURCE).is_requestor is False
    assert audit.this_node("us").network_access_point_type is not None


def test_an_event_is_immutable_and_carries_its_time_in_utc() -> None:
    event = _event()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.outcome = audit.EventOutcome.MAJOR_FAILURE  # type: ignore[misc]
    assert not hasattr(event, "__dict__")  # slots
    assert event.time.utcoffset() is not None and event.time.utcoffset().total_seconds() == 0
    assert event.patient_ids == (PATIENT,)


def test_registry_statuses_and_partial_answers_map_to_the_outcome_indicator() -> None:
    assert audit.outcome_of_status("urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success") == 0
    assert audit.outcome_of_status("urn:ihe:iti:2007:ResponseStatusType:PartialSuccess") == 4
    assert audit.outcome_of_status("Failure") == 8
    assert audit.outcome_of_status("-") is None
    assert audit.outcome_of_status("Success", audit.EventOutcome.MAJOR_FAILURE) is audit.EventOutcome.SUCCESS
    assert audit.outcome_of_status("", audit.EventOutcome.MAJOR_FAILURE) is audit.EventOutcome.MAJOR_FAILURE
    assert (audit.partial(3, 0), audit.partial(2, 1), audit.partial(0, 3)) == (0, 4, 8)
    assert audit.worst(None, audit.EventOutcome.MINOR_FAILURE, audit.EventOutcome.SUCCESS) == 4


def test_a_stored_query_names_its_patients_and_keeps_the_query_itself() -> None:
    body = parse_xml(b'<query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0">'
                     b'<x>O\'Brien</x></query:AdhocQueryRequest>')
    request = AdhocQueryRequest("urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d", "LeafClass", [
        ("$XDSDocumentEntryPatientId", [f"'{PATIENT}'"]),
        ("$XDSDocumentEntryStatus", ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]),
        ("$XDSDocumentEntryPatientId", ["('O''Brien^^^&1.2&ISO', 'B^^^&1.2&ISO')"])], home_community_id="urn:oid:1.2")
    objects = audit.query_objects(audit.Transaction.ITI_51, request, body)
    assert [o.object_id for o in objects if o.role is audit.ObjectRole.PATIENT] == [
        PATIENT, "O'Brien^^^&1.2&ISO", "B^^^&1.2&ISO"]
    [query] = [o for o in objects if o.role is audit.ObjectRole.QUERY]
    assert query.id_type is audit.Transaction.ITI_51 and query.object_id == request.query_id
    assert query.query.startswith(b"<query:AdhocQueryRequest") and b"O'Brien" in query.query
    assert ("urn:ihe:iti:xca:2010:homeCommunityId", "urn:oid:1.2") in query.details


# --------------------------------------------------------------------------- sinks


def test_by_default_nothing_is_recorded_and_no_event_is_even_built() -> None:
    assert not audit.enabled()
    built: list[int] = []

    def factory() -> audit.AuditEvent:
        built.append(1)
        return _event()

    audit.record(factory)
    audit.describe(lambda: built.append(1) or [])
    audit.record_sent(audit.Transaction.ITI_42, "local:registry", audit.EventOutcome.SUCCESS,
                      lambda: built.append(1) or [])
    assert built == []


def test_the_default_sink_costs_about_nothing() -> None:
    assert not audit.enabled()
    calls = 200_000
    factory = _event
    started = time.perf_counter()
    for _ in range(calls):
        audit.record(factory)
        audit.describe(audit.submission_objects, None)
    per_call = (time.perf_counter() - started) / calls
    # ITI-42 takes ~2 ms; two calls here must stay well under a microsecond on any machine we run.
    assert per_call < 1e-6, f"{per_call * 1e9:.0f} ns per record+describe"


def test_capture_collects_events_and_puts_the_previous_sink_back() -> None:
    outer: list[audit.AuditEvent] = []
    previous = audit.set_sink(outer.append)
    try:
        with audit.capture() as events:
            audit.record(_event())
            audit.record(_event)
        audit.record(_event())
    finally:
        audit.set_sink(previous)
    assert len(events) == 2 and len(outer) == 1
    assert not audit.enabled()


def test_a_failing_sink_is_logged_without_patient_data_and_swallowed(caplog: pytest.LogCaptureFixture) -> None:
    def failing(event: audit.AuditEvent) -> None:
        raise RuntimeError(f"syslog down while sending {event.patient_ids[0]}")

    previous = audit.set_sink(failing)
    try:
        with caplog.at_level(logging.ERROR, logger="xds_core.audit"):
            audit.record(_event())  # must not raise
            audit.record(lambda: 1 / 0)  # a factory that fails neither
    finally:
        audit.set_sink(previous)
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.ERROR]
    assert "RuntimeError" in caplog.records[0].getMessage() and "ZeroDivisionError" in caplog.records[1].getMessage()
    logged = caplog.text + "".join(str(r.exc_info) for r in caplog.records)
    assert "P-AUDIT-1" not in logged and "syslog down" not in logged


# --------------------------------------------------------------------------- the SOAP endpoint


def test_every_soap_operation_of_the_three_actors_is_an_audited_transaction() -> None:
    for operations in (REGISTRY_OPERATIONS, REPOSITORY_OPERATIONS, IMAGING_OPERATIONS):
        for action, operation in operations.items():
            assert audit.Transaction.of(operation.transaction) in audit.AUDITED, action


def _registering(request: SoapRequest) -> SoapResponse:
    audit.describe(lambda: [audit.patient(PATIENT)])
    kind = request.body.get("kind")
    if kind == "refused":
        raise XdsError.of(ErrorCode.XDSUnknownPatientId, "unknown patient")
    if kind == "bug":
        raise RuntimeError("a bug of ours")
    if kind == "partial":
        return SoapResponse(Action.RegisterDocumentSetResponse.value, registry_response(
            [RegistryError(ErrorCode.XDSRegistryError, "one of two", location="x")],
            status=ResponseStatus.PARTIAL_SUCCESS))
    return SoapResponse(Action.RegisterDocumentSetResponse.value, registry_response([]))


@pytest.fixture
def endpoint() -> str:
    """A real endpoint (envelope checks, dispatch, error answers) with one ITI-42 operation."""
    spec = EndpointSpec("audit-test", "audit test endpoint", "XDS.b_DocumentRegistry.wsdl", {
        Action.RegisterDocumentSet.value: Operation(
            "ITI-42", _registering, Action.RegisterDocumentSetResponse.value, "RegistryResponse")},
        ErrorCode.XDSRegistryError)
    register_local_endpoint("audit-test", XdsEndpoint(spec).dispatch_local)
    return "local:audit-test"


@pytest.mark.parametrize(("kind", "outcome"), [("ok", 0), ("partial", 4), ("refused", 8), ("bug", 12)])
def test_the_endpoint_records_one_event_per_exchange_with_its_outcome(endpoint: str, kind: str, outcome: int) -> None:
    with audit.capture() as events:
        result = SoapClient(endpoint).call(Action.RegisterDocumentSet.value, parse_xml(f'<r kind="{kind}"/>'.encode()))
    assert result.fault is None
    [event] = events
    assert (event.event_id, event.action, event.transaction) == (
        audit.EventId.IMPORT, audit.EventAction.CREATE, audit.Transaction.ITI_42)
    assert event.outcome == outcome and event.patient_ids == (PATIENT,)
    assert event.participant(audit.ParticipantRole.DESTINATION).user_id == endpoint


def test_a_request_that_names_no_transaction_of_ours_records_nothing(endpoint: str) -> None:
    with audit.capture() as events:
        unknown = SoapClient(endpoint).call("urn:example:NotAnAction", parse_xml(b"<r/>"))
    assert unknown.fault is not None and events == []


def test_a_chained_sink_passes_every_event_on_even_one_it_failed_on() -> None:
    seen: list[audit.AuditEvent] = []

    def failing(event: audit.AuditEvent) -> None:
        raise RuntimeError("storage down")

    before = audit.set_sink(seen.append)
    try:
        previous = audit.chain_sink(failing)
        assert previous is not None
        event = audit.node_authentication_failure(listener="mllp://127.0.0.1:2575", peer_address="192.0.2.9",
                                                  reason="no certificate")
        audit.record(event)  # the failure is swallowed (and logged), the earlier sink still gets the event
        assert seen == [event]
        audit.set_sink(previous)
        audit.record(event)
        assert seen == [event, event]
    finally:
        audit.set_sink(before)
