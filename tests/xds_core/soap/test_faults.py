"""SOAP 1.2 Fault rendering and parsing."""

from __future__ import annotations

import pytest
from lxml import etree

from xds_core import ns
from xds_core.ns import q
from xds_core.safe_xml import parse_xml
from xds_core.soap.envelope import render_fault
from xds_core.soap.faults import SoapFault, parse_fault


def rendered(fault: SoapFault, relates_to: str | None = None) -> etree._Element:
    return parse_xml(render_fault(fault, relates_to=relates_to))


def test_sender_fault_structure_and_addressing() -> None:
    envelope = rendered(SoapFault("Sender", "unknown action", subcode="wsa:ActionNotSupported"), "urn:uuid:req")
    header = envelope.find(q(ns.SOAP12, "Header"))
    assert header.find(q(ns.WSA, "Action")).text == ns.WSA_FAULT_ACTION
    assert header.find(q(ns.WSA, "RelatesTo")).text == "urn:uuid:req"
    assert header.find(q(ns.WSA, "MessageID")).text.startswith("urn:uuid:")
    fault = envelope.find(f"{q(ns.SOAP12, 'Body')}/{q(ns.SOAP12, 'Fault')}")
    value = fault.find(f"{q(ns.SOAP12, 'Code')}/{q(ns.SOAP12, 'Value')}")
    assert value.text == "env:Sender" and value.nsmap["env"] == ns.SOAP12
    sub = fault.find(f"{q(ns.SOAP12, 'Code')}/{q(ns.SOAP12, 'Subcode')}/{q(ns.SOAP12, 'Value')}")
    assert sub.text == "wsa:ActionNotSupported" and sub.nsmap["wsa"] == ns.WSA
    text = fault.find(f"{q(ns.SOAP12, 'Reason')}/{q(ns.SOAP12, 'Text')}")
    assert text.text == "unknown action" and text.get(q(ns.XML, "lang")) == "en"


@pytest.mark.parametrize(("code", "status"), [
    ("Sender", 400), ("Receiver", 500), ("MustUnderstand", 500), ("VersionMismatch", 500)])
def test_http_status_follows_the_soap12_http_binding(code: str, status: int) -> None:
    assert SoapFault(code, "x").http_status == status


def test_unknown_fault_code_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        SoapFault("Client", "SOAP 1.1 code")


def test_round_trip_with_subsubcode_detail_and_foreign_subcode() -> None:
    detail = etree.Element(q(ns.WSA, "ProblemHeaderQName"))
    detail.text = "wsa:Action"
    original = SoapFault("Sender", "twice", subcode="wsa:InvalidAddressingHeader",
                         subsubcode="wsa:InvalidCardinality", detail=detail)
    envelope = rendered(original)
    parsed = parse_fault(envelope.find(f".//{q(ns.SOAP12, 'Fault')}"))
    assert (parsed.code, parsed.subcode, parsed.subsubcode, parsed.reason) == (
        "Sender", "wsa:InvalidAddressingHeader", "wsa:InvalidCardinality", "twice")
    assert parsed.detail is not None and parsed.detail.text == "wsa:Action"

    foreign = rendered(SoapFault("Receiver", "busy", subcode="{urn:vendor}Busy"))
    assert parse_fault(foreign.find(f".//{q(ns.SOAP12, 'Fault')}")).subcode == "{urn:vendor}Busy"


def test_must_understand_fault_names_the_blocks() -> None:
    envelope = rendered(SoapFault("MustUnderstand", "no", not_understood=["{urn:x}Secret"]))
    block = envelope.find(f"{q(ns.SOAP12, 'Header')}/{q(ns.SOAP12, 'NotUnderstood')}")
    prefix, local = block.get("qname").split(":")
    assert local == "Secret" and block.nsmap[prefix] == "urn:x"


def test_version_mismatch_fault_names_the_supported_envelope() -> None:
    envelope = rendered(SoapFault("VersionMismatch", "SOAP 1.1"))
    supported = envelope.find(f"{q(ns.SOAP12, 'Header')}/{q(ns.SOAP12, 'Upgrade')}/{q(ns.SOAP12, 'SupportedEnvelope')}")
    prefix, local = supported.get("qname").split(":")
    assert local == "Envelope" and supported.nsmap[prefix] == ns.SOAP12
