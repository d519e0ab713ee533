"""Hand-written multipart/related bodies for the "which part is the SOAP root" tests.

Each package holds the root (an envelope with ROOT_ACTION whose body refers to the binary part
by ``xop:Include``), a *decoy* (another well-formed envelope, DECOY_ACTION) and the binary part
``doc@t`` (DOCUMENT: CR/LF, a near-delimiter, NUL and 0xFF).  Written out byte by byte (RFC 2046
§5.1.1 delimiters), not by our MTOM writer.
"""

from __future__ import annotations

import pytest

from xds_core import ns

BOUNDARY = "hand-written-boundary-0001"
ROOT_ACTION = "urn:test:mtom-root:TheRoot"
DECOY_ACTION = "urn:test:mtom-root:TheDecoy"
ROOT_MESSAGE_ID = "urn:uuid:0000aaaa-0000-4000-8000-00000000root"
DOCUMENT = b"\x00binary\r\n--" + BOUNDARY.encode()[:-1] + b"\r\n\xff\r\n"  # CRLF, a near-delimiter, NUL, 0xFF


def _envelope(action: str, message_id: str, *, relates_to: str | None = None, document: bool = False) -> bytes:
    relates = f"<wsa:RelatesTo>{relates_to}</wsa:RelatesTo>" if relates_to else ""
    include = "<xop:Include xmlns:xop='http://www.w3.org/2004/08/xop/include' href='cid:doc%40t'/>" \
        if document else ""
    return (
        f"<env:Envelope xmlns:env='{ns.SOAP12}' xmlns:wsa='{ns.WSA}'><env:Header>"
        f"<wsa:Action env:mustUnderstand='true'>{action}</wsa:Action><wsa:MessageID>{message_id}</wsa:MessageID>"
        f"{relates}</env:Header><env:Body><t:Payload xmlns:t='urn:test:soap'>{include}</t:Payload></env:Body>"
        f"</env:Envelope>").encode()


def _part(content_id: str, content_type: str, content: bytes) -> bytes:
    return (f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: <{content_id}>\r\n\r\n").encode() + content


XOP_TYPE = 'application/xop+xml; charset=UTF-8; type="application/soap+xml"'


def _parts(*, relates_to: str | None = None, root: bytes | None = None) -> dict[str, bytes]:
    if root is None:
        root = _envelope(ROOT_ACTION, ROOT_MESSAGE_ID, relates_to=relates_to, document=True)
    return {
        "root": _part("root@t", XOP_TYPE, root),
        "decoy": _part("decoy@t", XOP_TYPE, _envelope(DECOY_ACTION, "urn:uuid:0000dddd-0000-4000-8000-0000000decoy",
                                                      relates_to=relates_to)),
        "doc": _part("doc@t", "application/octet-stream", DOCUMENT),
    }


def package(order: tuple[str, ...], *, relates_to: str | None = None, root: bytes | None = None) -> bytes:
    """A multipart/related body of the named parts in ``order`` (RFC 2046 §5.1.1 delimiters).

    ``root``: another root envelope (its body refers to the binary part as ``cid:doc%40t``).
    """
    parts = _parts(relates_to=relates_to, root=root)
    body = b"".join(f"--{BOUNDARY}\r\n".encode() + parts[name] + b"\r\n" for name in order)
    return body + f"--{BOUNDARY}--\r\n".encode()


def content_type(start: str | None) -> str:
    value = f'multipart/related; boundary="{BOUNDARY}"; type="application/xop+xml"; start-info="application/soap+xml"'
    return value if start is None else f"{value}; start={start}"


FIRST, MIDDLE, LAST = ("root", "decoy", "doc"), ("decoy", "root", "doc"), ("doc", "decoy", "root")
#: start as RFC 2387 writes it (quoted msg-id), without the brackets, and unquoted with them.
START_FORMS = ['"<root@t>"', '"root@t"', "<root@t>"]
ROOT_CASES = [pytest.param(order, start, id=f"{label}-{form}")
              for label, order in (("root-first", FIRST), ("root-in-the-middle", MIDDLE), ("root-last", LAST))
              for form, start in zip(("brackets", "no-brackets", "unquoted"), START_FORMS, strict=True)]
