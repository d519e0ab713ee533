"""RAD-69 honours the order of the consumer's TransferSyntaxUIDList (RAD TF-3 4.69.4.1.2), against the real Orthanc.

A consumer asking for lossless compression first (our consumer's ``--compress``) gets JPEG-LS even for
instances stored as Explicit VR LE - compressed by the PACS when it can (WADO-RS ``transfer-syntax=``),
by us otherwise - every pixel intact; a consumer asking for uncompressed syntaxes still gets the stored
bytes; an instance without pixel data comes back uncompressed, never as an error.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import numpy as np
import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
)

from imaging_source.dicom import wado_rs
from imaging_source.dicom.config import FetchMethod
from imaging_source.dicom.find import find_study
from imaging_source.study import StudyRef
from tests.conftest import CORPUS_DIR
from xds_core.ebxml.messages import DocumentRequest, RetrieveImagingDocumentSetRequest, SeriesRequest, StudyRequest
from xds_core.ebxml.parse import parse_retrieve_document_set_response
from xds_core.ebxml.serialize import retrieve_imaging_document_set_request
from xds_core.soap.client import SoapClient
from xds_core.vocabulary import Action, ResponseStatus

from .http_proxies import TransferSyntaxProxy
from .pacs_fixtures import NIST_STUDY_UID, configure_imaging_source

pytestmark = pytest.mark.pacs

SOURCE_ID = "1.3.6.1.4.1.21367.13.80.110"
#: Our consumer's ``--compress`` list, most preferred first.
COMPRESSED_FIRST = [JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1, ExplicitVRLittleEndian, ImplicitVRLittleEndian]
UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
NIST_IMAGES = CORPUS_DIR / "nist" / "_imagecache" / "std" / "IDS-DEPT002-a" / "images"
#: pydicom's test-SR.dcm (Comprehensive SR, Explicit VR LE) and rtplan.dcm (RT Plan, Implicit VR LE),
#: loaded by ``local-pacs.sh load --demo``: instances without pixel data.
SR_STUDY_UID = "1.2.276.0.7230010.3.1.4.2139363186.7819.982086466.2"
RTPLAN_STUDY_UID = "1.22.333.4.555555.6.7777777777777777777777777777"


@pytest.fixture(params=[FetchMethod.WADO_RS, FetchMethod.C_GET], ids=["wado-rs", "c-get"])
def method(request, pacs, settings, spool_dir) -> FetchMethod:
    configure_imaging_source(settings, pacs, request.param, root_last=True, source_id=SOURCE_ID, spool_dir=spool_dir)
    return request.param


@pytest.fixture(scope="module")
def nist(pacs) -> StudyRef:
    return find_study(NIST_STUDY_UID, pacs.config())


@pytest.fixture(scope="module")
def original_pixels() -> dict[str, np.ndarray]:
    """SOP Instance UID -> the pixels of the NIST study as its files hold them."""
    out = {}
    for path in sorted(NIST_IMAGES.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        out[ds.SOPInstanceUID] = ds.pixel_array
    assert len(out) == 36
    return out


@pytest.fixture(autouse=True)
def _no_remembered_refusals(monkeypatch) -> Iterator[None]:
    monkeypatch.setattr(wado_rs, "_refused", {})
    yield


def _stored(pacs, sop_uid: str) -> bytes:
    """The instance as Orthanc stores it (REST API)."""
    found = requests.post(f"{pacs.rest_url}/tools/lookup", data=sop_uid, timeout=30).json()
    return requests.get(f"{pacs.rest_url}/instances/{found[0]['ID']}/file", timeout=30).content


def _whole(study: StudyRef) -> StudyRequest:
    return StudyRequest(study.study_instance_uid, [
        SeriesRequest(s.series_instance_uid, [DocumentRequest(SOURCE_ID, i.sop_instance_uid) for i in s.instances])
        for s in study.series])


def _call(studies: list[StudyRequest], syntaxes: list[str]) -> dict[str, bytes]:
    """RAD-69 through our SOAP endpoint (the edge's send-ahead included): DocumentUniqueId -> part, all Success."""
    body = retrieve_imaging_document_set_request(RetrieveImagingDocumentSetRequest(studies, syntaxes))
    result = SoapClient("local:imaging-source").call(Action.RetrieveImagingDocumentSet.value, body)
    try:
        assert result.fault is None and result.http_status == 200, result.fault
        status, errors, documents = parse_retrieve_document_set_response(result.body)
        assert (status, errors) == (ResponseStatus.SUCCESS.value, [])
        return {d.document_unique_id: result.binary(d.element).read_bytes() for d in documents}
    finally:
        result.close()


def _syntax(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID)


def _assert_jpeg_ls_and_pixel_exact(parts: dict[str, bytes], original_pixels: dict[str, np.ndarray]) -> None:
    assert set(parts) == set(original_pixels)
    for uid, data in parts.items():
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.file_meta.TransferSyntaxUID == JPEGLSLossless, uid
        assert ds.SOPInstanceUID == uid  # the same instance, not a new one
        assert np.array_equal(ds.pixel_array, original_pixels[uid]), uid


def _transcoded(caplog: pytest.LogCaptureFixture) -> int:
    """``transcoded=`` of the last RAD-69's log line."""
    line = [r.getMessage() for r in caplog.records if r.name == "imaging_source.rad69"][-1]
    return int(line.split("transcoded=")[1].split()[0])


def test_compression_first_gets_jpeg_ls_with_every_pixel_intact_and_a_smaller_answer(
        method, nist, original_pixels, caplog) -> None:
    raw = _call([_whole(nist)], [ExplicitVRLittleEndian])
    with caplog.at_level(logging.INFO, logger="imaging_source.rad69"):
        compressed = _call([_whole(nist)], COMPRESSED_FIRST)
    _assert_jpeg_ls_and_pixel_exact(compressed, original_pixels)
    assert sum(map(len, compressed.values())) < 0.5 * sum(map(len, raw.values()))  # 1.7 MB vs 4.8 MB
    # WADO-RS: Orthanc compressed (asked with transfer-syntax=JPEG-LS), nothing left to do here;
    # C-GET: as stored (Explicit VR LE accepted), compressed here.
    assert _transcoded(caplog) == (0 if method == FetchMethod.WADO_RS else 36)


def test_the_pacs_is_asked_for_the_most_preferred_lossless_compression(pacs, settings, spool_dir, nist) -> None:
    proxy = TransferSyntaxProxy(pacs.http_port, refuse=False)
    try:
        configure_imaging_source(settings, pacs, FetchMethod.WADO_RS, root_last=True, source_id=SOURCE_ID,
                                 spool_dir=spool_dir)
        settings.DICOMWEB_URL = f"http://127.0.0.1:{proxy.port}/dicom-web"
        _call([_whole(nist)], COMPRESSED_FIRST)
        # One request per series (or per instance of a small one), the first sent ahead by the SOAP edge
        # with the same Accept and used, not sent again.
        targets = sum(1 if len(s.instances) > wado_rs.WADO_PER_INSTANCE_MAX else len(s.instances) for s in nist.series)
        assert proxy.accepts == [f'multipart/related; type="application/dicom"; transfer-syntax={JPEGLSLossless}'
                                 ] * targets
        proxy.accepts.clear()
        _call([_whole(nist)], [ExplicitVRLittleEndian, JPEGLSLossless])  # uncompressed first: as stored
        assert proxy.accepts and set(proxy.accepts) == {wado_rs.WADO_ACCEPT}
    finally:
        proxy.close()


def test_uncompressed_syntaxes_pass_the_stored_bytes_through(method, pacs, nist, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="imaging_source.rad69"):
        parts = _call([_whole(nist)], UNCOMPRESSED)
    assert len(parts) == 36 and _transcoded(caplog) == 0
    for uid, data in parts.items():
        stored = _stored(pacs, uid)  # stored as Explicit VR LE
        if method == FetchMethod.WADO_RS:
            assert data == stored, uid  # byte for byte Orthanc's file
        else:  # C-GET delivers the data set; the Part 10 file meta is ours (its implementation UID...)
            assert _syntax(data) == ExplicitVRLittleEndian
            assert pydicom.dcmread(io.BytesIO(data)) == pydicom.dcmread(io.BytesIO(stored)), uid


def test_instances_without_pixel_data_come_back_uncompressed(method, pacs) -> None:
    for study_uid, sample, stored_as in ((SR_STUDY_UID, "test-SR.dcm", ExplicitVRLittleEndian),
                                         (RTPLAN_STUDY_UID, "rtplan.dcm", ImplicitVRLittleEndian)):
        study = find_study(study_uid, pacs.config())
        [series] = study.series
        [instance] = series.instances
        parts = _call([_whole(study)], COMPRESSED_FIRST)
        data = parts[instance.sop_instance_uid]
        # Uncompressed, in the syntax it arrived in when that is in the list (no pointless rewrite): Orthanc's
        # C-GET sends even the Implicit VR LE RT plan as Explicit VR LE (the syntax it accepted first), and
        # "transcodes" both to JPEG-LS for our WADO-RS request by relabelling them, which hides how they are
        # stored - they then go out in the list's first uncompressed syntax.
        assert _syntax(data) == ExplicitVRLittleEndian, stored_as
        assert pydicom.dcmread(io.BytesIO(data)) == pydicom.dcmread(get_testdata_file(sample))


def test_a_pacs_that_refuses_the_compressed_accept_gets_asked_as_stored_and_we_compress(
        pacs, settings, spool_dir, nist, original_pixels, caplog) -> None:
    proxy = TransferSyntaxProxy(pacs.http_port, refuse=True)  # 406 to any specific transfer-syntax
    try:
        configure_imaging_source(settings, pacs, FetchMethod.WADO_RS, root_last=True, source_id=SOURCE_ID,
                                 spool_dir=spool_dir)
        settings.DICOMWEB_URL = f"http://127.0.0.1:{proxy.port}/dicom-web"
        with caplog.at_level(logging.INFO, logger="imaging_source.rad69"):
            parts = _call([_whole(nist)], COMPRESSED_FIRST)
        _assert_jpeg_ls_and_pixel_exact(parts, original_pixels)
        assert _transcoded(caplog) == 36  # pydicom + pyjpegls did it
        assert proxy.refused == 1  # refused once (the request sent ahead); the rest asked as stored
        assert wado_rs.WADO_ACCEPT in proxy.accepts
        # The refusal is remembered: the next request asks as stored at once.
        proxy.accepts.clear()
        _assert_jpeg_ls_and_pixel_exact(_call([_whole(nist)], COMPRESSED_FIRST), original_pixels)
        assert proxy.refused == 1 and set(proxy.accepts) == {wado_rs.WADO_ACCEPT}
    finally:
        proxy.close()


def test_an_orthanc_that_cannot_encode_the_most_preferred_syntax_falls_back_too(method, nist, original_pixels) -> None:
    """Orthanc 1.10.1 cannot encode JPEG 2000 (its answer: 500): the consumer still gets JPEG 2000, from us."""
    parts = _call([_whole(nist)], [JPEG2000Lossless, ExplicitVRLittleEndian])
    assert set(parts) == set(original_pixels)
    for uid, data in parts.items():
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.file_meta.TransferSyntaxUID == JPEG2000Lossless
        assert np.array_equal(ds.pixel_array, original_pixels[uid]), uid
