"""Builders shared by the SOAP-layer tests: raw SOAP 1.2 requests as bytes."""

from __future__ import annotations

from lxml import etree

from xds_core import ns
from xds_core.safe_xml import to_bytes
from xds_core.soap.envelope import build_envelope
from xds_core.soap.mtom import OutgoingPart, write_message

SOAP_CT = 'application/soap+xml; charset=UTF-8'
TEST_NS = "urn:test:soap"
ECHO_ACTION = "urn:test:Echo"


def payload(name: str = "Ping", text: str | None = None) -> etree._Element:
    element = etree.Element(f"{{{TEST_NS}}}{name}", nsmap={"t": TEST_NS})
    element.text = text
    return element


def plain_request(action: str = ECHO_ACTION, body: etree._Element | None = None,
                  message_id: str = "urn:uuid:00000000-0000-4000-8000-000000000001") -> bytes:
    envelope = build_envelope(action, body if body is not None else payload(), message_id=message_id,
                              to="http://example.org/xds", reply_to=ns.WSA_ANONYMOUS)
    return to_bytes(envelope)


def envelope_text(header: str, body: str = "<t:Ping xmlns:t='urn:test:soap'/>",
                  envelope_ns: str = ns.SOAP12) -> bytes:
    """A hand-written envelope (for malformed-header cases)."""
    return (
        f"<?xml version='1.0' encoding='UTF-8'?>"
        f"<env:Envelope xmlns:env='{envelope_ns}' xmlns:wsa='{ns.WSA}'>"
        f"<env:Header>{header}</env:Header><env:Body>{body}</env:Body></env:Envelope>"
    ).encode()


def mtom_request(action: str, body: etree._Element, parts: list[OutgoingPart],
                 message_id: str = "urn:uuid:00000000-0000-4000-8000-000000000002") -> tuple[str, bytes]:
    envelope = build_envelope(action, body, message_id=message_id)
    content_type, length, chunks = write_message(to_bytes(envelope), parts, action=action)
    data = b"".join(chunks)
    assert length == len(data)
    return content_type, data


def document_element(content_id: str | None = None, inline: bytes | None = None) -> etree._Element:
    """``<t:Doc>`` holding an xop:Include to ``content_id`` or inline base64."""
    import base64

    from xds_core.soap.mtom import cid_href

    doc = etree.Element(f"{{{TEST_NS}}}Doc", nsmap={"t": TEST_NS, "xop": ns.XOP})
    if content_id is not None:
        etree.SubElement(doc, f"{{{ns.XOP}}}Include", href=cid_href(content_id))
    if inline is not None:
        doc.text = base64.b64encode(inline).decode()
    return doc
