"""Outbound SOAP 1.2 for every actor and for the conformance runner.

``SoapClient("http://host/xds/registry").call(action, body)`` sends a real
SOAP 1.2 / WS-Addressing request (MTOM when binary parts are given) and reads
the answer incrementally: large retrieved documents spill to temporary files
as :class:`~xds_core.soap.mtom.Attachment` (close them when done).

``SoapClient("local:registry")`` sends the same bytes to this process's
endpoint of that name (no socket, still real SOAP), which is how the actors of one
server talk to each other unless a URL is configured.  Each actor registers its
endpoint here (:func:`register_local_endpoint`, from its AppConfig); this module
knows no actor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import requests
import urllib3
from lxml import etree

from xds_core import ns
from xds_core.ns import q
from xds_core.soap.envelope import (
    build_envelope,
    new_message_id,
    parse_soap12,
    render_message,
    resolve_binary,
)
from xds_core.soap.faults import SoapFault, parse_fault
from xds_core.soap.mtom import (
    MULTIPART_RELATED,
    SOAP11_MEDIA_TYPE,
    SOAP_MEDIA_TYPE,
    Attachment,
    IncomingMessage,
    MtomError,
    OutgoingPart,
    parse_content_type,
)
from xds_core.soap.mtom_reader import IteratorReader, read_message

LOCAL_SCHEME = "local:"

#: Runs one exchange in process: (Content-Type, body) -> (HTTP status, Content-Type, answer chunks).
LocalDispatch = Callable[[str, bytes], tuple[int, str, Iterator[bytes]]]
_LOCAL_ENDPOINTS: dict[str, LocalDispatch] = {}


#: Makes a new session for calls to another node, or None when a plain one will do.  The deployment's edge
#: installs one (``atna.tls.tls_session``: our TLS certificate presented, ITI-19); this module knows no settings.
SessionFactory = Callable[[], "requests.Session | None"]
_session_factory: SessionFactory | None = None
_thread_sessions = threading.local()


def set_session_factory(factory: SessionFactory | None) -> SessionFactory | None:
    """Install the factory of the sessions of clients made without ``session=``; returns the previous one."""
    global _session_factory
    previous, _session_factory = _session_factory, factory
    _thread_sessions.__dict__.clear()
    return previous


def new_session() -> requests.Session:
    """A new session for calls to another node, as the installed factory makes them (the caller closes it)."""
    made = _session_factory() if _session_factory is not None else None
    return made if made is not None else requests.Session()


def _default_session() -> requests.Session | None:
    """This thread's session from the installed factory (made once per thread and kept: a requests.Session is
    not thread-safe, and its pool reuses connections); None without a factory or when it gives None."""
    if _session_factory is None:
        return None
    made: tuple[requests.Session | None, SessionFactory] | None = getattr(_thread_sessions, "made", None)
    if made is None or made[1] is not _session_factory:
        made = _thread_sessions.made = (_session_factory(), _session_factory)
    return made[0]


def register_local_endpoint(name: str, dispatch: LocalDispatch) -> None:
    """Make ``local:<name>`` reach ``dispatch`` (an actor's endpoint in this process)."""
    _LOCAL_ENDPOINTS[name] = dispatch


def local_endpoints() -> list[str]:
    """The names ``local:`` URLs can reach in this process."""
    return sorted(_LOCAL_ENDPOINTS)


def dispatch_local(name: str, content_type: str, body: bytes) -> tuple[int, str, Iterator[bytes]]:
    """One exchange with this process's ``name`` endpoint; KeyError when no actor registered it."""
    try:
        dispatch = _LOCAL_ENDPOINTS[name]
    except KeyError:
        raise KeyError(f"no local endpoint {name!r}; known: {', '.join(local_endpoints()) or 'none'}") from None
    return dispatch(content_type, body)

#: Defaults for what a client accepts in a response.
DEFAULT_MAX_RESPONSE_SIZE = 16 * 1024**3
DEFAULT_MAX_XML_SIZE = 64 * 1024**2


class TransportError(Exception):
    """The exchange failed below SOAP: refused, timed out, or not a SOAP answer."""


@dataclass
class SoapResult:
    """The answer to one call: a response body, or a fault."""

    http_status: int
    action: str | None
    body: etree._Element | None
    attachments: dict[str, Attachment] = field(default_factory=dict)
    fault: SoapFault | None = None
    relates_to: str | None = None
    message_id: str | None = None

    def binary(self, element: etree._Element) -> Attachment:
        """Content of a base64Binary element (``xop:Include`` or inline); see
        :func:`xds_core.soap.envelope.resolve_binary`."""
        return resolve_binary(element, self.attachments)

    def close(self) -> None:
        """Remove the spill files of the received attachments."""
        for attachment in self.attachments.values():
            attachment.close()


class _SizedBody:
    """An iterable body with a length, so ``requests`` sends Content-Length
    instead of chunked transfer encoding."""

    def __init__(self, chunks: Iterator[bytes], length: int) -> None:
        self._chunks = chunks
        self._length = length

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def __len__(self) -> int:
        return self._length


def _result_from_message(http_status: int, message: IncomingMessage) -> SoapResult:
    try:
        _envelope, header, body = parse_soap12(message, strict_media_type=False)
    except SoapFault as exc:
        message.close()
        raise TransportError(f"HTTP {http_status}: the answer is not a SOAP 1.2 message ({exc.reason})") from None

    def header_text(name: str) -> str | None:
        element = header.find(q(ns.WSA, name)) if header is not None else None
        return (element.text or "").strip() or None if element is not None else None

    payload = next((child for child in body if isinstance(child.tag, str)), None)
    result = SoapResult(http_status, header_text("Action"), None, message.attachments, None,
                        header_text("RelatesTo"), header_text("MessageID"))
    if payload is not None and payload.tag == q(ns.SOAP12, "Fault"):
        result.fault = parse_fault(payload)
        result.fault.http_status = http_status
    else:
        result.body = payload
    return result


class SoapClient:
    """A SOAP 1.2 client for one endpoint URL (``http(s)://...`` or ``local:<name>``).

    ``session``: the ``requests.Session`` to send with (its TLS adapter presents our certificate); none
    given: this thread's session of the installed factory (:func:`set_session_factory`), else plain ``requests``.
    """

    def __init__(self, url: str, *, timeout: float = 120.0, max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
                 max_xml_size: int = DEFAULT_MAX_XML_SIZE, spool_dir: str | None = None,
                 session: requests.Session | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.max_response_size = max_response_size
        self.max_xml_size = max_xml_size
        self.spool_dir = spool_dir
        self._session = session

    @property
    def is_local(self) -> bool:
        return self.url.startswith(LOCAL_SCHEME)

    def call(self, action: str, body: etree._Element, *, parts: list[OutgoingPart] | None = None,
             mtom: bool | None = None, message_id: str | None = None,
             on_part: Callable[[Attachment], None] | None = None) -> SoapResult:
        """Send ``body`` with ``wsa:Action`` = ``action``; return the answer.

        ``mtom=None``: MTOM iff ``parts``; ``mtom=False`` with parts inlines
        them as base64.  ``body`` is moved into the request envelope.
        ``message_id`` (default: a new ``urn:uuid:``) is echoed in the
        answer's ``relates_to``.  ``on_part`` is called with each attachment of the answer as
        soon as it is complete (see :func:`~xds_core.soap.mtom_reader.read_message`).

        :raises TransportError: connection refused/reset, timeout, or an
            answer that is not SOAP.  SOAP faults are returned in ``fault``.
        """
        parts = list(parts or [])
        envelope = build_envelope(action, body, to=None if self.is_local else self.url,
                                  message_id=message_id or new_message_id(), reply_to=ns.WSA_ANONYMOUS)
        content_type, length, chunks = render_message(envelope, parts, action=action, mtom=mtom)
        if self.is_local:
            return self._call_local(content_type, chunks, on_part)
        return self._call_http(content_type, length, chunks, on_part)

    # ------------------------------------------------------------------ transports

    def _call_local(self, content_type: str, chunks: Iterator[bytes],
                    on_part: Callable[[Attachment], None] | None = None) -> SoapResult:
        name = self.url[len(LOCAL_SCHEME):]
        status, answer_type, answer = dispatch_local(name, content_type, b"".join(chunks))
        stream = IteratorReader(answer)
        try:
            return self._read(status, answer_type, stream, None, on_part)
        finally:
            stream.close()

    def _call_http(self, content_type: str, length: int | None, chunks: Iterator[bytes],
                   on_part: Callable[[Attachment], None] | None = None) -> SoapResult:
        headers = {
            "Content-Type": content_type,
            "Accept": f"{SOAP_MEDIA_TYPE}, {MULTIPART_RELATED}",
            # requests asks for gzip by default; large MTOM bodies should not be compressed.
            "Accept-Encoding": "identity",
        }
        data: object = _SizedBody(chunks, length) if length is not None else chunks
        session = self._session or _default_session() or requests
        try:
            response = session.post(self.url, data=data, headers=headers, stream=True, timeout=self.timeout)
        except requests.RequestException as exc:
            raise TransportError(f"POST {self.url}: {exc}") from exc
        try:
            answer_type = response.headers.get("Content-Type", "")
            media, _params = parse_content_type(answer_type)
            if media not in (SOAP_MEDIA_TYPE, MULTIPART_RELATED, SOAP11_MEDIA_TYPE):
                preview = response.raw.read(200, decode_content=True) or b""
                raise TransportError(f"POST {self.url}: HTTP {response.status_code} with {answer_type or 'no'} "
                                     f"Content-Type, not SOAP: {preview[:200]!r}")
            response.raw.decode_content = True
            encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
            raw_length = response.headers.get("Content-Length")
            content_length = int(raw_length) if raw_length and raw_length.isdigit() and not encoded else None
            return self._read(response.status_code, answer_type, response.raw, content_length, on_part)
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise TransportError(f"POST {self.url}: reading the answer failed: {exc}") from exc
        finally:
            response.close()

    def _read(self, status: int, content_type: str, stream: BinaryIO, content_length: int | None,
              on_part: Callable[[Attachment], None] | None = None) -> SoapResult:
        try:
            message = read_message(content_type, stream, content_length=content_length,
                                   max_size=self.max_response_size, max_xml_size=self.max_xml_size,
                                   spool_dir=self.spool_dir, on_part=on_part)
        except MtomError as exc:
            raise TransportError(f"{self.url}: HTTP {status}: unreadable SOAP answer: {exc}") from None
        except OSError as exc:
            raise TransportError(f"{self.url}: HTTP {status}: reading the answer failed: {exc}") from exc
        return _result_from_message(status, message)
