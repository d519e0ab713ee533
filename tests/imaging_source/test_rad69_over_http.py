"""RAD-69 over real HTTP: gunicorn serving the Imaging Document Source in front of the real Orthanc.

The streamed answer (instances first, the SOAP root last) leaves the worker through vectored
writes straight to the client's socket (xds_core.http.direct_write): framed as HTTP/1.1 chunks
for an HTTP/1.1 client, unframed (the connection's end ends the body) for an HTTP/1.0 one.
Either way every instance must arrive byte for byte as the PACS holds it.
"""

from __future__ import annotations

import hashlib
import io
import socket
import struct
import time
from collections.abc import Iterator

import pytest
import requests
from pydicom.uid import ExplicitVRLittleEndian

from imaging_source.dicom.find import find_study
from imaging_source.study import StudyRef
from tests.gunicorn_server import Server, run_gunicorn
from xds_core.ebxml.messages import DocumentRequest, RetrieveImagingDocumentSetRequest, SeriesRequest, StudyRequest
from xds_core.ebxml.parse import parse_retrieve_document_set_response
from xds_core.ebxml.serialize import retrieve_imaging_document_set_request
from xds_core.ns import WSA_ANONYMOUS, XDSB
from xds_core.safe_xml import parse_xml, to_bytes
from xds_core.soap.envelope import build_envelope
from xds_core.soap.mtom import normalize_cid, write_message
from xds_core.soap.mtom_reader import read_message
from xds_core.vocabulary import Action, ResponseStatus

from .http_proxies import HoldingProxy
from .pacs_fixtures import NIST_STUDY_UID

pytestmark = pytest.mark.pacs

SOURCE_ID = "1.3.6.1.4.1.21367.13.80.110"


@pytest.fixture(scope="module")
def server(pacs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("rad69-http")
    env = {
        "XDS_VAR_DIR": str(work / "var"),
        "DATABASE_URL": f"sqlite:///{work / 'xds.sqlite3'}",
        "XDS_IMAGING_SOURCE_ID": SOURCE_ID,
        "DICOM_AE_TITLE": pacs.ae_title,
        "DICOM_PACS": f"ORTHANC@127.0.0.1:{pacs.dicom_port}",
        "DICOMWEB_URL": pacs.dicomweb_url,
        "DICOM_FETCH_METHOD": "wado-rs",
        "XDS_RAD69_ROOT_LAST": "true",
    }
    with run_gunicorn(env, spool=work) as running:
        yield running


@pytest.fixture(scope="module")
def study(pacs) -> StudyRef:
    return find_study(NIST_STUDY_UID, pacs.config())


@pytest.fixture(scope="module")
def originals(pacs, study: StudyRef) -> dict[str, str]:
    """SOP Instance UID -> SHA-1 of the instance as the PACS stores it (Orthanc's REST API)."""
    out = {}
    for series in study.series:
        for instance in series.instances:
            found = requests.post(f"{pacs.rest_url}/tools/lookup", data=instance.sop_instance_uid, timeout=30).json()
            data = requests.get(f"{pacs.rest_url}/instances/{found[0]['ID']}/file", timeout=30).content
            out[instance.sop_instance_uid] = hashlib.sha1(data).hexdigest()
    return out


def _envelope(study: StudyRef, endpoint: str) -> tuple[str, bytes]:
    request = retrieve_imaging_document_set_request(RetrieveImagingDocumentSetRequest(
        [StudyRequest(study.study_instance_uid, [
            SeriesRequest(s.series_instance_uid, [DocumentRequest(SOURCE_ID, i.sop_instance_uid) for i in s.instances])
            for s in study.series])], [ExplicitVRLittleEndian]))
    content_type, _, chunks = write_message(to_bytes(build_envelope(
        Action.RetrieveImagingDocumentSet.value, request, to=endpoint, reply_to=WSA_ANONYMOUS)), [],
        action=Action.RetrieveImagingDocumentSet.value)
    return content_type, b"".join(chunks)


def _instances(content_type: str, body: bytes) -> dict[str, str]:
    """The MTOM answer -> SOP Instance UID -> SHA-1 of its part, after checking the SOAP root."""
    message = read_message(content_type, io.BytesIO(body), content_length=len(body), max_size=1 << 30,
                           max_xml_size=1 << 24)
    try:
        response = parse_xml(message.root).find(f".//{{{XDSB}}}RetrieveDocumentSetResponse")
        status, errors, documents = parse_retrieve_document_set_response(response)
        assert status == ResponseStatus.SUCCESS.value, errors
        out = {}
        for document in documents:
            cid = normalize_cid(document.element[0].get("href"))
            out[document.document_unique_id] = hashlib.sha1(message.attachments[cid].read_bytes()).hexdigest()
        return out
    finally:
        message.close()


def test_rad69_over_http_1_1_arrives_chunked_and_complete(server: Server, study: StudyRef,
                                                          originals: dict[str, str]) -> None:
    endpoint = server.endpoint("imaging-source")
    content_type, envelope = _envelope(study, endpoint)
    response = requests.post(endpoint, data=envelope, timeout=120,
                             headers={"Content-Type": content_type, "Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert _instances(response.headers["Content-Type"], response.content) == originals
    lines = [line for line in server.transaction_lines() if "transaction=RAD-69" in line]
    assert lines and f"bytes_out={len(response.content)}" in lines[-1]


def test_rad69_over_http_1_0_arrives_unframed_and_complete(server: Server, study: StudyRef,
                                                           originals: dict[str, str]) -> None:
    endpoint = server.endpoint("imaging-source")
    content_type, envelope = _envelope(study, endpoint)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=120) as sock:
        sock.sendall(f"POST /xds/imaging-source HTTP/1.0\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(envelope)}\r\n\r\n".encode() + envelope)
        answer = bytearray()
        while chunk := sock.recv(1 << 20):
            answer += chunk
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
    assert head.startswith(b"HTTP/1.0 200")
    assert "Transfer-Encoding" not in headers and "Content-Length" not in headers
    assert _instances(headers["Content-Type"], body) == originals


def test_a_consumer_hanging_up_mid_answer_aborts_the_transaction_and_the_worker_serves_on(
        pacs, study: StudyRef, originals: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    """The consumer reads the first part and goes away while the PACS is still sending: the worker's next
    write fails and the transaction is logged aborted without waiting for the PACS, nothing is left in the
    spool, and the next RAD-69 on the same workers is answered whole."""
    work = tmp_path_factory.mktemp("rad69-hangup")
    proxy = HoldingProxy(pacs.http_port)  # keeps the PACS's last bytes until released: the answer is not done
    env = {"XDS_VAR_DIR": str(work / "var"), "DATABASE_URL": f"sqlite:///{work / 'xds.sqlite3'}",
           "XDS_IMAGING_SOURCE_ID": SOURCE_ID, "DICOM_AE_TITLE": pacs.ae_title,
           "DICOM_PACS": f"ORTHANC@127.0.0.1:{pacs.dicom_port}", "DICOMWEB_URL": f"http://127.0.0.1:{proxy.port}/dicom-web",
           "DICOM_FETCH_METHOD": "wado-rs", "XDS_RAD69_ROOT_LAST": "true", "DICOM_SPOOL_DIR": str(work / "spool")}
    try:
        with run_gunicorn(env, spool=work) as server:
            endpoint = server.endpoint("imaging-source")
            content_type, envelope = _envelope(study, endpoint)
            host, port = server.url.removeprefix("http://").split(":")
            sock = socket.create_connection((host, int(port)), timeout=60)
            sock.sendall(f"POST /xds/imaging-source HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                         f"Content-Length: {len(envelope)}\r\n\r\n".encode() + envelope)
            first = sock.recv(64 * 1024)
            assert first.startswith(b"HTTP/1.1 200")
            # Unread data in the receive buffer: close() answers with a reset, so the worker's next write fails.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            # Aborted while the PACS's answer is still held open (the proxy holds its tail for 30 s): the
            # worker gave up on its own, it did not wait for the PACS to finish.
            deadline = time.monotonic() + 20
            while not any("transaction=RAD-69" in line and "(aborted)" in line for line in server.transaction_lines()):
                assert time.monotonic() < deadline, "\n".join(server.log[-30:])
                time.sleep(0.1)
            assert not proxy.tail_sent.is_set()
            proxy.release.set()
            # The same workers answer the next consumer in full, byte for byte.
            response = requests.post(endpoint, data=envelope, timeout=120,
                                     headers={"Content-Type": content_type, "Accept-Encoding": "identity"})
            assert response.status_code == 200
            assert _instances(response.headers["Content-Type"], response.content) == originals
    finally:
        proxy.close()
    assert [p.name for p in (work / "spool").rglob("*") if p.is_file()] == []
