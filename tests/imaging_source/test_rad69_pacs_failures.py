"""RAD-69 when the PACS fails: an error status for one series, or the connection dropped mid-answer.

What was delivered is answered byte for byte; every other requested instance gets its own
RegistryError with the instance's SOP Instance UID as location and XDSRepositoryError as code (the
source could not produce it: RAD TF-3 4.69.4.2.3; ITI TF-3 Table 4.2.4.1-2) — never
XDSDocumentUniqueIdError, which would claim the instance does not exist.  The status is
PartialSuccess, and every ``xop:Include`` of the answer names a part that was sent, in both root orders.
"""

from __future__ import annotations

import socket

import pytest
import requests
from pydicom.uid import ExplicitVRLittleEndian

from imaging_source.dicom.config import FetchMethod
from tests.imaging_source.http_proxies import LoopbackProxy
from xds_core.ebxml.messages import DocumentRequest, RetrieveImagingDocumentSetRequest, SeriesRequest, StudyRequest
from xds_core.ebxml.parse import parse_retrieve_document_set_response
from xds_core.ebxml.serialize import retrieve_imaging_document_set_request
from xds_core.errors import ErrorCode
from xds_core.ns import XOP
from xds_core.soap.client import SoapClient
from xds_core.soap.mtom import normalize_cid
from xds_core.vocabulary import Action, ResponseStatus

from .pacs_fixtures import NIST_STUDY_UID, configure_imaging_source

pytestmark = pytest.mark.pacs

SOURCE_ID = "1.3.6.1.4.1.21367.13.80.110"


def _request_head(client: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        data = client.recv(65536)
        if not data:
            break
        head += data
    return head


class FailingSeriesProxy(LoopbackProxy):
    """Answers every WADO-RS request for one series with an HTTP error; passes the others to the PACS."""

    def __init__(self, upstream_port: int, series_uid: str, status: str = "503 Service Unavailable") -> None:
        self.series_uid = series_uid
        self.status = status
        super().__init__(upstream_port)

    def relay(self, client: socket.socket) -> None:
        try:
            while head := _request_head(client):  # keep-alive: one request after the other
                path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
                if (path + b"/").find(f"/series/{self.series_uid}/".encode()) >= 0:  # not a UID it prefixes
                    client.sendall(f"HTTP/1.1 {self.status}\r\nContent-Length: 0\r\n\r\n".encode())
                    continue
                with socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
                    upstream.sendall(head)
                    while data := upstream.recv(65536):  # Orthanc closes after a multipart answer
                        client.sendall(data)
                return
        except OSError:
            pass
        finally:
            client.close()


class CuttingProxy(LoopbackProxy):
    """Relays the PACS's answer but drops the connection after ``limit`` bytes of it."""

    def __init__(self, upstream_port: int, limit: int) -> None:
        self.limit = limit
        super().__init__(upstream_port)

    def relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self.forward_requests(client, upstream)
        sent = 0
        try:
            while sent < self.limit and (data := upstream.recv(min(65536, self.limit - sent))):
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            # shutdown, not only close: the request-forwarding thread is blocked in recv() on these sockets,
            # and a close() alone would leave the connection open until that recv returns.
            for sock in (client, upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


@pytest.fixture(scope="module")
def originals(pacs) -> dict[str, bytes]:
    """SOP Instance UID -> the instance as the PACS stores it, for the NIST study."""
    out = {}
    study = requests.post(f"{pacs.rest_url}/tools/lookup", data=NIST_STUDY_UID, timeout=30).json()[0]["ID"]
    for instance in requests.get(f"{pacs.rest_url}/studies/{study}/instances", timeout=30).json():
        out[instance["MainDicomTags"]["SOPInstanceUID"]] = requests.get(
            f"{pacs.rest_url}/instances/{instance['ID']}/file", timeout=30).content
    return out


@pytest.fixture(scope="module")
def series(pacs) -> dict[str, list[str]]:
    """Series Instance UID -> its SOP Instance UIDs (the NIST study has two series)."""
    answer = requests.get(f"{pacs.dicomweb_url}/studies/{NIST_STUDY_UID}/instances", timeout=30).json()
    out: dict[str, list[str]] = {}
    for item in answer:
        out.setdefault(item["0020000E"]["Value"][0], []).append(item["00080018"]["Value"][0])
    return out


def _retrieve(series: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    request = RetrieveImagingDocumentSetRequest([StudyRequest(NIST_STUDY_UID, [
        SeriesRequest(uid, [DocumentRequest(SOURCE_ID, sop) for sop in sops]) for uid, sops in series.items()])],
        [ExplicitVRLittleEndian])
    return SoapClient("local:imaging-source").call(Action.RetrieveImagingDocumentSet.value,
                                                   retrieve_imaging_document_set_request(request))


def _check(result, originals: dict[str, bytes], expected_missing: set[str] | None = None) -> set[str]:  # type: ignore[no-untyped-def]
    """Common checks of a partial answer; returns the SOP Instance UIDs delivered."""
    assert result.fault is None and result.http_status == 200
    status, errors, documents = parse_retrieve_document_set_response(result.body)
    delivered = {d.document_unique_id for d in documents}
    for d in documents:  # byte for byte as the PACS holds it
        assert result.binary(d.element).read_bytes() == originals[d.document_unique_id]
    hrefs = {normalize_cid(d.element.find(f".//{{{XOP}}}Include").get("href")) for d in documents}
    assert hrefs == set(result.attachments)  # no dangling include, no unreferenced part
    assert {e.error_code for e in errors} == {ErrorCode.XDSRepositoryError}
    missing = {e.location for e in errors}
    assert missing | delivered == set(originals) and not missing & delivered
    if expected_missing is not None:
        assert missing == expected_missing
    assert status == (ResponseStatus.PARTIAL_SUCCESS.value if delivered else ResponseStatus.FAILURE.value)
    return delivered


@pytest.mark.parametrize("root_last", [False, True], ids=["root-first", "root-last"])
def test_a_series_the_pacs_answers_with_an_http_error_is_a_repository_error_and_the_other_is_delivered(
        pacs, settings, spool_dir, originals, series, root_last) -> None:
    failing = max(series, key=lambda uid: len(series[uid]))
    proxy = FailingSeriesProxy(pacs.http_port, failing)
    try:
        configure_imaging_source(settings, pacs, FetchMethod.WADO_RS, root_last=root_last, source_id=SOURCE_ID,
                                 spool_dir=spool_dir)
        settings.DICOMWEB_URL = f"http://127.0.0.1:{proxy.port}/dicom-web"
        result = _retrieve(series)
        try:
            delivered = _check(result, originals, expected_missing=set(series[failing]))
        finally:
            result.close()
    finally:
        proxy.close()
    assert delivered == set(originals) - set(series[failing])


@pytest.mark.parametrize("root_last", [False, True], ids=["root-first", "root-last"])
def test_the_pacs_dropping_the_connection_mid_series_keeps_what_came_and_errors_the_rest(
        pacs, settings, spool_dir, originals, series, root_last) -> None:
    # About three and a half instances of ~134 kB: some arrive whole, one is cut, the rest never come.
    proxy = CuttingProxy(pacs.http_port, limit=480_000)
    try:
        configure_imaging_source(settings, pacs, FetchMethod.WADO_RS, root_last=root_last, source_id=SOURCE_ID,
                                 spool_dir=spool_dir)
        settings.DICOMWEB_URL = f"http://127.0.0.1:{proxy.port}/dicom-web"
        big = max(series, key=lambda uid: len(series[uid]))
        result = _retrieve({big: series[big]})
        try:
            delivered = _check(result, {uid: originals[uid] for uid in series[big]})
        finally:
            result.close()
    finally:
        proxy.close()
    assert 0 < len(delivered) < len(series[big])
    assert not list(spool_dir.rglob("*.dcm"))  # nothing spilled is left behind
