"""XML helpers of the conformance runner: the one hardened parser, serialisation, local-name lookups."""

from __future__ import annotations

from collections.abc import Iterator

from lxml import etree

from xds_core.safe_xml import XmlParseError, parse_xml


class XmlError(ValueError):
    """A file or an answer is not well-formed (or hostile) XML."""


def parse(data: bytes) -> etree._Element:
    """Parse through the project's one hardened parser (rules: all XML is hostile)."""
    try:
        return parse_xml(data)
    except XmlParseError as exc:
        raise XmlError(str(exc)) from exc


def to_bytes(element: etree._Element) -> bytes:
    return etree.tostring(element, encoding="UTF-8", xml_declaration=False)


def local(element: etree._Element) -> str:
    tag = element.tag
    if not isinstance(tag, str):
        return ""
    return etree.QName(tag).localname


def children(element: etree._Element, name: str | None = None) -> list[etree._Element]:
    """Element children (comments and PIs skipped), optionally of one local name."""
    return [c for c in element if isinstance(c.tag, str) and (name is None or local(c) == name)]


def descendants(element: etree._Element, name: str) -> Iterator[etree._Element]:
    for node in element.iter():
        if isinstance(node.tag, str) and local(node) == name:
            yield node


def first(element: etree._Element, name: str) -> etree._Element | None:
    return next(descendants(element, name), None)


def text_of(element: etree._Element | None) -> str:
    return "".join(element.itertext()).strip() if element is not None else ""
