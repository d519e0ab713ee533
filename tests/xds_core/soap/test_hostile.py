"""Every hostile input gets a clean SOAP fault and the endpoint keeps working.

The corpus is tests/fixtures/hostile (see its README); requests go through
Django's full request handling in process.  The same corpus is posted to a
real gunicorn server by tests/test_end_to_end_http.py.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from django.test import Client, RequestFactory

from tests.xds_core.soap.hostile_corpus import HostileCase, cases, hundred_megabytes, watched_port
from tests.xds_core.soap.soap_helpers import SOAP_CT, plain_request
from xds_core import ns
from xds_core.ns import q
from xds_core.safe_xml import parse_xml
from xds_core.soap.faults import parse_fault
from xds_registry.soap_operations import ENDPOINT as REGISTRY_ENDPOINT

UNKNOWN = "urn:test:NotAnOperation"


def assert_fault(content: bytes, case: HostileCase, status: int) -> None:
    assert status == case.http, case.file
    envelope = parse_xml(content)
    fault = parse_fault(envelope.find(f"{q(ns.SOAP12, 'Body')}/{q(ns.SOAP12, 'Fault')}"))
    assert fault.code == case.code, (case.file, fault.reason)
    if case.subcode:
        assert fault.subcode == case.subcode, case.file
    assert b"root:" not in content  # nothing from /etc/passwd leaks into an answer


def assert_still_serving(client: Client) -> None:
    """A valid request afterwards is answered normally."""
    response = client.generic("POST", "/xds/registry", plain_request(action=UNKNOWN), content_type=SOAP_CT)
    fault = parse_fault(parse_xml(response.content).find(f"{q(ns.SOAP12, 'Body')}/{q(ns.SOAP12, 'Fault')}"))
    assert fault.subcode == "wsa:ActionNotSupported"


@pytest.mark.parametrize("case", cases(), ids=lambda case: case.file)
@pytest.mark.parametrize("endpoint", ["registry", "repository", "imaging-source"])
def test_hostile_input_is_refused_with_a_fault(client: Client, case: HostileCase, endpoint: str,
                                               settings: object, tmp_path: Path) -> None:
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)  # type: ignore[attr-defined]
    with watched_port() as port:
        started = time.monotonic()
        # CONTENT_TYPE explicitly: the test client drops it for an empty body.
        response = client.generic("POST", f"/xds/{endpoint}", case.body(port.port), content_type=case.content_type,
                                  CONTENT_TYPE=case.content_type)
        elapsed = time.monotonic() - started
        assert port.connections() == 0, "the parser reached out to the network"
    assert_fault(response.content, case, response.status_code)
    assert elapsed < 5
    assert list(tmp_path.iterdir()) == [], "spill files left behind"
    assert_still_serving(client)


class _Generated(io.RawIOBase):
    """wsgi.input over a generated body; records how much was read."""

    def __init__(self) -> None:
        self._chunks = hundred_megabytes()
        self._pending = b""
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return b""
        piece, self._pending = self._pending[:size], self._pending[size:]
        self.consumed += len(piece)
        return piece


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_hundred_megabyte_body_is_413_and_drained_so_the_client_reads_the_answer(client: Client, settings: object,
                                                                              chunked: bool) -> None:
    limit = 8 * 1024 * 1024
    settings.XDS_MAX_REQUEST_SIZE = limit  # type: ignore[attr-defined]
    request = RequestFactory().post("/xds/registry", b"", content_type=SOAP_CT)
    body = _Generated()
    request.META["wsgi.input"] = body
    request.META["CONTENT_TYPE"] = SOAP_CT
    if chunked:
        request.META.pop("CONTENT_LENGTH", None)
        request.META["HTTP_TRANSFER_ENCODING"] = "chunked"
    else:
        request.META["CONTENT_LENGTH"] = str(100 * 1024 * 1024)
    response = REGISTRY_ENDPOINT(request)
    assert response.status_code == 413
    fault = parse_fault(parse_xml(response.content).find(f"{q(ns.SOAP12, 'Body')}/{q(ns.SOAP12, 'Fault')}"))
    assert fault.code == "Sender" and "exceeds" in fault.reason
    # Refused at once (declared length) or at the limit (chunked); the rest (below DRAIN_LIMIT) is
    # drained so that the HTTP client, still sending, gets to read the answer.  Beyond DRAIN_LIMIT:
    # the two tests below.
    assert body.consumed == 100 * 1024 * 1024
    assert_still_serving(client)


class _Endless(io.RawIOBase):
    """wsgi.input over ``total`` filler bytes; records how much was read."""

    _FILL = b"x" * (1024 * 1024)

    def __init__(self, total: int) -> None:
        self.total = total
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        left = self.total - self.consumed
        n = min(left, len(self._FILL) if size is None or size < 0 else size)
        self.consumed += n
        return self._FILL[:n]


def _refused(body: _Endless, settings: object, *, chunked: bool) -> None:
    limit = 8 * 1024 * 1024
    settings.XDS_MAX_REQUEST_SIZE = limit  # type: ignore[attr-defined]
    request = RequestFactory().post("/xds/registry", b"", content_type=SOAP_CT)
    request.META["wsgi.input"] = body
    request.META["CONTENT_TYPE"] = SOAP_CT
    if chunked:
        request.META.pop("CONTENT_LENGTH", None)
        request.META["HTTP_TRANSFER_ENCODING"] = "chunked"
    else:
        request.META["CONTENT_LENGTH"] = str(body.total)
    assert REGISTRY_ENDPOINT(request).status_code == 413


def test_a_declared_body_beyond_the_drain_limit_is_refused_without_reading_it(settings: object) -> None:
    from xds_core.http.endpoint import DRAIN_LIMIT

    body = _Endless(DRAIN_LIMIT + 64 * 1024 * 1024)
    _refused(body, settings, chunked=False)
    # Refused on its Content-Length: nothing is drained (the client sees the connection close).
    assert body.consumed <= 1024 * 1024


def test_a_chunked_body_beyond_the_drain_limit_is_drained_only_up_to_the_limit(settings: object) -> None:
    from xds_core.http.endpoint import DRAIN_LIMIT

    body = _Endless(DRAIN_LIMIT + 64 * 1024 * 1024)
    _refused(body, settings, chunked=True)
    assert 8 * 1024 * 1024 < body.consumed <= 8 * 1024 * 1024 + DRAIN_LIMIT + 1024 * 1024
    assert body.consumed < body.total


def test_oversized_xml_part_is_413(client: Client, settings: object) -> None:
    settings.XDS_MAX_XML_SIZE = 4096  # type: ignore[attr-defined]
    data = plain_request(body=None).replace(b"</env:Body>", b"<!--" + b"x" * 10000 + b"--></env:Body>")
    response = client.generic("POST", "/xds/registry", data, content_type=SOAP_CT)
    assert response.status_code == 413
