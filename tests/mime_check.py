"""An MTOM package read by Python's own MIME parser, not by ours (breaks the writer/reader circle).

:func:`independent_mtom_read` feeds ``Content-Type: <header>`` + the HTTP body to
``email.parser.BytesParser`` and checks the package the way the standards define it:

* RFC 2387 §3.2: the ``start`` parameter is the Content-ID (a msg-id, ``<...>``) of the root
  part - exactly one part carries it, wherever it is;
* XOP 1.0 §4.1 / SOAP MTOM 1.0 §3: the root part is ``application/xop+xml`` with
  ``type="application/soap+xml"``, and holds the SOAP envelope;
* XOP 1.0 §3 and RFC 2392: every ``xop:Include/@href`` is a ``cid:`` URL (the URL-encoded
  Content-ID without brackets) naming one of the package's parts.

It returns the SOAP envelope and, per ``href``, the bytes of the part it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesParser
from urllib.parse import unquote

from lxml import etree

from xds_core import ns

XOP_INCLUDE = f"{{{ns.XOP}}}Include"


@dataclass
class MimeReading:
    """What the stdlib parser found."""

    envelope: etree._Element
    root_index: int  # position of the root part in the package (0 = first)
    part_count: int
    included: dict[str, bytes]  # xop:Include/@href -> the named part's content


def independent_mtom_read(content_type: str, body: bytes) -> MimeReading:
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    assert not message.defects, message.defects
    assert message.get_content_type() == "multipart/related"
    assert message.get_param("type") == "application/xop+xml"
    start = message.get_param("start")
    assert isinstance(start, str) and start.startswith("<") and start.endswith(">"), start
    parts: list[Message] = message.get_payload()  # type: ignore[assignment]
    by_cid: dict[str, Message] = {}
    for part in parts:
        cid = part["Content-ID"]
        assert cid and cid not in by_cid, f"missing or repeated Content-ID {cid!r}"
        by_cid[str(cid)] = part
    roots = [i for i, part in enumerate(parts) if part["Content-ID"] == start]
    assert len(roots) == 1, f"start={start} names {len(roots)} parts"
    root = parts[roots[0]]
    assert root.get_content_type() == "application/xop+xml"
    assert root.get_param("type") == "application/soap+xml"
    envelope = etree.fromstring(root.get_payload(decode=True))
    assert envelope.tag == f"{{{ns.SOAP12}}}Envelope"
    included: dict[str, bytes] = {}
    for include in envelope.iter(XOP_INCLUDE):
        href = include.get("href", "")
        assert href.startswith("cid:"), href
        target = by_cid.get(f"<{unquote(href[4:])}>")
        assert target is not None, f"xop:Include href={href} names no part"
        content = target.get_payload(decode=True)
        assert isinstance(content, bytes)
        included[href] = content
    return MimeReading(envelope, roots[0], len(parts), included)
