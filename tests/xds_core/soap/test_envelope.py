"""SOAP 1.2 + WS-Addressing checks, binary content access and response rendering."""

from __future__ import annotations

import base64
import hashlib
import io

import pytest

from tests.xds_core.soap.soap_helpers import (
    ECHO_ACTION,
    SOAP_CT,
    TEST_NS,
    document_element,
    envelope_text,
    mtom_request,
    payload,
    plain_request,
)
from xds_core import ns
from xds_core.ns import q
from xds_core.safe_xml import parse_xml
from xds_core.soap.envelope import (
    ACCEPTED_UNPROCESSED_HEADERS,
    UNDERSTOOD_HEADERS,
    SoapRequest,
    SoapResponse,
    build_envelope,
    parse_envelope,
)
from xds_core.soap.faults import SoapFault
from xds_core.soap.mtom import IncomingMessage, OutgoingPart
from xds_core.soap.mtom_reader import read_message

ACTION = f"<wsa:Action env:mustUnderstand='true'>{ECHO_ACTION}</wsa:Action>"


def plain(data: bytes, content_type: str = SOAP_CT) -> IncomingMessage:
    return IncomingMessage(data, content_type, False, {})


def fault_of(data: bytes, content_type: str = SOAP_CT) -> SoapFault:
    with pytest.raises(SoapFault) as caught:
        parse_envelope(plain(data, content_type))
    return caught.value


def test_valid_request_yields_addressing_values_and_body() -> None:
    request = parse_envelope(plain(plain_request(body=payload("Query", "x"))))
    assert request.action == ECHO_ACTION
    assert request.message_id == "urn:uuid:00000000-0000-4000-8000-000000000001"
    assert request.to == "http://example.org/xds"
    assert request.reply_to == ns.WSA_ANONYMOUS
    assert request.body.tag == f"{{{TEST_NS}}}Query" and request.body.text == "x"
    assert not request.is_mtom


def test_soap11_envelope_is_version_mismatch() -> None:
    fault = fault_of(envelope_text(ACTION, envelope_ns=ns.SOAP11), "text/xml; charset=utf-8")
    assert fault.code == "VersionMismatch" and fault.http_status == 500


def test_non_envelope_root_is_version_mismatch() -> None:
    assert fault_of(b"<t:Ping xmlns:t='urn:test:soap'/>").code == "VersionMismatch"


def test_soap12_as_text_xml_is_refused_with_415() -> None:
    fault = fault_of(envelope_text(ACTION), "text/xml")
    assert fault.code == "Sender" and fault.http_status == 415


def test_malformed_xml_is_sender_fault() -> None:
    fault = fault_of(b"<env:Envelope xmlns:env='" + ns.SOAP12.encode() + b"'>")
    assert fault.code == "Sender" and fault.http_status == 400


def test_missing_action_is_message_addressing_header_required() -> None:
    fault = fault_of(envelope_text("<wsa:MessageID>urn:uuid:1</wsa:MessageID>"))
    assert (fault.code, fault.subcode) == ("Sender", "wsa:MessageAddressingHeaderRequired")
    assert fault.detail is not None and fault.detail.text == "wsa:Action"


def test_missing_header_is_missing_action() -> None:
    data = f"<env:Envelope xmlns:env='{ns.SOAP12}'><env:Body><x/></env:Body></env:Envelope>".encode()
    assert fault_of(data).subcode == "wsa:MessageAddressingHeaderRequired"


@pytest.mark.parametrize("header", [
    ACTION + ACTION,
    ACTION + "<wsa:MessageID>urn:uuid:1</wsa:MessageID><wsa:MessageID>urn:uuid:2</wsa:MessageID>",
    ACTION + "<wsa:To>a</wsa:To><wsa:To>b</wsa:To>",
])
def test_repeated_addressing_headers_are_invalid_cardinality(header: str) -> None:
    fault = fault_of(envelope_text(header))
    assert (fault.subcode, fault.subsubcode) == ("wsa:InvalidAddressingHeader", "wsa:InvalidCardinality")


def test_unknown_must_understand_header_is_refused() -> None:
    header = ACTION + "<x:Secret xmlns:x='urn:x' env:mustUnderstand='1'/>"
    fault = fault_of(envelope_text(header))
    assert fault.code == "MustUnderstand" and fault.not_understood == ["{urn:x}Secret"]


@pytest.mark.parametrize("block", [
    "<x:Note xmlns:x='urn:x'/>",
    "<x:Note xmlns:x='urn:x' env:mustUnderstand='false'/>",
    "<x:Note xmlns:x='urn:x' env:mustUnderstand='true' env:role='http://www.w3.org/2003/05/soap-envelope/role/none'/>",
    "<x:Note xmlns:x='urn:x' env:mustUnderstand='true' env:role='urn:some-other-node'/>",
    f"<wsse:Security xmlns:wsse='{ns.WSSE}' env:mustUnderstand='true'><x/></wsse:Security>",
    "<wsa:To env:mustUnderstand='true'>http://example.org</wsa:To>",
])
def test_headers_we_may_ignore_are_accepted(block: str) -> None:
    request = parse_envelope(plain(envelope_text(ACTION + block)))
    assert request.action == ECHO_ACTION


def test_header_policy_sets_are_explicit() -> None:
    assert q(ns.WSA, "Action") in UNDERSTOOD_HEADERS
    assert ACCEPTED_UNPROCESSED_HEADERS == {q(ns.WSSE, "Security")}


def test_non_anonymous_reply_to_is_refused() -> None:
    header = ACTION + "<wsa:ReplyTo><wsa:Address>http://elsewhere/cb</wsa:Address></wsa:ReplyTo>"
    assert fault_of(envelope_text(header)).subcode == "wsa:OnlyAnonymousAddressSupported"


def test_empty_body_and_extra_children_are_refused() -> None:
    assert "empty" in fault_of(envelope_text(ACTION, body="")).reason
    data = envelope_text(ACTION).replace(b"</env:Envelope>", b"<env:Body/></env:Envelope>")
    assert fault_of(data).code == "Sender"


# ----------------------------------------------------------------------------- binary()


def test_binary_resolves_xop_include_and_inline_base64() -> None:
    body = payload("Submit")
    body.append(document_element(content_id="doc 1@x"))
    body.append(document_element(inline=b"inline content"))
    content_type, data = mtom_request(ECHO_ACTION, body, [OutgoingPart("doc 1@x", "text/plain", b"attached")])
    message = read_message(content_type, io.BytesIO(data), content_length=len(data), max_size=1 << 30,
                           max_xml_size=1 << 20)
    request = parse_envelope(message)
    assert request.is_mtom
    attached, inline = (request.binary(el) for el in request.body)
    assert attached.read_bytes() == b"attached" and attached.content_type == "text/plain"
    assert inline.read_bytes() == b"inline content"
    assert inline.sha1 == hashlib.sha1(b"inline content").hexdigest() and inline.size == 14


def test_binary_refuses_unknown_cid_and_bad_base64() -> None:
    request = SoapRequest(ECHO_ACTION, None, None, None, None, payload(), {}, True)
    with pytest.raises(SoapFault, match="names no MIME part"):
        request.binary(document_element(content_id="missing@x"))
    bad = document_element()
    bad.text = "not base64!"
    with pytest.raises(SoapFault, match="invalid base64"):
        request.binary(bad)


# ----------------------------------------------------------------------------- responses


def header_values(envelope_bytes: bytes) -> dict[str, str]:
    envelope = parse_xml(envelope_bytes)
    header = envelope.find(q(ns.SOAP12, "Header"))
    return {el.tag.split("}")[1]: el.text or "" for el in header}


def test_plain_response_carries_action_message_id_and_relates_to() -> None:
    content_type, length, chunks = SoapResponse("urn:resp", payload("Answer"), relates_to="urn:uuid:req").render()
    data = b"".join(chunks)
    assert content_type == 'application/soap+xml; charset=UTF-8; action="urn:resp"'
    assert length == len(data)
    values = header_values(data)
    assert values["Action"] == "urn:resp" and values["RelatesTo"] == "urn:uuid:req"
    assert values["MessageID"].startswith("urn:uuid:") and values["MessageID"] != "urn:uuid:req"
    envelope = parse_xml(data)
    action = envelope.find(f"{q(ns.SOAP12, 'Header')}/{q(ns.WSA, 'Action')}")
    assert action.get(q(ns.SOAP12, "mustUnderstand")) == "true"


def test_response_with_attachments_is_mtom_unless_disabled() -> None:
    body = payload("Answer")
    body.append(document_element(content_id="r@x"))
    content_type, _length, chunks = SoapResponse("urn:resp", body, attachments=[
        OutgoingPart("r@x", "application/pdf", b"%PDF")]).render()
    assert content_type.startswith("multipart/related")
    data = b"".join(chunks)
    message = read_message(content_type, io.BytesIO(data), content_length=len(data), max_size=1 << 20,
                           max_xml_size=1 << 20)
    assert message.attachments["r@x"].read_bytes() == b"%PDF"

    body = payload("Answer")
    body.append(document_element(content_id="r@x"))
    content_type, _length, chunks = SoapResponse("urn:resp", body, attachments=[
        OutgoingPart("r@x", "application/pdf", b"%PDF")], mtom=False).render()
    assert content_type.startswith("application/soap+xml")
    envelope = parse_xml(b"".join(chunks))
    doc = envelope.find(f".//{{{TEST_NS}}}Doc")
    assert base64.b64decode(doc.text) == b"%PDF" and len(doc) == 0


def test_build_envelope_generates_message_id_and_marks_to() -> None:
    envelope = build_envelope("urn:a", payload(), to="http://x/y", reply_to=ns.WSA_ANONYMOUS)
    header = envelope.find(q(ns.SOAP12, "Header"))
    assert header.find(q(ns.WSA, "MessageID")).text.startswith("urn:uuid:")
    assert header.find(q(ns.WSA, "To")).get(q(ns.SOAP12, "mustUnderstand")) == "true"
    assert header.find(f"{q(ns.WSA, 'ReplyTo')}/{q(ns.WSA, 'Address')}").text == ns.WSA_ANONYMOUS
