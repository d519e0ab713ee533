"""Fetching instances from the real Orthanc: C-GET, C-MOVE to our own SCP, WADO-RS."""

from __future__ import annotations

import io
from dataclasses import replace

import pydicom
import pytest

from imaging_source.dicom.config import FetchMethod
from imaging_source.dicom.fetch import FetchStream, fetch
from imaging_source.dicom.find import find_study
from imaging_source.dicom.instances import SeriesFetch
from imaging_source.dicom.part10 import read_file_meta
from imaging_source.dicom.scp import DicomListener
from imaging_source.dicom.wado_rs import iter_multipart, send_ahead

from ..http_proxies import CountingProxy
from ..pacs_fixtures import NIST_STUDY_UID

pytestmark = pytest.mark.pacs


@pytest.fixture
def listener(pacs, spool_dir):
    """Our C-STORE SCP on the port Orthanc knows for this session's AE (the C-MOVE destination)."""
    server = DicomListener(pacs.config(FetchMethod.C_MOVE, spool_dir=spool_dir))
    server.start()
    yield server
    server.stop()


def _nist_request(pacs, extra: dict[int, list[str]] | None = None) -> tuple[list[SeriesFetch], dict[str, str]]:
    study = find_study(NIST_STUDY_UID, pacs.config())
    series = [SeriesFetch(NIST_STUDY_UID, s.series_instance_uid, [i.sop_instance_uid for i in s.instances])
              for s in study.series]
    for index, uids in (extra or {}).items():
        series[index].sop_instance_uids.extend(uids)
    where = {i.sop_instance_uid: s.series_instance_uid for s in study.series for i in s.instances}
    return series, where


@pytest.mark.parametrize("method", [FetchMethod.C_GET, FetchMethod.C_MOVE, FetchMethod.WADO_RS])
def test_fetch_delivers_every_requested_instance_of_each_series(pacs, listener, spool_dir, method) -> None:
    series, where = _nist_request(pacs)
    result = fetch(pacs.config(method, spool_dir=spool_dir), series)

    assert result.failures == {}
    assert len(result.instances) == 36
    for (series_uid, sop_uid), instance in result.instances.items():
        ds = pydicom.dcmread(io.BytesIO(instance.read_bytes()))
        assert ds.SOPInstanceUID == sop_uid and ds.SeriesInstanceUID == series_uid == where[sop_uid]
        assert ds.StudyInstanceUID == NIST_STUDY_UID
        assert instance.transfer_syntax_uid == str(ds.file_meta.TransferSyntaxUID)
    assert not list(spool_dir.glob("*.dcm"))  # C-MOVE copies are claimed and removed


@pytest.mark.parametrize("method", [FetchMethod.C_GET, FetchMethod.C_MOVE, FetchMethod.WADO_RS])
def test_unknown_and_misplaced_instances_are_not_delivered(pacs, listener, spool_dir, method) -> None:
    series, where = _nist_request(pacs)
    other_series_instance = series[1].sop_instance_uids[0]
    series[0].sop_instance_uids += ["1.2.3.4.5.6.7.8.9.404", other_series_instance]
    result = fetch(pacs.config(method, spool_dir=spool_dir), series)

    delivered = {sop for _, sop in result.instances}
    assert "1.2.3.4.5.6.7.8.9.404" not in delivered
    # Asked for in the wrong series: only its real series counts.
    assert (series[0].series_instance_uid, other_series_instance) not in result.instances
    assert (series[1].series_instance_uid, other_series_instance) in result.instances
    assert len(result.instances) == 36


def test_a_few_instances_by_wado_rs_come_one_by_one(pacs, spool_dir) -> None:
    series, _ = _nist_request(pacs)
    few = [SeriesFetch(NIST_STUDY_UID, series[0].series_instance_uid, series[0].sop_instance_uids[:2])]
    result = fetch(pacs.config(FetchMethod.WADO_RS, spool_dir=spool_dir), few)
    assert sorted(sop for _, sop in result.instances) == sorted(series[0].sop_instance_uids[:2])


def test_instances_spill_to_files_past_the_memory_limit(pacs, spool_dir) -> None:
    series, _ = _nist_request(pacs)
    result = fetch(pacs.config(FetchMethod.WADO_RS, spool_dir=spool_dir), series, memory_limit=500_000)
    on_disk = [i for i in result.instances.values() if i.path is not None]
    assert on_disk and len(result.instances) == 36
    assert pydicom.dcmread(io.BytesIO(on_disk[0].read_bytes())).SOPInstanceUID == on_disk[0].sop_instance_uid
    result.discard()
    assert not any(i.path.exists() for i in on_disk)


def test_a_streamed_fetch_keeps_released_instances_off_the_memory_limit(pacs, spool_dir) -> None:
    # 36 instances of ~40-500 kB with room for ~one at a time: released as consumed, none spills.
    series, _ = _nist_request(pacs)
    stream = FetchStream(pacs.config(FetchMethod.WADO_RS, spool_dir=spool_dir), series, memory_limit=600_000)
    delivered = 0
    for _key, instance in stream:
        assert instance.path is None and instance.data is not None
        delivered += 1
        stream.release(instance)
        assert instance.data is None
    assert delivered == 36 and stream.collector.in_memory == 0
    assert not list(spool_dir.rglob("*.dcm"))  # nothing spilled to files


@pytest.mark.parametrize("with_length", [False, True])
def test_multipart_parser_handles_parts_split_across_chunks(with_length) -> None:
    parts = [b"A" * 1000, b"\r\n--not-the-boundary\r\n" + b"B" * 10, b"", b"\r\n--XY" * 300]
    if not with_length:
        parts.pop()  # without Content-Length a body must not contain the delimiter
    body = b"".join(b"--XYZ\r\nContent-Type: application/dicom\r\n"
                    + (b"Content-Length: %d\r\n" % len(p) if with_length else b"") + b"\r\n" + p + b"\r\n"
                    for p in parts) + b"--XYZ--\r\n"
    for size in (1, 7, 64, 1000, len(body)):
        chunks = (body[i:i + size] for i in range(0, len(body), size))
        assert list(iter_multipart('multipart/related; type="application/dicom"; boundary=XYZ', chunks)) == parts


def test_file_meta_is_read_without_pydicom() -> None:
    from pydicom.data import get_testdata_file

    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    meta = read_file_meta(data)
    ds = pydicom.dcmread(io.BytesIO(data))
    assert meta["MediaStorageSOPInstanceUID"] == ds.SOPInstanceUID
    assert meta["TransferSyntaxUID"] == ds.file_meta.TransferSyntaxUID
    with pytest.raises(ValueError):
        read_file_meta(b"not dicom" * 20)


def _fetch_with_a_request_sent_ahead(pacs, spool_dir, ahead_for: SeriesFetch, series: list[SeriesFetch]
                                     ) -> tuple[set[tuple[str, str]], list[bytes], object]:
    """Fetch ``series`` through a counting proxy, the request for ``ahead_for`` sent ahead first.

    -> (delivered keys, request lines the PACS saw, the request sent ahead)."""
    proxy = CountingProxy(pacs.http_port)
    try:
        config = replace(pacs.config(FetchMethod.WADO_RS, spool_dir=spool_dir),
                         dicomweb_url=f"http://127.0.0.1:{proxy.port}/dicom-web")
        ahead = send_ahead(config, ahead_for)
        assert ahead is not None
        delivered = {key for key, _instance in FetchStream(config, series, ahead=ahead)}
    finally:
        proxy.close()
    return delivered, proxy.requests, ahead


def test_a_request_sent_ahead_is_the_fetch_s_first_request(pacs, spool_dir) -> None:
    series, _ = _nist_request(pacs)
    delivered, requests, _ahead = _fetch_with_a_request_sent_ahead(pacs, spool_dir, series[0], series)
    assert len(delivered) == 36
    assert len(requests) == len(series)  # one GET per series: the one sent ahead was not sent again


def test_a_request_sent_ahead_for_another_series_is_dropped(pacs, spool_dir) -> None:
    series, _ = _nist_request(pacs)
    delivered, _requests, ahead = _fetch_with_a_request_sent_ahead(pacs, spool_dir, series[0], series[1:])
    assert ahead.connection.sock is None  # type: ignore[attr-defined]  # cancelled: closed, its answer never read
    assert {series_uid for series_uid, _sop in delivered} == {series[1].series_instance_uid}
    assert len(delivered) == len(series[1].sop_instance_uids)


def test_nothing_is_sent_ahead_for_a_dimse_fetch(pacs, spool_dir) -> None:
    series, _ = _nist_request(pacs)
    assert send_ahead(pacs.config(FetchMethod.C_GET, spool_dir=spool_dir), series[0]) is None
