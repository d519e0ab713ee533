"""Vectored writes of a streamed answer straight to the client's socket, under gunicorn.

Why: a RAD-69 answer relays ~20 MB of a PACS's answer as ~1,000 pieces (our MIME heads
next to views into the buffers the PACS's bytes arrived in).  Through plain WSGI every
group of pieces must first become one ``bytes`` object (a join: copy 1), and gunicorn
then copies it again to put its chunk framing around it (``gunicorn.util.write_chunk``:
copy 2) before ``sendall``.  With ``sendmsg(2)`` the kernel gathers the pieces itself,
and those two passes over every byte - CPU that the PACS and the consumer need on the
same cores - disappear.

How: :func:`install` (called by ``config/wsgi.py`` for every request) recognises the
``start_response`` of gunicorn's ``Response`` and puts a :class:`DirectWriter` in the
WSGI environ under :data:`ENVIRON_KEY`.  The endpoint hands it to the answer's body;
a gathered group (:data:`xds_core.soap.mtom.Gathered`) is then written directly and
an empty ``bytes`` goes back to the WSGI server instead, which writes nothing for it.
Everything stays in order because it is one thread writing one socket synchronously.

The contract with gunicorn (pinned in requirements.txt; checked against a real gunicorn
``Response`` in ``tests/xds_registry/test_direct_write.py`` and end to end in
``tests/imaging_source/test_rad69_over_http.py``) is the attributes its own
``Response.write`` uses: ``sock``, ``chunked``, ``response_length``, ``sent``, ``headers``
and ``send_headers()``.  The framing is the one gunicorn applies itself (chunked transfer
coding, RFC 9112 7.1: hex size CRLF data CRLF); gunicorn still writes the last chunk
when the response closes.  A response with a Content-Length (gunicorn counts and caps
what it sends) or a Content-Encoding (a middleware re-encodes the body), a TLS socket (no
``sendmsg``) or any other WSGI server gets the groups joined, as before.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

#: The WSGI environ key of this request's :class:`DirectWriter` (absent: join and yield).
ENVIRON_KEY = "xds.direct_writer"

Buffer = bytes | bytearray | memoryview

#: Most buffers one sendmsg(2) takes (POSIX IOV_MAX; Linux: 1024).
try:
    IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
except (ValueError, OSError, AttributeError):  # pragma: no cover - platforms without the name
    IOV_MAX = 1024


def send_all(sock: socket.socket, pieces: Sequence[Buffer]) -> int:
    """Send every byte of ``pieces`` in order with as few ``sendmsg`` calls as the kernel allows.

    ``sendmsg`` may send less than asked (a signal, a send timeout, a non-blocking socket
    whose buffer filled): what was sent is skipped and the rest re-sent, a partly sent
    buffer as a view of its remainder.  Returns the number of bytes sent.
    """
    queue: list[Buffer] = [piece for piece in pieces if len(piece)]
    total = 0
    start = 0
    while start < len(queue):
        sent = sock.sendmsg(queue[start:start + IOV_MAX])
        total += sent
        while sent:
            size = len(queue[start])
            if sent >= size:
                sent -= size
                start += 1
            else:
                queue[start] = memoryview(queue[start])[sent:]
                sent = 0
    return total


class DirectWriter:
    """Writes gathered groups to the client's socket in gunicorn's framing (see the module doc)."""

    __slots__ = ("_response",)

    def __init__(self, response: Any) -> None:
        self._response = response

    def write(self, pieces: Sequence[Buffer]) -> bool:
        """Send ``pieces`` as one piece of the body; False (nothing sent) when this answer cannot be."""
        response = self._response
        if response.response_length is not None:
            return False  # gunicorn caps a Content-Length answer at its length: let it count
        if any(name.lower() == "content-encoding" for name, _value in response.headers):
            return False  # a middleware (GZip) re-encodes the body: it must see every byte
        size = sum(len(piece) for piece in pieces)
        response.send_headers()  # the status line and headers first (idempotent)
        if not size:
            return True  # an empty chunk would end a chunked body
        if response.chunked:
            send_all(response.sock, [b"%X\r\n" % size, *pieces, b"\r\n"])
        else:
            send_all(response.sock, pieces)
        response.sent += size
        return True


def install(environ: dict[str, Any], start_response: Any) -> None:
    """Offer a :class:`DirectWriter` to the application when gunicorn serves this request in plain HTTP."""
    response = getattr(start_response, "__self__", None)
    if response is None:
        return
    try:
        from gunicorn.http.wsgi import Response
    except ImportError:  # pragma: no cover - another WSGI server without gunicorn installed
        return
    sock = getattr(response, "sock", None)
    # Exactly socket.socket: an ssl.SSLSocket (a subclass) has no sendmsg.
    if isinstance(response, Response) and type(sock) is socket.socket:
        environ[ENVIRON_KEY] = DirectWriter(response)
