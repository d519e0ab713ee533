"""The one hardened XML parser and the one serializer of the suite.

All XML that reaches us is hostile (DEVELOPERS.md rule 3).  :func:`parse_xml`
is the only entry point that turns bytes into an lxml tree:

* no DTD is loaded, no entity is resolved or expanded, nothing is fetched from
  the network; a document carrying a ``<!DOCTYPE`` at all is refused, so XXE
  (file/URL entities), "billion laughs" and external DTDs never take effect;
* ``huge_tree`` stays off, which keeps libxml2's own safety limits: element
  nesting deeper than :data:`MAX_DEPTH` (256) and single text nodes larger than
  10 MB are refused.  Large binary content travels as MTOM attachments, never
  as a giant inline text node;
* the input size is capped (``max_size``, default :data:`DEFAULT_MAX_XML_SIZE`), and so, when the
  caller asks (``max_nodes``), is its markup: a tree costs libxml2 ~120 bytes per element or
  attribute, so 8 MB of ``<a/>`` would become ~240 MB of tree (x30).  The markup is counted on the
  bytes (:func:`markup_count`) *before* any tree exists, so a refused document never costs more
  than its own bytes;
* bytes that are not valid in the declared encoding (UTF-8 by default) are
  refused instead of being "recovered".
"""

from __future__ import annotations

import threading

from lxml import etree

#: Default size cap of :func:`parse_xml` when the caller gives none (the
#: endpoint passes the configured ``XDS_MAX_XML_SIZE`` instead).
DEFAULT_MAX_XML_SIZE = 64 * 1024 * 1024

#: Default markup limit (:func:`markup_count`) of the SOAP endpoints when the configuration gives
#: none (``XDS_MAX_XML_NODES``).  A realistic ITI-42 counts ~46,000 per MB (~2,000 documents in
#: 14.7 MB count 680,000), so 1,000,000 admits ~3,000 DocumentEntries in one message while a
#: hostile one costs at most ~1,000,000 x ~120 bytes of tree.
DEFAULT_MAX_XML_NODES = 1_000_000

#: Deepest element nesting accepted.  This is libxml2's built-in limit when
#: XML_PARSE_HUGE is off (we never turn it on); tests pin the behaviour.
MAX_DEPTH = 256


class XmlParseError(ValueError):
    """The bytes are not a well-formed, acceptable XML document."""


_local = threading.local()


def _parser() -> etree.XMLParser:
    # lxml parser objects must not be shared between threads (gthread workers,
    # test threads); one per thread, created once.
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            attribute_defaults=False,
            huge_tree=False,
            recover=False,
            remove_blank_text=False,
            collect_ids=False,
        )
        _local.parser = parser
    return parser


def markup_count(data: bytes | bytearray) -> int:
    """An upper bound of the nodes a tree of ``data`` holds: its ``<`` and ``=`` bytes.

    Every element starts with ``<`` (so do end tags, comments and PIs, hence an upper bound) and
    every attribute or namespace declaration has its ``=``; a literal ``<`` cannot appear in text
    or attribute values of well-formed XML.  Counted per chunk as the bytes arrive
    (:func:`xds_core.soap.mtom_reader.read_message`), it needs no state across chunks; two
    ``bytes.count`` passes cost ~3 GB/s, a few percent of what libxml2 takes to parse the same bytes.
    """
    return data.count(b"<") + data.count(b"=")


def markup_refusal(count: int, limit: int) -> str:
    """The one wording of a refused markup count (the parser and the MTOM reader)."""
    return f"XML document with more than {limit} elements and attributes (counted {count} '<' and '=')"


def parse_xml(data: bytes, *, max_size: int | None = None, max_nodes: int | None = None) -> etree._Element:
    """Parse ``data`` with the hardened parser and return the root element.

    :param max_size: largest accepted input in bytes; ``None`` means
        :data:`DEFAULT_MAX_XML_SIZE`.
    :param max_nodes: largest accepted :func:`markup_count`, checked before any tree is built;
        ``None``: not counted (trusted input, or input the caller counted while reading it - the
        SOAP endpoints count in :func:`~xds_core.soap.mtom_reader.read_message`).
    :raises XmlParseError: malformed XML, a DOCTYPE, invalid encoding, too
        large or too deeply nested input, too much markup.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("parse_xml takes bytes")
    limit = DEFAULT_MAX_XML_SIZE if max_size is None else max_size
    if len(data) > limit:
        raise XmlParseError(f"XML document of {len(data)} bytes exceeds the limit of {limit} bytes")
    # Each counted item is one byte: a document no longer than the limit cannot exceed it.
    if max_nodes is not None and len(data) > max_nodes:
        data = bytes(data)
        if (count := markup_count(data)) > max_nodes:
            raise XmlParseError(markup_refusal(count, max_nodes))
    if not data:
        raise XmlParseError("empty XML document")
    try:
        root = etree.fromstring(bytes(data), _parser())
    except etree.XMLSyntaxError as exc:
        raise XmlParseError(f"malformed XML: {exc}") from None
    except (ValueError, etree.LxmlError) as exc:  # e.g. unsupported encoding declaration
        raise XmlParseError(f"unacceptable XML: {exc}") from None
    docinfo = root.getroottree().docinfo
    # Entities are neither loaded nor expanded, but a DOCTYPE has no legitimate
    # use in SOAP (SOAP 1.2 Part 1 §5: "A SOAP message MUST NOT contain a
    # Document Type Declaration"), so refuse it outright.
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise XmlParseError("a DOCTYPE / DTD is not allowed")
    return root


def to_bytes(element: etree._Element, *, xml_declaration: bool = True) -> bytes:
    """Serialize ``element`` as UTF-8 (the one serializer of the suite)."""
    return etree.tostring(element, encoding="UTF-8", xml_declaration=xml_declaration)
