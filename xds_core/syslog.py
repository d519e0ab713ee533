"""Syslog for audit messages (ITI TF-2a 3.20.4.1.2 Record Audit Event): RFC 5424 messages, RFC 5425 / 5426 transport.

* :func:`message` builds ``<85>1 TIMESTAMP HOSTNAME APP-NAME PROCID IHE+RFC-3881 - MSG``: PRI 85 = facility 10
  (security/authorization) * 8 + severity 5 (notice) (3.20.4.1.2 item 2), MSGID ``IHE+RFC-3881`` (item 3), no
  STRUCTURED-DATA (item 4), MSG the UTF-8 audit XML without a BOM (item 5).  Header fields are cut to RFC 5424's
  lengths and printable US-ASCII (6.2: HOSTNAME 255, APP-NAME 48, PROCID 128, MSGID 32), ``-`` when empty.
* :func:`frame` is RFC 5425 4.3 octet counting: ``MSG-LEN SP SYSLOG-MSG``, MSG-LEN the byte count; no trailer.
  :class:`FrameReader` parses such a stream, bounded (a collector, the tests).
* :class:`Destination` is ``tls://host:6514`` (RFC 5425), ``udp://host:514`` (RFC 5426: one message per
  datagram; ITI-20 3.20.4.1.2.1.2: may be truncated, TLS preferred) or ``tcp://host:port`` (octet counting in
  clear: development only).  :class:`Sender` sends a batch over one connection; a successful ``send`` means
  every byte was handed to the peer's TCP stack -- syslog has no application acknowledgement -- so callers
  advance their cursor only after it returns.

Plain Python (no Django); the TLS context (mutual TLS with the node's certificate, ITI-19) is passed in.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import urlsplit

#: facility 10 (security/authorization messages) * 8 + severity 5 (notice): ITI TF-2a 3.20.4.1.2 item 2.
AUDIT_PRI = 10 * 8 + 5
#: ITI TF-2a 3.20.4.1.2 item 3 (kept for backward compatibility with RFC 3881 era collectors).
AUDIT_MSGID = "IHE+RFC-3881"
#: Largest message a :class:`FrameReader` accepts (bytes).  RFC 5425 4.3.1: receivers SHOULD take 8192 and
#: MAY take more; our audit messages are bounded by xds_core.audit_xml (queries up to 64 KiB before base64).
MAX_FRAME = 1024 * 1024
#: RFC 5426 3.2: an IPv4 datagram carries at most 65507 bytes of payload; a longer message cannot be sent.
MAX_DATAGRAM = 65507
_MAX_LEN_DIGITS = 8

_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")


class Transport(StrEnum):
    TLS = "tls"  # RFC 5425, port 6514
    UDP = "udp"  # RFC 5426, port 514
    TCP = "tcp"  # octet counting without TLS: development only


_DEFAULT_PORTS = {Transport.TLS: 6514, Transport.UDP: 514, Transport.TCP: 514}


class SyslogError(Exception):
    """A syslog destination that cannot be used, or a stream that is not octet-counted syslog."""


def _field(value: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, at most ``limit`` characters, ``-`` if empty."""
    cleaned = _NOT_PRINTABLE.sub("_", value)[:limit]
    return cleaned or "-"


def timestamp(when: datetime) -> str:
    """RFC 5424 6.2.3 TIMESTAMP (RFC 3339, UTC, milliseconds)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def message(msg: bytes, *, when: datetime, hostname: str, app_name: str, procid: str = "",
            msgid: str = AUDIT_MSGID, pri: int = AUDIT_PRI) -> bytes:
    """One RFC 5424 SYSLOG-MSG: the header, no STRUCTURED-DATA (``-``), then ``msg`` as it is (UTF-8 XML)."""
    if not 0 <= pri <= 191:
        raise ValueError("PRI must be 0..191 (RFC 5424 6.2.1)")
    header = (f"<{pri}>1 {timestamp(when)} {_field(hostname, 255)} {_field(app_name, 48)} "
              f"{_field(procid, 128)} {_field(msgid, 32)} - ")
    return header.encode("ascii") + msg


def frame(syslog_msg: bytes) -> bytes:
    """RFC 5425 4.3: ``MSG-LEN SP SYSLOG-MSG`` (MSG-LEN: the number of bytes of SYSLOG-MSG)."""
    return b"%d %s" % (len(syslog_msg), syslog_msg)


class FrameReader:
    """Parses an RFC 5425 octet-counted stream fed in pieces; bounded (:data:`MAX_FRAME`, the length's digits)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the messages now complete.  :class:`SyslogError` on a malformed stream."""
        self._buffer += data
        out: list[bytes] = []
        while True:
            space = self._buffer.find(b" ", 0, _MAX_LEN_DIGITS + 1)
            if space < 0:
                if len(self._buffer) > _MAX_LEN_DIGITS:
                    raise SyslogError("octet-counted syslog: no MSG-LEN at the start of a frame")
                return out
            digits = bytes(self._buffer[:space])
            if not digits.isdigit() or digits.startswith(b"0"):
                raise SyslogError("octet-counted syslog: MSG-LEN is not a positive decimal number")
            length = int(digits)
            if length > self.max_frame:
                raise SyslogError(f"octet-counted syslog: a {length}-byte message exceeds {self.max_frame} bytes")
            end = space + 1 + length
            if len(self._buffer) < end:
                return out
            out.append(bytes(self._buffer[space + 1:end]))
            del self._buffer[:end]

    @property
    def pending(self) -> int:
        """Bytes received that do not make a whole frame yet."""
        return len(self._buffer)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where audit messages go: ``tls://host:6514``, ``udp://host:514`` or ``tcp://host:port``."""

    transport: Transport
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Destination:
        parts = urlsplit(url.strip())
        try:
            transport = Transport(parts.scheme.lower())
        except ValueError:
            raise SyslogError(f"syslog destination {url!r}: the scheme must be tls://, udp:// or tcp://") from None
        try:
            port = parts.port or _DEFAULT_PORTS[transport]
        except ValueError:
            raise SyslogError(f"syslog destination {url!r}: bad port") from None
        if not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise SyslogError(f"syslog destination {url!r}: expected {transport.value}://host[:port]")
        return cls(transport, parts.hostname, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport.value}://{host}:{self.port}"


class Sender:
    """Sends syslog messages to one :class:`Destination`: one connection per :meth:`send` (a batch).

    ``context`` is required for TLS (the node's client context: mutual TLS, ITI-19); ``server_hostname`` is
    the destination's host.  Errors are :class:`OSError` (``ssl.SSLError`` included): the caller keeps its
    records and tries again later (ITI TF-2a 3.20.4.1.1: store locally, send when the collector is back).
    """

    def __init__(self, destination: Destination, *, context: ssl.SSLContext | None = None,
                 timeout: float = 10.0) -> None:
        if destination.transport is Transport.TLS and context is None:
            raise SyslogError(f"{destination}: TLS syslog needs this node's TLS settings (XDS_TLS)")
        self.destination = destination
        self.context = context
        self.timeout = timeout

    def send(self, messages: Iterable[bytes]) -> int:
        """Send every message (each a SYSLOG-MSG from :func:`message`); returns how many were sent."""
        if self.destination.transport is Transport.UDP:
            return self._send_udp(messages)
        return self._send_stream(messages)

    def _send_stream(self, messages: Iterable[bytes]) -> int:
        address = (self.destination.host, self.destination.port)
        sent = 0
        with socket.create_connection(address, timeout=self.timeout) as raw:
            stream: socket.socket = raw
            if self.destination.transport is Transport.TLS:
                assert self.context is not None
                stream = self.context.wrap_socket(raw, server_hostname=self.destination.host)
            try:
                chunk = bytearray()
                for msg in messages:
                    chunk += frame(msg)
                    sent += 1
                    if len(chunk) >= 65536:
                        stream.sendall(chunk)
                        chunk.clear()
                if chunk:
                    stream.sendall(chunk)
            finally:
                if stream is not raw:
                    stream.close()
        return sent

    def _send_udp(self, messages: Iterable[bytes]) -> int:
        sent = 0
        family = socket.AF_INET6 if ":" in self.destination.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.settimeout(self.timeout)
            for msg in messages:
                # RFC 5426 3.1: one message per datagram; one that cannot fit is cut (ITI-20 3.20.4.1.2.1.2:
                # the collector repairs truncated XML as it can -- use TLS for large messages).
                udp.sendto(msg[:MAX_DATAGRAM], (self.destination.host, self.destination.port))
                sent += 1
        return sent
