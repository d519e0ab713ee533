"""RAD-69 Retrieve Imaging Document Set on our Imaging Document Source, against the real Orthanc.

Requests go through the real SOAP endpoint (``local:imaging-source``: real MTOM bytes in and
out, the same code path as HTTP); instances come from the PACS over real DICOM / DICOMweb.
"""

from __future__ import annotations

import io
import socket
from dataclasses import dataclass

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
)

from imaging_source.dicom.config import FetchMethod
from imaging_source.dicom.find import find_studies, find_study
from imaging_source.dicom.part10 import read_file_meta
from imaging_source.dicom.scp import DicomListener
from xds_core.ebxml.messages import (
    DocumentRequest,
    RetrieveImagingDocumentSetRequest,
    SeriesRequest,
    StudyRequest,
)
from xds_core.ebxml.parse import parse_retrieve_document_set_response
from xds_core.ebxml.serialize import retrieve_imaging_document_set_request
from xds_core.errors import ErrorCode, RegistryError, WadoErrorCode
from xds_core.ns import XDSB, XDSI, XOP
from xds_core.safe_xml import parse_xml, to_bytes
from xds_core.soap.client import SoapClient, dispatch_local
from xds_core.soap.envelope import build_envelope
from xds_core.soap.mtom import normalize_cid, write_message
from xds_core.soap.mtom_reader import read_message
from xds_core.vocabulary import Action, ResponseStatus

from .http_proxies import HoldingProxy
from .pacs_fixtures import JPEG_PATIENT_ID, NIST_STUDY_UID, configure_imaging_source

pytestmark = pytest.mark.pacs

SOURCE_ID = "1.3.6.1.4.1.21367.13.80.110"


@dataclass
class Answer:
    status: str
    errors: list[RegistryError]
    documents: dict[str, pydicom.Dataset]  # DocumentUniqueId -> parsed instance
    raw: dict[str, bytes]


@pytest.fixture(params=[(FetchMethod.C_GET, False), (FetchMethod.C_MOVE, False), (FetchMethod.WADO_RS, False),
                        (FetchMethod.C_GET, True), (FetchMethod.WADO_RS, True)],
                ids=["c-get", "c-move", "wado-rs", "c-get-root-last", "wado-rs-root-last"])
def source(request, pacs, settings, spool_dir, tmp_path):
    """Our Imaging Document Source configured for the test PACS with one fetch method.

    ``root-last``: XDS_RAD69_ROOT_LAST, the streamed answer (instances first, SOAP root part last).
    """
    method, root_last = request.param
    configure_imaging_source(settings, pacs, method, root_last=root_last, source_id=SOURCE_ID, spool_dir=spool_dir)
    listener = None
    if method == FetchMethod.C_MOVE:  # the C-MOVE destination: our SCP (the listener process in production)
        listener = DicomListener(pacs.config(FetchMethod.C_MOVE, spool_dir=spool_dir))
        listener.start()
    yield method
    if listener:
        listener.stop()


@pytest.fixture(scope="module")
def nist(pacs):
    return find_study(NIST_STUDY_UID, pacs.config())


def _request(studies: list[StudyRequest], syntaxes: list[str]) -> RetrieveImagingDocumentSetRequest:
    return RetrieveImagingDocumentSetRequest(studies, syntaxes)


def _whole(study, repository: str = SOURCE_ID) -> StudyRequest:
    return StudyRequest(study.study_instance_uid, [
        SeriesRequest(s.series_instance_uid, [DocumentRequest(repository, i.sop_instance_uid) for i in s.instances])
        for s in study.series])


def _call(request: RetrieveImagingDocumentSetRequest, *, drop_syntax_list: bool = False) -> Answer:
    body = retrieve_imaging_document_set_request(request)
    if drop_syntax_list:
        body.remove(body.find(f"{{{XDSI}}}TransferSyntaxUIDList"))
    result = SoapClient("local:imaging-source").call(Action.RetrieveImagingDocumentSet.value, body)
    assert result.fault is None, result.fault
    assert result.http_status == 200
    assert result.action == Action.RetrieveImagingDocumentSetResponse.value
    status, errors, documents = parse_retrieve_document_set_response(result.body)
    raw = {d.document_unique_id: result.binary(d.element).read_bytes() for d in documents}
    for d in documents:
        assert d.mime_type == "application/dicom" and d.repository_unique_id == SOURCE_ID
    return Answer(status, errors, {uid: pydicom.dcmread(io.BytesIO(b)) for uid, b in raw.items()}, raw)


def test_whole_study_is_returned_byte_exact_in_the_stored_syntax(source, nist) -> None:
    answer = _call(_request([_whole(nist)], [ExplicitVRLittleEndian]))

    assert answer.status == ResponseStatus.SUCCESS.value and answer.errors == []
    where = {i.sop_instance_uid: s.series_instance_uid for s in nist.series for i in s.instances}
    assert set(answer.documents) == set(where)
    for uid, ds in answer.documents.items():
        assert ds.SOPInstanceUID == uid and ds.SeriesInstanceUID == where[uid]
        assert ds.StudyInstanceUID == NIST_STUDY_UID and ds.PatientID == "IDS-DEPT002-a"
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)


def test_instances_are_transcoded_to_the_requested_implicit_syntax(source, nist) -> None:
    answer = _call(_request([_whole(nist)], [ImplicitVRLittleEndian]))
    assert answer.status == ResponseStatus.SUCCESS.value
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in answer.documents.values()} == {ImplicitVRLittleEndian}
    ds = next(iter(answer.documents.values()))
    assert ds.pixel_array.shape == (ds.Rows, ds.Columns)


def test_the_first_requested_syntax_we_can_produce_is_used(source, pacs) -> None:
    """JPEG Baseline cannot be encoded by pydicom; JPEG 2000 Lossless can: every pixel survives."""
    ct = find_study(find_studies("1CT1", config=pacs.config())[0], pacs.config())
    sop = ct.series[0].instances[0].sop_instance_uid
    answer = _call(_request([StudyRequest(ct.study_instance_uid, [
        SeriesRequest(ct.series[0].series_instance_uid, [DocumentRequest(SOURCE_ID, sop)])])],
        [JPEGBaseline8Bit, JPEG2000Lossless]))
    assert answer.status == ResponseStatus.SUCCESS.value, answer.errors
    ds = answer.documents[sop]
    assert ds.file_meta.TransferSyntaxUID == JPEG2000Lossless
    original = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert np.array_equal(ds.pixel_array, original.pixel_array)


def test_jpeg_instances_pass_through_or_are_decompressed(source, pacs) -> None:
    us = find_study(find_studies(JPEG_PATIENT_ID, config=pacs.config())[0], pacs.config())
    sop = us.series[0].instances[0].sop_instance_uid
    study = StudyRequest(us.study_instance_uid, [
        SeriesRequest(us.series[0].series_instance_uid, [DocumentRequest(SOURCE_ID, sop)])])

    as_stored = _call(_request([study], [JPEGBaseline8Bit]))
    assert as_stored.documents[sop].file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    # Passed through untouched: the compressed frames are the ones pydicom's sample file holds.
    assert as_stored.documents[sop].PixelData == pydicom.dcmread(get_testdata_file("examples_ybr_color.dcm")).PixelData
    decompressed = _call(_request([study], [ExplicitVRLittleEndian]))
    ds = decompressed.documents[sop]
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.pixel_array.shape == as_stored.documents[sop].pixel_array.shape


def test_per_document_errors_with_partial_success(source, nist) -> None:
    good = nist.series[0].instances[0].sop_instance_uid
    elsewhere = nist.series[1].instances[0].sop_instance_uid
    unknown = "1.2.3.4.5.6.7.8.9.404"
    wrong_repo = nist.series[0].instances[1].sop_instance_uid
    series0 = nist.series[0].series_instance_uid
    request = _request([
        StudyRequest(NIST_STUDY_UID, [SeriesRequest(series0, [
            DocumentRequest(SOURCE_ID, good),
            DocumentRequest(SOURCE_ID, unknown),
            DocumentRequest(SOURCE_ID, elsewhere),  # lives in series 1
            DocumentRequest("1.2.3.999", wrong_repo),
            DocumentRequest(SOURCE_ID, ""),
        ])]),
        StudyRequest("", [SeriesRequest(series0, [DocumentRequest(SOURCE_ID, nist.series[0].instances[2]
                                                                   .sop_instance_uid)])]),
    ], [ExplicitVRLittleEndian])
    answer = _call(request)

    assert answer.status == ResponseStatus.PARTIAL_SUCCESS.value
    assert set(answer.documents) == {good}
    by_location = {e.location: e for e in answer.errors}
    assert by_location[unknown].error_code == ErrorCode.XDSDocumentUniqueIdError
    assert by_location[elsewhere].error_code == ErrorCode.XDSDocumentUniqueIdError
    assert nist.series[1].series_instance_uid in by_location[elsewhere].code_context
    assert by_location[wrong_repo].error_code == ErrorCode.XDSUnknownRepositoryId
    assert by_location[""].error_code == ErrorCode.XDSDocumentUniqueIdError
    assert "studyInstanceUID" in by_location[nist.series[0].instances[2].sop_instance_uid].code_context
    assert all(e.is_error for e in answer.errors) and len(answer.errors) == 5


def test_unsupported_or_missing_transfer_syntax_fails_every_document(source, nist) -> None:
    one = StudyRequest(NIST_STUDY_UID, [SeriesRequest(nist.series[0].series_instance_uid, [
        DocumentRequest(SOURCE_ID, nist.series[0].instances[0].sop_instance_uid)])])
    for answer in (_call(_request([one], ["1.2.3.4.5"])), _call(_request([one], [])),
                   _call(_request([one], []), drop_syntax_list=True)):
        assert answer.status == ResponseStatus.FAILURE.value and answer.documents == {}
        [error] = answer.errors
        assert error.error_code == WadoErrorCode.UnsupportedTransferSyntax
        assert error.location == nist.series[0].instances[0].sop_instance_uid


def test_an_instance_that_cannot_be_produced_in_the_requested_syntax(source, nist) -> None:
    """MR stored as Explicit VR LE, only JPEG Baseline asked for: pydicom cannot encode it."""
    sop = nist.series[0].instances[0].sop_instance_uid
    ok = nist.series[0].instances[1].sop_instance_uid
    answer = _call(_request([StudyRequest(NIST_STUDY_UID, [SeriesRequest(nist.series[0].series_instance_uid, [
        DocumentRequest(SOURCE_ID, sop), DocumentRequest(SOURCE_ID, ok)])])], [JPEGBaseline8Bit]))
    assert answer.status == ResponseStatus.FAILURE.value
    assert {e.location for e in answer.errors} == {sop, ok}
    assert {e.error_code for e in answer.errors} == {WadoErrorCode.CannotProvideInTransferSyntax}


def test_nist_ids_4811_request_returns_the_reference_images(source, corpus_dir) -> None:
    """Conformance IMG-04 (nist/ids_4811): the toolkit's own RAD-69 request, tags equal to the gold images."""
    from xds_core.safe_xml import parse_xml

    case = corpus_dir / "nist" / "ids_4811"
    body = parse_xml((case / "Rad69RetrieveRequest" / "RAD-69Request.xml").read_bytes())
    result = SoapClient("local:imaging-source").call(Action.RetrieveImagingDocumentSet.value, body)
    status, errors, documents = parse_retrieve_document_set_response(result.body)
    assert status == ResponseStatus.SUCCESS.value, errors
    assert len(documents) == 36
    gold = {}
    images = corpus_dir / "nist" / "_imagecache" / "std" / "IDS-DEPT002-a" / "images"
    for path in images.glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        gold[ds.SOPInstanceUID] = ds
    tags = ("SOPClassUID", "SOPInstanceUID", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
            "SeriesInstanceUID")  # the testplan's TagList (ValidateReturnedImages, sameDcmImgs)
    for document in documents:
        ds = pydicom.dcmread(io.BytesIO(result.binary(document.element).read_bytes()))
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        reference = gold[document.document_unique_id]
        assert [ds.get(t) for t in tags] == [reference.get(t) for t in tags]


@pytest.mark.parametrize("method", [FetchMethod.C_GET, FetchMethod.WADO_RS])
def test_an_unreachable_pacs_fails_every_document_with_a_repository_error(settings, method) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    settings.XDS_IMAGING_SOURCE_ID = SOURCE_ID
    settings.DICOM_PACS = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": closed}
    settings.DICOMWEB_URL = f"http://127.0.0.1:{closed}/dicom-web" if method == FetchMethod.WADO_RS else ""
    settings.DICOM_FETCH_METHOD = method.value
    uids = ["1.2.3.4.1", "1.2.3.4.2"]
    answer = _call(_request([StudyRequest("1.2.3", [SeriesRequest("1.2.3.4", [
        DocumentRequest(SOURCE_ID, uid) for uid in uids])])], [ExplicitVRLittleEndian]))
    assert answer.status == ResponseStatus.FAILURE.value and answer.documents == {}
    assert [(e.error_code, e.location) for e in answer.errors] == [(ErrorCode.XDSRepositoryError, uid) for uid in uids]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("root_last", [False, True], ids=["root-first", "root-last"])
def test_rad69_over_real_http(live_server, pacs, settings, nist, root_last) -> None:
    """The same request over a real HTTP socket (Django's live server), both MTOM layouts."""
    settings.XDS_RAD69_ROOT_LAST = root_last
    settings.XDS_IMAGING_SOURCE_ID = SOURCE_ID
    settings.DICOM_AE_TITLE = pacs.ae_title
    settings.DICOM_PACS = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs.dicom_port}
    settings.DICOMWEB_URL = pacs.dicomweb_url
    settings.DICOM_FETCH_METHOD = FetchMethod.WADO_RS.value
    client = SoapClient(f"{live_server.url}/xds/imaging-source")
    result = client.call(Action.RetrieveImagingDocumentSet.value,
                         retrieve_imaging_document_set_request(_request([_whole(nist)], [ImplicitVRLittleEndian])))
    assert result.http_status == 200 and result.fault is None
    status, errors, documents = parse_retrieve_document_set_response(result.body)
    assert status == ResponseStatus.SUCCESS.value, errors
    assert len(documents) == 36
    ds = pydicom.dcmread(io.BytesIO(result.binary(documents[-1].element).read_bytes()))
    assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert ds.SOPInstanceUID == documents[-1].document_unique_id


def _wado_root_last(settings, pacs, dicomweb_url: str) -> None:
    settings.XDS_RAD69_ROOT_LAST = True
    settings.XDS_IMAGING_SOURCE_ID = SOURCE_ID
    settings.DICOM_AE_TITLE = pacs.ae_title
    settings.DICOM_PACS = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs.dicom_port}
    settings.DICOMWEB_URL = dicomweb_url
    settings.DICOM_FETCH_METHOD = FetchMethod.WADO_RS.value


def test_root_last_answer_streams_instances_before_the_pacs_has_finished(pacs, settings, nist, monkeypatch) -> None:
    """The first instance reaches the consumer while the PACS's WADO-RS answer is still incomplete."""
    import xds_core.soap.streaming as streaming

    proxy = HoldingProxy(pacs.http_port)
    try:
        _wado_root_last(settings, pacs, f"http://127.0.0.1:{proxy.port}/dicom-web")
        monkeypatch.setattr(streaming, "WRITE_SIZE", 1)  # write each part at once (normally 512 KiB groups)
        series = max(nist.series, key=lambda s: len(s.instances))
        assert len(series.instances) > 4  # one WADO-RS series request (not instance by instance)
        body = retrieve_imaging_document_set_request(_request([StudyRequest(NIST_STUDY_UID, [SeriesRequest(
            series.series_instance_uid, [DocumentRequest(SOURCE_ID, i.sop_instance_uid) for i in series.instances])])],
            [ExplicitVRLittleEndian]))
        content_type, _, envelope_chunks = write_message(to_bytes(build_envelope(
            Action.RetrieveImagingDocumentSet.value, body)), [], action=Action.RetrieveImagingDocumentSet.value)
        status, answer_type, chunks = dispatch_local("imaging-source", content_type, b"".join(envelope_chunks))
        assert status == 200
        assert next(chunks) == b""  # the headers go at once (a server sends them with the first piece)
        first = next(chunks)
        # Not ``release`` (only this test sets it): the proxy gives up holding after 30 s, so a relay
        # that waited for the whole PACS answer would also get here, but only after the tail went out.
        assert not proxy.tail_sent.is_set()
        assert b"Content-ID" in first and b"DICM" in first  # an instance, not the SOAP root
        assert b"RetrieveDocumentSetResponse" not in first
        proxy.release.set()
        rest = b"".join(chunks)
    finally:
        proxy.close()
    message = read_message(answer_type, io.BytesIO(first + rest), content_length=None, max_size=1 << 30,
                           max_xml_size=1 << 24)
    try:
        status_uri, errors, documents = parse_retrieve_document_set_response(
            parse_xml(message.root).find(f".//{{{XDSB}}}RetrieveDocumentSetResponse"))
        assert status_uri == ResponseStatus.SUCCESS.value, errors
        assert {d.document_unique_id for d in documents} == {i.sop_instance_uid for i in series.instances}
    finally:
        message.close()


def test_a_missing_instance_in_a_streamed_series_is_an_error_without_a_dangling_include(pacs, settings, nist) -> None:
    _wado_root_last(settings, pacs, pacs.dicomweb_url)
    series = max(nist.series, key=lambda s: len(s.instances))
    unknown = "1.2.3.4.5.6.7.8.9.405"
    uids = [i.sop_instance_uid for i in series.instances] + [unknown]
    body = retrieve_imaging_document_set_request(_request([StudyRequest(NIST_STUDY_UID, [SeriesRequest(
        series.series_instance_uid, [DocumentRequest(SOURCE_ID, uid) for uid in uids])])], [ExplicitVRLittleEndian]))
    result = SoapClient("local:imaging-source").call(Action.RetrieveImagingDocumentSet.value, body)
    try:
        status, errors, documents = parse_retrieve_document_set_response(result.body)
        assert status == ResponseStatus.PARTIAL_SUCCESS.value
        assert [(e.error_code, e.location) for e in errors] == [(ErrorCode.XDSDocumentUniqueIdError, unknown)]
        assert {d.document_unique_id for d in documents} == set(uids) - {unknown}
        # Every xop:Include names a part that was sent, and no part is left unreferenced.
        hrefs = {normalize_cid(d.element.find(f".//{{{XOP}}}Include").get("href")) for d in documents}
        assert hrefs == set(result.attachments)
        for d in documents:
            assert read_file_meta(result.binary(d.element).read_bytes())["MediaStorageSOPInstanceUID"] == \
                d.document_unique_id
    finally:
        result.close()


def _raw_rad69(study_uid: str, series_uid: str, repository: str, sop_uid: str, syntax: str) -> bytes:
    """A RAD-69 request laid out like the NIST testkit's (ids_4812): UIDs on their own indented lines."""
    return f"""<xdsiB:RetrieveImagingDocumentSetRequest xmlns:xdsiB="{XDSI}">
  <xdsiB:StudyRequest studyInstanceUID="{study_uid}">
    <xdsiB:SeriesRequest seriesInstanceUID="{series_uid}">
      <xdsb:DocumentRequest xmlns:xdsb="{XDSB}">
        <xdsb:RepositoryUniqueId>{repository}
        </xdsb:RepositoryUniqueId>
        <xdsb:DocumentUniqueId>{sop_uid}
        </xdsb:DocumentUniqueId>
      </xdsb:DocumentRequest>
    </xdsiB:SeriesRequest>
  </xdsiB:StudyRequest>
  <xdsiB:TransferSyntaxUIDList>
    <xdsiB:TransferSyntaxUID>{syntax}</xdsiB:TransferSyntaxUID>
  </xdsiB:TransferSyntaxUIDList>
</xdsiB:RetrieveImagingDocumentSetRequest>""".encode()


def _call_raw(xml: bytes) -> tuple[str, list[RegistryError], list[str]]:
    result = SoapClient("local:imaging-source").call(Action.RetrieveImagingDocumentSet.value, parse_xml(xml))
    assert result.fault is None and result.http_status == 200, result.fault
    status, errors, documents = parse_retrieve_document_set_response(result.body)
    return status, errors, [d.document_unique_id for d in documents]


def test_nist_ids_4812_exception_cases_fail_with_their_error_codes(source, nist) -> None:
    """NIST ids_4812 (RAD-69 exception cases), each a one-document request -> Failure.

    RAD TF-3 4.69.4.2.3 / ITI TF-3 4.2.4.1: per-document errors, location = the SOP Instance UID.
    Where the testkit expects codes the TF does not define (XDSIRequestError) or XDSRepositoryError
    for an unknown transfer syntax, we keep the TF / DICOM PS3.18 6.4.4 codes (module docstring).
    """
    series = nist.series[0]
    sop = series.instances[0].sop_instance_uid
    other_series = nist.series[1].series_instance_uid
    ts = ExplicitVRLittleEndian
    cases = {
        "case-1 unknown repository": (_raw_rad69(NIST_STUDY_UID, series.series_instance_uid, SOURCE_ID + ".999",
                                                 sop, ts), ErrorCode.XDSUnknownRepositoryId),
        "case-2 unknown SOP instance": (_raw_rad69(NIST_STUDY_UID, series.series_instance_uid, SOURCE_ID,
                                                   sop + ".404", ts), ErrorCode.XDSDocumentUniqueIdError),
        "case-3 not in requested series": (_raw_rad69(NIST_STUDY_UID, other_series, SOURCE_ID, sop, ts),
                                           ErrorCode.XDSDocumentUniqueIdError),
        "case-4 not in requested study": (_raw_rad69("1.2.3.4.5.999", series.series_instance_uid, SOURCE_ID, sop,
                                                     ts), ErrorCode.XDSDocumentUniqueIdError),
        "case-5 empty study": (_raw_rad69("", series.series_instance_uid, SOURCE_ID, sop, ts),
                               ErrorCode.XDSDocumentUniqueIdError),
        "case-6 empty series": (_raw_rad69(NIST_STUDY_UID, "", SOURCE_ID, sop, ts),
                                ErrorCode.XDSDocumentUniqueIdError),
        "case-7 empty study and series": (_raw_rad69("", "", SOURCE_ID, sop, ts), ErrorCode.XDSDocumentUniqueIdError),
        "case-8 empty transfer syntax": (_raw_rad69(NIST_STUDY_UID, series.series_instance_uid, SOURCE_ID, sop, ""),
                                         WadoErrorCode.UnsupportedTransferSyntax),
        "case-9 unknown transfer syntax": (_raw_rad69(NIST_STUDY_UID, series.series_instance_uid, SOURCE_ID, sop,
                                                      "1.2.840.10008.1.2.4.999"),
                                           WadoErrorCode.UnsupportedTransferSyntax),
    }
    for name, (xml, code) in cases.items():
        status, errors, documents = _call_raw(xml)
        assert (status, documents) == (ResponseStatus.FAILURE.value, []), name
        assert [(e.error_code, e.location, e.is_error) for e in errors] == [
            (code, sop + ".404" if name.startswith("case-2") else sop, True)], name

    # case-0 (the comparison transaction): the same layout, all right -> the instance, its UID trimmed.
    status, errors, documents = _call_raw(_raw_rad69(NIST_STUDY_UID, series.series_instance_uid, SOURCE_ID, sop, ts))
    assert (status, errors, documents) == (ResponseStatus.SUCCESS.value, [], [sop])
