"""SoapClient over real loopback HTTP against a small recording HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lxml import etree

from tests.xds_core.soap.soap_helpers import TEST_NS, document_element, payload
from xds_core import ns
from xds_core.ns import q
from xds_core.safe_xml import parse_xml
from xds_core.soap.client import SoapClient, TransportError
from xds_core.soap.envelope import SoapResponse, render_fault
from xds_core.soap.faults import SoapFault
from xds_core.soap.mtom import MULTIPART_RELATED, OutgoingPart
from xds_core.soap.mtom_reader import read_message


@dataclass
class Seen:
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Responder = Callable[[Seen], tuple[int, str, bytes]]


@contextmanager
def http_server(responder: Responder) -> Iterator[tuple[str, list[Seen]]]:
    seen: list[Seen] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            record = Seen({k.lower(): v for k, v in self.headers.items()})
            if "content-length" in record.headers:
                record.body = self.rfile.read(int(record.headers["content-length"]))
            else:  # chunked
                while size := int(self.rfile.readline().strip(), 16):
                    record.body += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
            seen.append(record)
            status, content_type, content = responder(record)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(content)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False  # the timeout test leaves a sleeping handler behind
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/xds", seen
    finally:
        server.shutdown()
        server.server_close()


def answer(body: etree._Element, parts: list[OutgoingPart] | None = None) -> Responder:
    def respond(request: Seen) -> tuple[int, str, bytes]:
        message = read_message(request.headers["content-type"], io.BytesIO(request.body),
                               content_length=len(request.body), max_size=1 << 30, max_xml_size=1 << 20)
        envelope = parse_xml(message.root)
        relates = envelope.findtext(f"{q(ns.SOAP12, 'Header')}/{q(ns.WSA, 'MessageID')}")
        content_type, _length, chunks = SoapResponse("urn:test:Answer", body, relates,
                                                     attachments=list(parts or [])).render()
        return 200, content_type, b"".join(chunks)
    return respond


def test_plain_call_sends_soap12_with_addressing(tmp_path: Path) -> None:
    with http_server(answer(payload("Answer", "ok"))) as (url, seen):
        result = SoapClient(url).call("urn:test:Ask", payload("Ask"), message_id="urn:uuid:c-1")
    request = seen[0]
    assert request.headers["content-type"] == 'application/soap+xml; charset=UTF-8; action="urn:test:Ask"'
    assert request.headers["accept-encoding"] == "identity"
    assert int(request.headers["content-length"]) == len(request.body)
    envelope = parse_xml(request.body)
    header = envelope.find(q(ns.SOAP12, "Header"))
    assert header.findtext(q(ns.WSA, "Action")) == "urn:test:Ask"
    assert header.findtext(q(ns.WSA, "To")) == url
    assert header.findtext(f"{q(ns.WSA, 'ReplyTo')}/{q(ns.WSA, 'Address')}") == ns.WSA_ANONYMOUS
    assert (result.http_status, result.action, result.relates_to) == (200, "urn:test:Answer", "urn:uuid:c-1")
    assert result.body.tag == f"{{{TEST_NS}}}Answer" and result.body.text == "ok"


def test_mtom_request_with_known_sizes_has_content_length(tmp_path: Path) -> None:
    body = payload("Submit")
    body.append(document_element(content_id="d@x"))
    with http_server(answer(payload("Answer"))) as (url, seen):
        SoapClient(url).call("urn:test:Ask", body, parts=[OutgoingPart("d@x", "application/dicom", b"D" * 100_000)])
    request = seen[0]
    assert request.headers["content-type"].startswith(MULTIPART_RELATED)
    assert int(request.headers["content-length"]) == len(request.body)
    assert "transfer-encoding" not in request.headers


def test_mtom_request_with_unsized_iterator_is_chunked() -> None:
    body = payload("Submit")
    body.append(document_element(content_id="d@x"))
    part = OutgoingPart("d@x", "application/dicom", lambda: iter([b"a" * 70_000, b"b" * 70_000]))
    with http_server(answer(payload("Answer"))) as (url, seen):
        result = SoapClient(url).call("urn:test:Ask", body, parts=[part])
    assert seen[0].headers.get("transfer-encoding") == "chunked"
    assert result.fault is None


def test_mtom_response_spills_to_the_spool_dir(tmp_path: Path) -> None:
    content = bytes(range(256)) * 10_000
    body = payload("Answer")
    body.append(document_element(content_id="r@x"))
    with http_server(answer(body, [OutgoingPart("r@x", "application/dicom", content)])) as (url, _seen):
        result = SoapClient(url, spool_dir=str(tmp_path)).call("urn:test:Ask", payload("Ask"))
    attachment = result.binary(result.body.find(f"{{{TEST_NS}}}Doc"))
    assert attachment.sha1 == hashlib.sha1(content).hexdigest()
    assert attachment.path is not None and attachment.path.parent == tmp_path
    result.close()
    assert list(tmp_path.iterdir()) == []


def test_fault_is_returned_not_raised() -> None:
    fault_bytes = render_fault(SoapFault("Receiver", "registry down"))
    with http_server(lambda _r: (500, "application/soap+xml; charset=UTF-8", fault_bytes)) as (url, _seen):
        result = SoapClient(url).call("urn:test:Ask", payload())
    assert result.body is None
    assert result.fault is not None and (result.fault.code, result.fault.reason) == ("Receiver", "registry down")
    assert result.fault.http_status == 500 and result.action == ns.WSA_FAULT_ACTION


@pytest.mark.parametrize(("content_type", "content"), [
    ("text/html", b"<html>Bad gateway</html>"),
    ("application/soap+xml", b"<not-soap/>"),
    ("application/soap+xml", b"<broken"),
    ("multipart/related; boundary=x", b"--y\r\n"),
])
def test_non_soap_answers_are_transport_errors(content_type: str, content: bytes) -> None:
    with http_server(lambda _r: (502, content_type, content)) as (url, _seen):
        with pytest.raises(TransportError):
            SoapClient(url).call("urn:test:Ask", payload())


def test_timeout_is_a_transport_error() -> None:
    def slow(_request: Seen) -> tuple[int, str, bytes]:
        time.sleep(1.5)
        return 200, "application/soap+xml", b""

    with http_server(slow) as (url, _seen):
        started = time.monotonic()
        with pytest.raises(TransportError):
            SoapClient(url, timeout=0.3).call("urn:test:Ask", payload())
        assert time.monotonic() - started < 1.4


def test_inline_parts_when_mtom_is_disabled() -> None:
    body = payload("Submit")
    body.append(document_element(content_id="d@x"))
    with http_server(answer(payload("Answer"))) as (url, seen):
        SoapClient(url).call("urn:test:Ask", body, parts=[OutgoingPart("d@x", "text/plain", b"inline me")],
                             mtom=False)
    assert seen[0].headers["content-type"].startswith("application/soap+xml")
    doc = parse_xml(seen[0].body).find(f".//{{{TEST_NS}}}Doc")
    assert doc.text == "aW5saW5lIG1l" and len(doc) == 0
