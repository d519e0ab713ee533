"""Hostile UIDs over real HTTP: gunicorn serving the Imaging Document Source, a recording proxy, the real Orthanc.

Issue 15: an injected query string and a ``..`` path reached Orthanc through RAD-55 / RAD-69.  Here every
byte the imaging source sends to the PACS's HTTP port passes a loopback proxy that keeps it; the tests
assert that no hostile value (each carries a marker number found in no real UID of the test PACS) ever
arrives, while the good instance of the same RAD-69 request is still retrieved (PartialSuccess, RAD TF-3
4.69.5) and a good RAD-55 request still goes through the same proxy (so the proxy is on the path).
"""

from __future__ import annotations

import io
import threading
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
from xds_core.errors import ErrorCode
from xds_core.ns import WSA_ANONYMOUS, XDSB
from xds_core.safe_xml import parse_xml, to_bytes
from xds_core.soap.envelope import build_envelope
from xds_core.soap.mtom import write_message
from xds_core.soap.mtom_reader import read_message
from xds_core.vocabulary import Action, ResponseStatus

from .http_proxies import CountingProxy
from .pacs_fixtures import NIST_STUDY_UID

pytestmark = pytest.mark.pacs

SOURCE_ID = "1.3.6.1.4.1.21367.13.80.110"

#: marker -> a hostile value carrying it.  The markers are in no UID of the test PACS.
HOSTILE = {
    "990077001": "1.2.990077001?x=1",                 # an injected query string
    "990077002": "1.2.990077002/../../../tools",      # traversal out of the WADO-RS path
    "990077003": "1.2.990077003#frag",
    "990077004": "%2e%2e/1.2.990077004",              # encoded traversal
    "990077005": "1.2.0990077005",                    # a leading zero component (PS3.5 9.1)
    "990077006": "1.990077006." + "2" * 53,           # 65 characters
    "990077007": "1.2.990077007.\u0661",              # a Unicode digit
    "990077008": "1.2.990077008&<x>\"'",              # XML specials: escaped in the answer's location
    "990077009": "1.2.990077009\\1.2.3",              # a DICOM multi-value separator
}
#: What must never be in a request line sent to the PACS (besides the markers).
NEVER_SENT = (b"?x=1", b"/..", b"%2e", b"%2E", b"#", b"\\")


class RecordingProxy(CountingProxy):
    """Keeps every byte on its way to the PACS (request lines, headers, bodies); relays as CountingProxy."""

    def __init__(self, upstream_port: int) -> None:
        self.lock = threading.Lock()
        self.sent = bytearray()
        super().__init__(upstream_port)

    def seen(self, data: bytes) -> None:
        with self.lock:
            self.sent += data

    def take(self) -> bytes:
        with self.lock:
            out, self.sent = bytes(self.sent), bytearray()
        return out

    def request_lines(self, data: bytes) -> list[bytes]:
        return [line for line in data.split(b"\r\n") if line.startswith((b"GET ", b"POST ", b"PUT ", b"DELETE "))]


@pytest.fixture(scope="module")
def proxy(pacs) -> Iterator[RecordingProxy]:
    running = RecordingProxy(pacs.http_port)
    yield running
    running.close()


@pytest.fixture(scope="module")
def server(pacs, proxy: RecordingProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("rad69-hostile")
    env = {
        "XDS_VAR_DIR": str(work / "var"),
        "DATABASE_URL": f"sqlite:///{work / 'xds.sqlite3'}",
        "XDS_IMAGING_SOURCE_ID": SOURCE_ID,
        "DICOM_AE_TITLE": pacs.ae_title,
        "DICOM_PACS": f"ORTHANC@127.0.0.1:{pacs.dicom_port}",
        "DICOMWEB_URL": f"http://127.0.0.1:{proxy.port}/dicom-web",  # the PACS, through the proxy
        "DICOM_FETCH_METHOD": "wado-rs",
        "XDS_RAD69_ROOT_LAST": "true",
    }
    with run_gunicorn(env, spool=work, migrate=True) as running:
        yield running


@pytest.fixture(scope="module")
def study(pacs) -> StudyRef:
    found = find_study(NIST_STUDY_UID, pacs.config())
    assert found is not None and found.series and found.series[0].instances
    return found


def _assert_nothing_hostile(proxy: RecordingProxy, sent: bytes) -> None:
    lines = proxy.request_lines(sent)
    for marker in HOSTILE:
        assert marker.encode() not in sent, f"hostile value {marker} reached the PACS: {lines}"
    for line in lines:
        for fragment in NEVER_SENT:
            assert fragment not in line, (fragment, line)


def _post_rad69(server: Server, request: RetrieveImagingDocumentSetRequest
                ) -> tuple[str, dict[str, str], dict[str, tuple[str, str]]]:
    """-> (status, {DocumentUniqueId: Part 10 SOP Instance UID check bytes}, {location: (errorCode, codeContext)})."""
    endpoint = server.endpoint("imaging-source")
    content_type, _, chunks = write_message(to_bytes(build_envelope(
        Action.RetrieveImagingDocumentSet.value, retrieve_imaging_document_set_request(request), to=endpoint,
        reply_to=WSA_ANONYMOUS)), [], action=Action.RetrieveImagingDocumentSet.value)
    response = requests.post(endpoint, data=b"".join(chunks), timeout=120,
                             headers={"Content-Type": content_type, "Accept-Encoding": "identity"})
    assert response.status_code == 200, response.text[:500]
    message = read_message(response.headers["Content-Type"], io.BytesIO(response.content),
                           content_length=len(response.content), max_size=1 << 30, max_xml_size=1 << 24)
    try:
        root = parse_xml(message.root).find(f".//{{{XDSB}}}RetrieveDocumentSetResponse")
        status, errors, documents = parse_retrieve_document_set_response(root)
        return (status, {d.document_unique_id: d.mime_type for d in documents},
                {e.location: (e.error_code, e.code_context) for e in errors})
    finally:
        message.close()


def test_rad69_hostile_uids_never_reach_the_pacs_and_the_good_instance_is_retrieved(
        server: Server, proxy: RecordingProxy, study: StudyRef) -> None:
    series = study.series[0]
    good = series.instances[0].sop_instance_uid
    values = list(HOSTILE.values())
    request = RetrieveImagingDocumentSetRequest([
        # First: the series the imaging source sends ahead before it parses the request.
        StudyRequest(HOSTILE["990077001"], [SeriesRequest(series.series_instance_uid,
                                                          [DocumentRequest(SOURCE_ID, good + ".1")])]),
        StudyRequest(study.study_instance_uid, [
            SeriesRequest(series.series_instance_uid,
                          [DocumentRequest(SOURCE_ID, good)] + [DocumentRequest(SOURCE_ID, v) for v in values]),
            SeriesRequest(HOSTILE["990077002"], [DocumentRequest(SOURCE_ID, good + ".2")]),
        ]),
    ], [ExplicitVRLittleEndian, "1.2.840.10008.1.2.1?x=990077010"])
    proxy.take()
    status, documents, errors = _post_rad69(server, request)
    sent = proxy.take()

    assert status == ResponseStatus.PARTIAL_SUCCESS.value
    assert set(documents) == {good}  # the good instance of the same request was fetched and returned
    # Each hostile DocumentRequest: not attempted, XDSDocumentUniqueIdError at its DocumentUniqueId as sent.
    assert set(errors) == {*values, good + ".1", good + ".2"}
    assert {code for code, _ in errors.values()} == {ErrorCode.XDSDocumentUniqueIdError}
    assert "studyInstanceUID '1.2.990077001?x=1' is not a DICOM UID" in errors[good + ".1"][1]
    assert "seriesInstanceUID" in errors[good + ".2"][1]
    assert "leading zero" in errors[HOSTILE["990077005"]][1]
    # The PACS was asked (the good instance came through the proxy), and never with a hostile value.
    assert good.encode() in sent
    _assert_nothing_hostile(proxy, sent)
    assert b"990077010" not in sent  # nor a hostile transfer syntax in an Accept header


def test_rad69_with_only_hostile_uids_fails_without_asking_the_pacs(server: Server, proxy: RecordingProxy,
                                                                    study: StudyRef) -> None:
    series = study.series[0]
    request = RetrieveImagingDocumentSetRequest([StudyRequest(study.study_instance_uid, [
        SeriesRequest(series.series_instance_uid, [DocumentRequest(SOURCE_ID, v) for v in HOSTILE.values()])])],
        [ExplicitVRLittleEndian])
    proxy.take()
    status, documents, errors = _post_rad69(server, request)
    sent = proxy.take()
    assert status == ResponseStatus.FAILURE.value and documents == {}
    assert set(errors) == set(HOSTILE.values())
    assert sent == b""  # not one byte to the PACS


@pytest.mark.parametrize("field", ["studyUID", "seriesUID", "objectUID"])
def test_rad55_hostile_uid_is_refused_with_400_before_the_pacs(server: Server, proxy: RecordingProxy,
                                                               study: StudyRef, field: str) -> None:
    series = study.series[0]
    uids = {"studyUID": study.study_instance_uid, "seriesUID": series.series_instance_uid,
            "objectUID": series.instances[0].sop_instance_uid}
    params = {"requestType": "WADO", "contentType": "application/dicom"}
    url = f"{server.url}/xds/imaging-source/wado"
    proxy.take()
    for value in HOSTILE.values():
        response = requests.get(url, params={**params, **uids, field: value}, timeout=60)
        assert response.status_code == 400, (value, response.status_code)
        assert response.headers["Content-Type"].startswith("text/plain")
        assert b"is not a DICOM UID" in response.content
    assert proxy.take() == b""
    # The same request with the UIDs as they are: through the proxy to the PACS, and the instance comes back.
    good = requests.get(url, params={**params, **uids}, timeout=60)
    assert good.status_code == 200 and good.headers["Content-Type"] == "application/dicom"
    assert uids["objectUID"].encode() in proxy.take()


def test_rad55_every_hostile_uid_of_a_request_is_named(server: Server, proxy: RecordingProxy) -> None:
    response = requests.get(f"{server.url}/xds/imaging-source/wado", timeout=60, params={
        "requestType": "WADO", "contentType": "application/dicom", "studyUID": HOSTILE["990077001"],
        "seriesUID": HOSTILE["990077002"], "objectUID": HOSTILE["990077004"],
        "transferSyntax": "1.2.840.10008.1.2.1?x=990077010"})
    assert response.status_code == 400
    for role in (b"studyInstanceUID", b"seriesInstanceUID", b"DocumentUniqueId", b"TransferSyntaxUID"):
        assert role in response.content
