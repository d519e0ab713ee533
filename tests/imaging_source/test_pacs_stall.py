"""A PACS that stops answering during RAD-69 / RAD-55 costs one time-to-first-byte deadline, not the server (issue 15).

A private Orthanc (tests/faults/orthanc.py) holds a few instances of the NIST study; a real gunicorn serves the
Imaging Document Source (and the registry, the "other actor") with XDS_PACS_FIRST_BYTE_TIMEOUT=3.  Per fetch
method (WADO-RS, C-GET, C-MOVE to a real ``xds_dicom_listener``): a RAD-69 first succeeds; then the Orthanc is
SIGSTOPped (its kernel still accepts connections, nothing answers) and three RAD-69 requests at once must each
fail within the deadline + a margin with the unreachable-PACS error (XDSRepositoryError for every instance, location =
its SOP Instance UID: RAD TF-3 4.69.4.2.3, ITI TF-3 Table 4.2.4.1-2), while ITI-18 queries to the registry on the
same server keep answering; a RAD-55 gets 504.  The spool holds nothing afterwards.  After SIGCONT a RAD-69
succeeds again.  The figure ``pacs-stall`` gives the deadline, the slowest failure and the other actor's p99.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import ExplicitVRLittleEndian

from tests.conftest import CORPUS_DIR
from tests.faults.figures import report
from tests.faults.floods import dicom_listener
from tests.faults.orthanc import PrivateOrthanc, private_orthanc
from tests.gunicorn_server import Server, run_gunicorn
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.messages import DocumentRequest, RetrieveImagingDocumentSetRequest, SeriesRequest, StudyRequest
from xds_core.ebxml.parse import parse_adhoc_query_response, parse_retrieve_document_set_response
from xds_core.errors import ErrorCode
from xds_core.soap.client import SoapClient
from xds_core.vocabulary import Action, ResponseStatus, ReturnType, StoredQuery
from xds_registry.management.commands.xds_bench_registry import percentile

pytestmark = [pytest.mark.slow, pytest.mark.fault]

IMAGES = CORPUS_DIR / "nist" / "_imagecache" / "std" / "IDS-DEPT002-a" / "images"
SOURCE_ID = "1.3.6.1.4.1.21367.13.80.110"
XDSI_AET = "XDSI_STALL"
FIRST_BYTE = 3  # s: XDS_PACS_FIRST_BYTE_TIMEOUT of the server under test
IDLE = 5        # s: XDS_PACS_IDLE_TIMEOUT
#: Allowed beyond the deadline (a loaded 2-core box: worker scheduling, Python's own work, the answer).
MARGIN = 4.0
CONCURRENT = 3
OTHER_ACTOR_P99_MS = 1000.0
WADO_URL = "{}/xds/imaging-source/wado"  # RAD-55 WADO-URI
PATIENT_ID = "STALL-NOBODY^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"


@pytest.fixture(scope="module")
def instances() -> list[Path]:
    files = sorted(IMAGES.glob("*.dcm"))[:4]
    assert len(files) == 4, f"NIST images missing under {IMAGES}"
    return files


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory, instances: list[Path]) -> Iterator[PrivateOrthanc]:
    with private_orthanc(tmp_path_factory.mktemp("stall-pacs"), xdsi_aet=XDSI_AET) as orthanc:
        orthanc.load(*instances)
        yield orthanc


@pytest.fixture(scope="module")
def study(instances: list[Path]) -> RetrieveImagingDocumentSetRequest:
    series: dict[tuple[str, str], list[str]] = {}
    for path in instances:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        series.setdefault((ds.StudyInstanceUID, ds.SeriesInstanceUID), []).append(ds.SOPInstanceUID)
    (study_uid,) = {study_uid for study_uid, _ in series}
    return RetrieveImagingDocumentSetRequest([StudyRequest(study_uid, [
        SeriesRequest(series_uid, [DocumentRequest(SOURCE_ID, sop) for sop in sops])
        for (_study, series_uid), sops in series.items()])], [ExplicitVRLittleEndian])


def _sop_uids(request: RetrieveImagingDocumentSetRequest) -> set[str]:
    return {doc.document_unique_id for _study, _series, doc in request.document_requests()}


def _rad69(server: Server, request: RetrieveImagingDocumentSetRequest) -> tuple[float, str, list, list]:
    """One RAD-69 over HTTP -> (seconds, status, errors, documents)."""
    client = SoapClient(server.endpoint("imaging-source"), timeout=120)
    started = time.monotonic()
    result = client.call(Action.RetrieveImagingDocumentSet.value,
                         ebxml_serialize.retrieve_imaging_document_set_request(request))
    try:
        assert result.fault is None and result.http_status == 200, (result.http_status, result.fault)
        status, errors, documents = parse_retrieve_document_set_response(result.body)
        for document in documents:  # the parts are read: the answer is complete
            result.binary(document.element).read_bytes()
    finally:
        result.close()
    return time.monotonic() - started, status, errors, documents


def _iti18(server: Server) -> float:
    """The other actor: an ITI-18 FindDocuments on the same server -> seconds."""
    query = ebxml_serialize.adhoc_query_request(StoredQuery.FindDocuments, [
        ("$XDSDocumentEntryPatientId", [f"'{PATIENT_ID}'"]),
        ("$XDSDocumentEntryStatus", ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"])],
        return_type=ReturnType.LeafClass)
    started = time.monotonic()
    result = SoapClient(server.endpoint("registry"), timeout=30).call(Action.RegistryStoredQuery, query)
    elapsed = time.monotonic() - started
    assert result.fault is None, result.fault
    assert parse_adhoc_query_response(result.body).status == ResponseStatus.SUCCESS
    return elapsed


def _spooled_files(spool: Path) -> list[Path]:
    return [p for p in spool.rglob("*") if p.is_file()]


@pytest.mark.parametrize("method", ["wado-rs", "c-get", "c-move"])
def test_a_stalled_pacs_fails_each_rad69_within_the_first_byte_deadline_and_other_actors_answer(
        pacs: PrivateOrthanc, study: RetrieveImagingDocumentSetRequest, tmp_path: Path, method: str) -> None:
    spool = tmp_path / "spool"
    env = {
        "XDS_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'xds.sqlite3'}",
        "XDS_IMAGING_SOURCE_ID": SOURCE_ID,
        "DICOM_AE_TITLE": XDSI_AET,
        "DICOM_PACS": pacs.dicom_pacs_setting,
        "DICOMWEB_URL": pacs.dicomweb_url if method == "wado-rs" else "",
        "DICOM_FETCH_METHOD": method,
        "DICOM_SPOOL_DIR": str(spool),
        "XDS_RAD69_ROOT_LAST": "true",
        "XDS_PACS_FIRST_BYTE_TIMEOUT": str(FIRST_BYTE),
        "XDS_PACS_IDLE_TIMEOUT": str(IDLE),
    }
    wanted = _sop_uids(study)
    with ExitStack() as stack:
        # Room for the stalled requests and the other actor whatever the worker model: one sync worker more
        # than stalled requests, or - a threaded worker queues what it accepted for its own threads, so all
        # the stalled requests may be on one worker - as many threads per worker.
        server = stack.enter_context(run_gunicorn(env, spool=tmp_path, migrate=True, workers=CONCURRENT + 1,
                                                  threads=CONCURRENT + 1))
        if method == "c-move":  # the C-MOVE destination: our real listener, spooling for the web workers
            listener = stack.enter_context(dicom_listener({**env, "DICOM_WORKLIST": ""}, ae_title=XDSI_AET))
            pacs.register("xdsi", XDSI_AET, "127.0.0.1", listener.peer.port)

        _seconds, status, errors, documents = _rad69(server, study)
        assert (status, errors, {d.document_unique_id for d in documents}) == (ResponseStatus.SUCCESS, [], wanted)
        _iti18(server)  # warm: the registry's first query loads code

        outcomes: list[tuple[float, str, list, list]] = []
        failures: list[BaseException] = []
        probes: list[float] = []

        def stalled_request() -> None:
            try:
                outcomes.append(_rad69(server, study))
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                failures.append(exc)

        pacs.stall()
        try:
            threads = [threading.Thread(target=stalled_request) for _ in range(CONCURRENT)]
            for thread in threads:
                thread.start()
            time.sleep(0.3)  # the RAD-69 requests are in the workers, waiting on the PACS
            while any(thread.is_alive() for thread in threads) or len(probes) < 10:
                probes.append(_iti18(server))
                time.sleep(0.05)
            for thread in threads:
                thread.join()
            study_uid, series_uid, first = study.document_requests()[0]
            wado_started = time.monotonic()
            wado = requests.get(WADO_URL.format(server.url), timeout=60, params={
                "requestType": "WADO", "contentType": "application/dicom", "studyUID": study_uid,
                "seriesUID": series_uid, "objectUID": first.document_unique_id})
            wado_seconds = time.monotonic() - wado_started
        finally:
            pacs.resume()

        failed_after = max((seconds for seconds, *_ in outcomes), default=float("nan"))
        p99_ms = percentile(sorted(probes), 99) * 1000
        report("pacs-stall", method=method, deadline_s=FIRST_BYTE, failed_after_s=failed_after,
               concurrent=CONCURRENT, other_actor_p99_ms=p99_ms, other_actor_samples=len(probes),
               rad55_status=wado.status_code)
        assert not failures, failures
        for seconds, status, errors, documents in outcomes:
            assert seconds <= FIRST_BYTE + MARGIN, seconds
            assert status == ResponseStatus.FAILURE.value and documents == []
            assert {e.error_code for e in errors} == {ErrorCode.XDSRepositoryError}
            assert {e.location for e in errors} == wanted
            assert all("in time" in (e.code_context or "") for e in errors), errors
        assert p99_ms < OTHER_ACTOR_P99_MS, probes
        assert wado.status_code == 504 and wado_seconds <= FIRST_BYTE + MARGIN, (wado.status_code, wado_seconds)
        assert _spooled_files(spool) == []

        # The PACS answers again: so does RAD-69.
        _seconds, status, errors, documents = _rad69(server, study)
        assert (status, errors, {d.document_unique_id for d in documents}) == (ResponseStatus.SUCCESS, [], wanted)
        assert _spooled_files(spool) == []
