"""Tiny real servers on loopback for the runner tests: a SOAP endpoint that refuses everything,
one that answers garbage, and an MLLP listener that acknowledges (or rejects) feeds."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from xds_core import mllp

ENVELOPE = (
    '<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:wsa="http://www.w3.org/2005/08/addressing"><soap:Header><wsa:Action>{action}</wsa:Action>'
    '</soap:Header><soap:Body>{body}</soap:Body></soap:Envelope>')
FAILURE = ('<rs:RegistryResponse xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0" '
           'status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"><rs:RegistryErrorList>'
           '<rs:RegistryError errorCode="XDSRegistryError" codeContext="this test server refuses everything" '
           'severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/></rs:RegistryErrorList>'
           '</rs:RegistryResponse>')
QUERY_FAILURE = ('<query:AdhocQueryResponse xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" '
                 'xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0" '
                 'status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"><rs:RegistryErrorList>'
                 '<rs:RegistryError errorCode="XDSRegistryError" codeContext="refused" '
                 'severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/></rs:RegistryErrorList>'
                 '</query:AdhocQueryResponse>')
RETRIEVE_FAILURE = f'<xdsb:RetrieveDocumentSetResponse xmlns:xdsb="urn:ihe:iti:xds-b:2007">{FAILURE}' \
                   '</xdsb:RetrieveDocumentSetResponse>'


class _Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []   # (action, content type, body)
        self.lock = threading.Lock()


def _refusing_handler(recorder: _Recorder, mode: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            match = re.search(rb"Action[^>]*>\s*([^<\s]+)\s*<", body)
            action = match.group(1).decode() if match else ""
            with recorder.lock:
                recorder.requests.append((action, self.headers.get("Content-Type", ""), body))
            if mode == "imaging" and "RetrieveImagingDocumentSet" in action:
                content_type, length, chunks = _imaging_answer(body)
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                payload = b"".join(chunks)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            if mode == "html":
                payload, content_type, status = b"<html><body>502 Bad Gateway</body></html>", "text/html", 502
            elif mode == "garbage":
                payload, content_type, status = b"<soap:Envelope xmlns:soap='http", "application/soap+xml", 200
            elif mode == "fault":
                payload = ENVELOPE.format(action="http://www.w3.org/2005/08/addressing/soap/fault", body=(
                    '<soap:Fault><soap:Code><soap:Value>soap:Receiver</soap:Value></soap:Code><soap:Reason>'
                    '<soap:Text xml:lang="en">not today</soap:Text></soap:Reason></soap:Fault>')).encode()
                content_type, status = "application/soap+xml; charset=UTF-8", 500
            else:
                if action.endswith("RegistryStoredQuery") or action.endswith("MultiPatientStoredQuery"):
                    answer = QUERY_FAILURE
                elif "Retrieve" in action:
                    answer = RETRIEVE_FAILURE
                else:
                    answer = FAILURE
                payload = ENVELOPE.format(action=action + "Response", body=answer).encode()
                content_type, status = "application/soap+xml; charset=UTF-8", 200
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


IMAGES: dict[str, bytes] = {}  # SOP Instance UID -> DICOM file, filled by the test using "imaging" mode


def _imaging_answer(request: bytes) -> tuple[str, int | None, Iterator[bytes]]:
    """RAD-69 answered like a real IDS, with our own SOAP/ebXML writers: every requested instance that
    is in IMAGES comes back as an MTOM part."""
    from xds_core.ebxml.responses import DocumentResponse, retrieve_document_set_response
    from xds_core.soap.envelope import SoapResponse
    from xds_core.soap.mtom import OutgoingPart
    from xds_core.vocabulary import Action

    wanted = re.findall(rb"DocumentUniqueId>\s*([0-9.]+)\s*<", request)
    documents = [DocumentResponse("1.3.6.1.4.1.21367.13.80.110", uid.decode(), "application/dicom",
                                  OutgoingPart(f"img{n}@test", "application/dicom", IMAGES[uid.decode()]))
                 for n, uid in enumerate(wanted) if uid.decode() in IMAGES]
    body, parts = retrieve_document_set_response([], documents)
    return SoapResponse(Action.RetrieveImagingDocumentSetResponse.value, body, attachments=parts).render()


@contextmanager
def soap_server(mode: str = "failure") -> Iterator[tuple[str, _Recorder]]:
    """``failure``: every request gets a Failure answer of the right kind; ``html``/``garbage``/``fault``;
    ``imaging``: RAD-69 answered with the images of IMAGES, the rest as ``failure``."""
    recorder = _Recorder()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _refusing_handler(recorder, mode))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/xds", recorder
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def mllp_server(ack_code: str = "AA") -> Iterator[tuple[int, list[str]]]:
    """An MLLP listener answering every framed message with ``MSA|<ack_code>|<control id>``."""
    received: list[str] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                message = next(mllp.read_frames(conn), b"").decode()
                received.append(message)
                control = message.split("\r")[0].split("|")[9]
                ack = f"MSH|^~\\&|REG|X|RUN|Y|20260101||ACK^A04|A1|P|2.5\rMSA|{ack_code}|{control}|unknown domain\r"
                conn.sendall(mllp.frame(ack.encode()))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], received
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()


def free_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
