"""SOAP 1.2 Faults: for transport and envelope problems only.

Business errors (unknown patient, bad metadata, missing document, ...) are
*not* faults: they travel in a RegistryResponse / AdhocQueryResponse with a
RegistryErrorList (ITI TF-2x V.3 / ITI TF-3 4.2.4).  A fault says the message could not be
processed as SOAP at all: malformed or hostile XML, SOAP 1.1, a missing or
unknown ``wsa:Action``, a mustUnderstand header we do not understand, a broken
MTOM package.

HTTP status codes follow the SOAP 1.2 HTTP binding (SOAP 1.2 Part 2 §7.5.2.2,
Table 20): ``env:Sender`` -> 400, every other code -> 500.  The endpoint may
override it for the request-size (413) and media-type (415) refusals.
"""

from __future__ import annotations

from lxml import etree

from xds_core import ns
from xds_core.ns import q

#: SOAP 1.2 fault codes (Part 1 §5.4.6) and their HTTP status (Part 2 Table 20).
FAULT_HTTP_STATUS: dict[str, int] = {
    "Sender": 400,
    "Receiver": 500,
    "MustUnderstand": 500,
    "VersionMismatch": 500,
    "DataEncodingUnknown": 500,
}

#: Prefixes understood in subcode names ("wsa:ActionNotSupported").
_PREFIXES = {"wsa": ns.WSA, "env": ns.SOAP12, "soap": ns.SOAP12}


def _qname_to_clark(name: str) -> str:
    prefix, sep, local = name.partition(":")
    if sep and prefix in _PREFIXES:
        return q(_PREFIXES[prefix], local)
    return name


def _clark_to_short(clark: str) -> str:
    if clark.startswith("{"):
        namespace, _, local = clark[1:].partition("}")
        for prefix, uri in _PREFIXES.items():
            if uri == namespace and prefix != "soap":
                return f"{prefix}:{local}"
    return clark


class SoapFault(Exception):
    """A SOAP 1.2 fault to answer (server side) or that was answered (client side).

    :param code: ``"Sender"``, ``"Receiver"``, ``"MustUnderstand"`` or ``"VersionMismatch"``.
    :param subcode: e.g. ``"wsa:ActionNotSupported"`` (``wsa:``-prefixed or
        Clark notation ``{ns}local``).
    :param subsubcode: a second-level subcode, e.g. ``"wsa:InvalidCardinality"``.
    :param detail: an element put into ``env:Detail`` (e.g. ``wsa:ProblemAction``).
    :param not_understood: Clark names of header blocks not understood
        (rendered as ``env:NotUnderstood``, SOAP 1.2 Part 1 §5.4.8).
    """

    def __init__(
        self,
        code: str,
        reason: str,
        *,
        subcode: str | None = None,
        subsubcode: str | None = None,
        http_status: int | None = None,
        detail: etree._Element | None = None,
        not_understood: list[str] | None = None,
    ) -> None:
        if code not in FAULT_HTTP_STATUS:
            raise ValueError(f"not a SOAP 1.2 fault code: {code!r}")
        super().__init__(f"{code}{'/' + subcode if subcode else ''}: {reason}")
        self.code = code
        self.subcode = subcode
        self.subsubcode = subsubcode
        self.reason = reason
        self.http_status = http_status if http_status is not None else FAULT_HTTP_STATUS[code]
        self.detail = detail
        self.not_understood = list(not_understood or [])


def fault_element(fault: SoapFault) -> etree._Element:
    """The ``env:Fault`` element for ``fault``."""
    element = etree.Element(q(ns.SOAP12, "Fault"), nsmap={"env": ns.SOAP12, "wsa": ns.WSA})
    code = etree.SubElement(element, q(ns.SOAP12, "Code"))
    etree.SubElement(code, q(ns.SOAP12, "Value")).text = f"env:{fault.code}"
    parent = code
    for sub in (fault.subcode, fault.subsubcode):
        if not sub:
            break
        parent = etree.SubElement(parent, q(ns.SOAP12, "Subcode"))
        value = etree.SubElement(parent, q(ns.SOAP12, "Value"))
        clark = _qname_to_clark(sub)
        if clark.startswith("{"):
            value.text = etree.QName(clark).localname
            namespace = etree.QName(clark).namespace
            prefix = next((p for p, u in value.nsmap.items() if u == namespace), None)
            if prefix is None:
                # A namespace we do not pre-declare: declare it on the Value itself.
                new = etree.Element(q(ns.SOAP12, "Value"), nsmap={"sc": namespace})
                parent.replace(value, new)
                value, prefix = new, "sc"
            value.text = f"{prefix}:{etree.QName(clark).localname}"
        else:
            value.text = sub
    reason = etree.SubElement(element, q(ns.SOAP12, "Reason"))
    text = etree.SubElement(reason, q(ns.SOAP12, "Text"))
    text.set(q(ns.XML, "lang"), "en")
    text.text = fault.reason
    if fault.detail is not None:
        etree.SubElement(element, q(ns.SOAP12, "Detail")).append(fault.detail)
    return element


def parse_fault(element: etree._Element) -> SoapFault:
    """Read an ``env:Fault`` element (client side) into a :class:`SoapFault`."""

    def resolve(value: etree._Element | None) -> str | None:
        if value is None or not (value.text or "").strip():
            return None
        text = value.text.strip()
        prefix, sep, local = text.partition(":")
        namespace = value.nsmap.get(prefix if sep else None)
        if namespace is None:
            return text
        return _clark_to_short(q(namespace, local if sep else text))

    code_value = resolve(element.find(f"{q(ns.SOAP12, 'Code')}/{q(ns.SOAP12, 'Value')}")) or "Receiver"
    code = code_value.rpartition("}")[2].rpartition(":")[2]
    if code not in FAULT_HTTP_STATUS:
        code = "Receiver"
    sub = element.find(f"{q(ns.SOAP12, 'Code')}/{q(ns.SOAP12, 'Subcode')}")
    subcode = resolve(sub.find(q(ns.SOAP12, "Value"))) if sub is not None else None
    subsub = sub.find(q(ns.SOAP12, "Subcode")) if sub is not None else None
    subsubcode = resolve(subsub.find(q(ns.SOAP12, "Value"))) if subsub is not None else None
    texts = element.findall(f"{q(ns.SOAP12, 'Reason')}/{q(ns.SOAP12, 'Text')}")
    reason = next((t.text or "" for t in texts if t.get(q(ns.XML, "lang"), "").startswith("en")),
                  texts[0].text or "" if texts else "")
    detail_el = element.find(q(ns.SOAP12, "Detail"))
    detail = next(iter(detail_el), None) if detail_el is not None else None
    return SoapFault(code, reason.strip(), subcode=subcode, subsubcode=subsubcode, detail=detail)
