"""SOAP 1.2 envelopes with WS-Addressing 1.0 headers (ITI TF-2x V.3).

:func:`parse_envelope` is the server side: it accepts SOAP 1.2 only, honours
``mustUnderstand`` and enforces the WS-Addressing cardinalities, raising
:class:`~xds_core.soap.faults.SoapFault` for every envelope-level problem.
Whether the ``wsa:Action`` is one the actor supports is decided by the
endpoint (``wsa:ActionNotSupported``).

:class:`SoapResponse` renders a response (plain SOAP or MTOM) carrying the
response ``wsa:Action``, a new ``wsa:MessageID`` and ``wsa:RelatesTo``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass, field
from uuid import uuid4

from lxml import etree

from xds_core import ns
from xds_core.ns import q
from xds_core.safe_xml import XmlParseError, parse_xml, to_bytes
from xds_core.soap.faults import SoapFault, fault_element
from xds_core.soap.mtom import (
    SOAP11_MEDIA_TYPE,
    SOAP_MEDIA_TYPE,
    Attachment,
    BodyChunk,
    IncomingMessage,
    OutgoingPart,
    normalize_cid,
    parse_content_type,
    write_message,
)

_WSA_HEADERS = ("Action", "MessageID", "To", "ReplyTo", "From", "FaultTo", "RelatesTo")

#: Header blocks this SOAP node processes (WS-Addressing 1.0 Core / SOAP Binding).
UNDERSTOOD_HEADERS: frozenset[str] = frozenset(q(ns.WSA, name) for name in _WSA_HEADERS)

#: Header blocks accepted even with ``mustUnderstand="true"`` although we do not
#: process them.  POLICY: ``wsse:Security`` (WS-Security, typically an XUA
#: SAML assertion, ITI-40) is accepted unverified, because this suite
#: authenticates peers at the transport (TLS, ATNA Secure Node) and does not
#: implement XUA.  Refusing it would break every XUA-sending Document
#: Consumer; dcm4che makes the same choice (``WSSESecurityUnderstandPretender``).
#: A deployment that must enforce XUA has to add real processing, not widen this set.
ACCEPTED_UNPROCESSED_HEADERS: frozenset[str] = frozenset({q(ns.WSSE, "Security")})

#: Roles this node plays (SOAP 1.2 Part 1 §2.2); an absent role means ultimateReceiver.
_OUR_ROLES = frozenset({"", ns.SOAP12_ROLE_NEXT, ns.SOAP12_ROLE_ULTIMATE_RECEIVER})
_TRUE = ("true", "1")


def new_message_id() -> str:
    return f"urn:uuid:{uuid4()}"


def resolve_binary(element: etree._Element, attachments: dict[str, Attachment]) -> Attachment:
    """The binary content of a base64Binary element such as ``xdsb:Document``.

    An ``xop:Include`` child yields the referenced MIME part; otherwise the
    element's text is inline base64 (legal even inside an MTOM package,
    NIST toolkit test PnrXop/NoXop) and is decoded into an in-memory :class:`Attachment`, so
    that downstream code handles both forms alike.

    :raises SoapFault: (Sender) an Include naming no part, or invalid base64.
    """
    include = element.find(q(ns.XOP, "Include"))
    if include is not None:
        href = include.get("href") or ""
        if not href.lower().startswith("cid:"):
            raise SoapFault("Sender", f"xop:Include must reference a MIME part with a cid: URL, got {href!r}")
        attachment = attachments.get(normalize_cid(href))
        if attachment is None:
            raise SoapFault("Sender", f"xop:Include href={href!r} names no MIME part of this message")
        return attachment
    if any(isinstance(child.tag, str) for child in element):
        raise SoapFault("Sender", f"{etree.QName(element).localname} must hold base64 text or one xop:Include")
    text = (element.text or "").encode("ascii", "replace").translate(None, b" \t\r\n")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SoapFault("Sender", f"{etree.QName(element).localname} holds invalid base64 content") from None
    content_type = element.get(q(ns.XMIME, "contentType")) or "application/octet-stream"
    return Attachment.from_bytes(f"inline-{uuid4().hex}", content_type, data)


@dataclass
class SoapRequest:
    """A received, checked SOAP 1.2 request."""

    action: str
    message_id: str | None
    to: str | None
    reply_to: str | None
    header: etree._Element | None
    body: etree._Element  # the first child element of env:Body
    attachments: dict[str, Attachment] = field(default_factory=dict)
    is_mtom: bool = False

    def binary(self, element: etree._Element) -> Attachment:
        """See :func:`resolve_binary`."""
        return resolve_binary(element, self.attachments)

    def close(self) -> None:
        for attachment in self.attachments.values():
            attachment.close()


def inline_parts(envelope: etree._Element, parts: list[OutgoingPart]) -> None:
    """Replace every ``xop:Include`` in ``envelope`` by the base64 of its part (no MTOM)."""
    by_cid = {part.content_id: part for part in parts}
    for include in list(envelope.iter(q(ns.XOP, "Include"))):
        part = by_cid.get(normalize_cid(include.get("href") or ""))
        if part is None:
            raise ValueError(f"xop:Include {include.get('href')!r} names no outgoing part")
        parent = include.getparent()
        assert parent is not None
        parent.remove(include)
        parent.text = base64.b64encode(part.read_bytes()).decode("ascii")


def soap_content_type(action: str | None) -> str:
    """Content-Type of a plain SOAP 1.2 message (RFC 3902 ``action`` parameter)."""
    return f'{SOAP_MEDIA_TYPE}; charset=UTF-8; action="{action}"' if action else f"{SOAP_MEDIA_TYPE}; charset=UTF-8"


def render_message(envelope: etree._Element, parts: list[OutgoingPart], *, action: str | None,
                   mtom: bool | None) -> tuple[str, int | None, Iterator[bytes]]:
    """Serialize ``envelope`` plain or as MTOM (``mtom=None``: MTOM iff ``parts``)."""
    use_mtom = bool(parts) if mtom is None else mtom
    if use_mtom:
        return write_message(to_bytes(envelope), parts, action=action)
    if parts:
        inline_parts(envelope, parts)
    xml = to_bytes(envelope)
    return soap_content_type(action), len(xml), iter((xml,))


@dataclass
class SoapResponse:
    """A response to render: the body element plus optional binary parts."""

    action: str
    body: etree._Element
    relates_to: str | None = None
    attachments: list[OutgoingPart] = field(default_factory=list)
    mtom: bool | None = None  # None: MTOM iff there are attachments

    def render(self) -> tuple[str, int | None, Iterator[BodyChunk]]:
        """``(Content-Type, length or None, body chunks)``; the body element moves into the envelope.

        A chunk is bytes or a gathered group of buffers (:data:`~xds_core.soap.mtom.Gathered`).
        """
        envelope = build_envelope(self.action, self.body, relates_to=self.relates_to)
        return render_message(envelope, self.attachments, action=self.action, mtom=self.mtom)


def build_envelope(
    action: str,
    body: etree._Element,
    *,
    to: str | None = None,
    message_id: str | None = None,
    relates_to: str | None = None,
    reply_to: str | None = None,
) -> etree._Element:
    """A SOAP 1.2 envelope with WS-Addressing headers around ``body``.

    ``wsa:Action`` (and ``wsa:To`` when given) are marked mustUnderstand;
    ``wsa:MessageID`` is generated when not given.  ``body`` is moved (not
    copied) into the new envelope.
    """
    envelope = etree.Element(q(ns.SOAP12, "Envelope"), nsmap={"env": ns.SOAP12, "wsa": ns.WSA})
    header = etree.SubElement(envelope, q(ns.SOAP12, "Header"))
    must_understand = q(ns.SOAP12, "mustUnderstand")
    etree.SubElement(header, q(ns.WSA, "Action"), {must_understand: "true"}).text = action
    etree.SubElement(header, q(ns.WSA, "MessageID")).text = message_id or new_message_id()
    if reply_to:
        etree.SubElement(etree.SubElement(header, q(ns.WSA, "ReplyTo")), q(ns.WSA, "Address")).text = reply_to
    if to:
        etree.SubElement(header, q(ns.WSA, "To"), {must_understand: "true"}).text = to
    if relates_to:
        etree.SubElement(header, q(ns.WSA, "RelatesTo")).text = relates_to
    etree.SubElement(envelope, q(ns.SOAP12, "Body")).append(body)
    return envelope


def _elements(parent: etree._Element) -> list[etree._Element]:
    return [child for child in parent if isinstance(child.tag, str)]


def _root_is_soap11_media(message: IncomingMessage) -> bool:
    media, params = parse_content_type(message.root_content_type)
    return media == SOAP11_MEDIA_TYPE or params.get("type", "").lower() == SOAP11_MEDIA_TYPE


def parse_soap12(message: IncomingMessage, *, strict_media_type: bool = True
                 ) -> tuple[etree._Element, etree._Element | None, etree._Element]:
    """Parse the root part into ``(Envelope, Header or None, Body)``; SOAP 1.2 only.

    ``strict_media_type=False`` (client side) tolerates a SOAP 1.2 envelope
    labelled ``text/xml`` by a lenient peer.

    :raises SoapFault: VersionMismatch for anything but a SOAP 1.2 Envelope,
        Sender for malformed XML or a malformed envelope.
    """
    try:
        # The configured size limit was applied while reading the message.
        envelope = parse_xml(message.root, max_size=max(len(message.root), 1))
    except XmlParseError as exc:
        raise SoapFault("Sender", str(exc)) from None
    if envelope.tag != q(ns.SOAP12, "Envelope"):
        # SOAP 1.2 Part 1 §5.4.7: VersionMismatch for any other root element.
        found = "a SOAP 1.1 envelope" if envelope.tag == q(ns.SOAP11, "Envelope") else f"<{envelope.tag}>"
        raise SoapFault("VersionMismatch", f"expected a SOAP 1.2 Envelope ({ns.SOAP12}), got {found}")
    if strict_media_type and _root_is_soap11_media(message):
        raise SoapFault("Sender", f"SOAP 1.2 messages are sent as {SOAP_MEDIA_TYPE}, not text/xml", http_status=415)
    children = _elements(envelope)
    header = children[0] if children and children[0].tag == q(ns.SOAP12, "Header") else None
    rest = children[1:] if header is not None else children
    if len(rest) != 1 or rest[0].tag != q(ns.SOAP12, "Body"):
        raise SoapFault("Sender", "a SOAP 1.2 Envelope holds an optional Header and exactly one Body")
    return envelope, header, rest[0]


def _check_must_understand(header: etree._Element) -> None:
    not_understood = []
    for block in _elements(header):
        if (block.get(q(ns.SOAP12, "mustUnderstand")) or "").strip() not in _TRUE:
            continue
        if (block.get(q(ns.SOAP12, "role")) or "").strip() not in _OUR_ROLES:
            continue  # targeted at another node (or role "none"): not ours to understand
        if block.tag not in UNDERSTOOD_HEADERS and block.tag not in ACCEPTED_UNPROCESSED_HEADERS:
            not_understood.append(block.tag)
    if not_understood:
        names = ", ".join(not_understood)
        raise SoapFault("MustUnderstand", f"header block(s) not understood: {names}", not_understood=not_understood)


def _single(header: etree._Element | None, name: str, *, required: bool = False) -> etree._Element | None:
    found = header.findall(q(ns.WSA, name)) if header is not None else []
    if len(found) > 1:
        raise SoapFault("Sender", f"wsa:{name} appears {len(found)} times (at most once allowed)",
                        subcode="wsa:InvalidAddressingHeader", subsubcode="wsa:InvalidCardinality")
    if not found and required:
        detail = etree.Element(q(ns.WSA, "ProblemHeaderQName"), nsmap={"wsa": ns.WSA})
        detail.text = f"wsa:{name}"
        raise SoapFault("Sender", f"required WS-Addressing header wsa:{name} is missing",
                        subcode="wsa:MessageAddressingHeaderRequired", detail=detail)
    return found[0] if found else None


def _text(element: etree._Element | None) -> str | None:
    if element is None:
        return None
    return (element.text or "").strip() or None


def parse_envelope(message: IncomingMessage) -> SoapRequest:
    """Check a received message as a SOAP 1.2 / WS-Addressing request.

    Order of checks: XML well-formedness and SOAP version, mustUnderstand
    (SOAP 1.2 Part 1 §5.2.3: processed before anything else), WS-Addressing
    cardinalities (Action exactly once; MessageID, To, ReplyTo, From, FaultTo
    at most once), a non-empty Body.

    :raises SoapFault: for every envelope-level problem.
    """
    _envelope, header, body = parse_soap12(message)
    if header is not None:
        _check_must_understand(header)
    action = _text(_single(header, "Action", required=True))
    if not action:
        raise SoapFault("Sender", "wsa:Action is empty", subcode="wsa:InvalidAddressingHeader")
    message_id = _text(_single(header, "MessageID"))
    to = _text(_single(header, "To"))
    reply_to_el = _single(header, "ReplyTo")
    for name in ("From", "FaultTo"):
        _single(header, name)
    reply_to = None
    if reply_to_el is not None:
        reply_to = _text(reply_to_el.find(q(ns.WSA, "Address")))
        if reply_to not in (None, ns.WSA_ANONYMOUS, ns.WSA_NONE):
            # Every transaction here is synchronous (ITI TF-2x V.3: ReplyTo = anonymous).
            raise SoapFault("Sender", f"only the anonymous ReplyTo address is supported, got {reply_to!r}",
                            subcode="wsa:OnlyAnonymousAddressSupported")
    payload = _elements(body)
    if not payload:
        raise SoapFault("Sender", "the SOAP Body is empty")
    return SoapRequest(action=action, message_id=message_id, to=to, reply_to=reply_to, header=header,
                       body=payload[0], attachments=message.attachments, is_mtom=message.is_mtom)


def render_fault(fault: SoapFault, *, relates_to: str | None = None) -> bytes:
    """The complete SOAP 1.2 envelope of a fault message, as UTF-8 bytes.

    The header carries ``wsa:Action`` = the WS-Addressing fault action
    (WS-Addressing 1.0 SOAP Binding §6), a new ``wsa:MessageID`` and, when the
    request's MessageID is known, ``wsa:RelatesTo``.
    """
    envelope = build_envelope(ns.WSA_FAULT_ACTION, fault_element(fault), relates_to=relates_to)
    header = envelope.find(q(ns.SOAP12, "Header"))
    assert header is not None
    if fault.code == "VersionMismatch":
        # SOAP 1.2 Part 1 §5.4.7: name the envelope version we do support.
        upgrade = etree.SubElement(header, q(ns.SOAP12, "Upgrade"))
        supported = etree.SubElement(upgrade, q(ns.SOAP12, "SupportedEnvelope"))
        supported.set("qname", "env:Envelope")
    if fault.not_understood:
        for index, clark in enumerate(fault.not_understood):
            qname = etree.QName(clark)
            prefix = f"nu{index}"
            block = etree.SubElement(header, q(ns.SOAP12, "NotUnderstood"), nsmap={prefix: qname.namespace or ""})
            block.set("qname", f"{prefix}:{qname.localname}" if qname.namespace else qname.localname)
    return to_bytes(envelope)
