"""UIDs from the network reach no path, URL or PACS query unless they are DICOM UIDs (PS3.5 §9.1).

Each protocol refuses with its own error: RAD-69 XDSDocumentUniqueIdError per document, RAD-55 HTTP 400,
C-STORE 0x0117.  The PACS here is a closed port (or a listening socket that must never be called): a
hostile UID that slipped through would show up as a PACS error or a connection, not as the refusal.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage

from imaging_source.dicom.ae import associate, make_ae
from imaging_source.dicom.config import DicomConfig, FetchMethod, Peer
from imaging_source.dicom.dimse_retrieve import claim_spooled, spool_name
from imaging_source.dicom.fetch import FetchStream
from imaging_source.dicom.find import find_study, locate_instance
from imaging_source.dicom.instances import FetchError, SeriesFetch
from imaging_source.dicom.scp import DicomListener, ReceivedInstance
from imaging_source.dicom.wado_rs import send_ahead
from xds_core.ebxml.messages import DocumentRequest, SeriesRequest, StudyRequest
from xds_core.errors import ErrorCode
from xds_core.vocabulary import ResponseStatus

from .test_retrieve_imaging_document_set import SOURCE_ID, _call, _request

GOOD = "1.2.3.4.5"
HOSTILE = ["../../etc/passwd", "1.2.3/../4", "1.2.3\\1.2.4", "1.2.*", "1.2.3?x=1", "1.2.3#x", "1.2.03",
           "1.2.\u0661", "1.2 3", "1." + "2" * 64]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def untouchable_pacs() -> Iterator[tuple[int, socket.socket]]:
    """A listening socket standing in for the PACS; the test checks that nobody connected."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)
        yield listener.getsockname()[1], listener


def _nobody_connected(listener: socket.socket) -> bool:
    try:
        conn, _ = listener.accept()
    except TimeoutError:
        return True
    conn.close()
    return False


#: Short enough that a regression (a request to the silent stand-in PACS) fails in seconds.
TIMEOUTS = {"connection": 2.0, "acse": 2.0, "dimse": 2.0, "network": 2.0}


def _config(port: int, spool: Path, method: FetchMethod = FetchMethod.WADO_RS, *, dicomweb: bool = True) -> DicomConfig:
    return DicomConfig("XDSI_IDS", Peer("ORTHANC", "127.0.0.1", port), spool_dir=spool, timeouts=TIMEOUTS,
                       dicomweb_url=f"http://127.0.0.1:{port}/dicom-web" if dicomweb else "", fetch_method=method)


# --- RAD-69 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", [FetchMethod.C_GET, FetchMethod.WADO_RS])
def test_rad69_refuses_each_document_whose_uids_are_not_uids_and_fetches_the_others(settings, closed_port,
                                                                                    method) -> None:
    settings.XDS_IMAGING_SOURCE_ID = SOURCE_ID
    settings.DICOM_PACS = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": closed_port}
    settings.DICOMWEB_URL = f"http://127.0.0.1:{closed_port}/dicom-web" if method == FetchMethod.WADO_RS else ""
    settings.DICOM_FETCH_METHOD = method.value
    studies = [StudyRequest(GOOD, [SeriesRequest(GOOD + ".1", [DocumentRequest(SOURCE_ID, uid) for uid in HOSTILE]
                                                 + [DocumentRequest(SOURCE_ID, GOOD + ".1.1")])]),
               StudyRequest("1.2.3/../..", [SeriesRequest(GOOD + ".2", [DocumentRequest(SOURCE_ID, GOOD + ".2.1")])]),
               StudyRequest(GOOD, [SeriesRequest("1.2.*", [DocumentRequest(SOURCE_ID, GOOD + ".3.1")])])]
    answer = _call(_request(studies, [ExplicitVRLittleEndian]))
    errors = {e.location: e for e in answer.errors}
    assert answer.status == ResponseStatus.FAILURE.value and answer.documents == {}
    for uid in [*HOSTILE, GOOD + ".2.1", GOOD + ".3.1"]:
        assert errors[uid].error_code == ErrorCode.XDSDocumentUniqueIdError, uid
        assert "is not a DICOM UID" in errors[uid].code_context
    # The one good document was asked for, and the PACS could not be reached.
    assert errors[GOOD + ".1.1"].error_code == ErrorCode.XDSRepositoryError


# --- RAD-55 ------------------------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("field", ["studyUID", "seriesUID", "objectUID"])
def test_wado_uri_answers_400_for_a_uid_that_is_not_a_uid(settings, closed_port, field) -> None:
    settings.DICOM_PACS = {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": closed_port}
    settings.DICOMWEB_URL = f"http://127.0.0.1:{closed_port}/dicom-web"
    settings.DICOM_FETCH_METHOD = FetchMethod.WADO_RS.value
    uids = {"studyUID": GOOD, "seriesUID": GOOD + ".1", "objectUID": GOOD + ".1.1"}
    params = {"requestType": "WADO", "contentType": "application/dicom"}
    asked = Client().get("/xds/imaging-source/wado", {**params, **uids})  # asks the (closed) PACS
    assert asked.status_code == 404 and b"no instance" in asked.content
    for hostile in HOSTILE:
        response = Client().get("/xds/imaging-source/wado", {**params, **uids, field: hostile})
        assert response.status_code == 400, hostile  # malformed request (PS3.18 8.5.3), issue 15
        assert b"is not a DICOM UID" in response.content


# --- the fetch and find layers (the last line) ------------------------------------------------------

@pytest.mark.parametrize("uid", HOSTILE)
def test_a_spool_file_name_is_made_only_from_a_uid(uid: str) -> None:
    with pytest.raises(ValueError, match="not a DICOM UID"):
        spool_name(uid)
    assert spool_name(GOOD).startswith(GOOD + ".")


def test_claiming_a_spooled_copy_looks_only_in_the_spool_and_only_for_a_uid(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / f"{GOOD}.abc.dcm").write_bytes(b"in")
    (tmp_path / f"{GOOD}.abc.dcm").write_bytes(b"outside")
    for pattern in ("../" + GOOD, "*", "1.2.3.4.?", "[1].2.3.4.5"):
        assert claim_spooled(spool, pattern) is None, pattern
    assert (tmp_path / f"{GOOD}.abc.dcm").read_bytes() == b"outside"
    claimed = claim_spooled(spool, GOOD)
    assert claimed is not None and claimed.parent == spool and claimed.read_bytes() == b"in"


@pytest.mark.parametrize("method", [FetchMethod.WADO_RS, FetchMethod.C_GET, FetchMethod.C_MOVE])
def test_a_fetch_with_a_non_uid_fails_before_it_reaches_the_pacs(tmp_path, untouchable_pacs, method,
                                                                monkeypatch) -> None:
    port, listener = untouchable_pacs
    config = _config(port, tmp_path, method)
    for series in (SeriesFetch("1.2/../..", GOOD, [GOOD + ".1"]), SeriesFetch(GOOD, "1.2.*", [GOOD + ".1"]),
                   SeriesFetch(GOOD, GOOD + ".1", ["1.2.3\\1.2.4"])):
        assert send_ahead(config, series) is None
        with pytest.raises(FetchError, match="not a DICOM UID"):
            list(FetchStream(config, [series]))
    assert _nobody_connected(listener)


def test_find_and_locate_do_not_query_the_pacs_with_a_non_uid(tmp_path, untouchable_pacs) -> None:
    port, listener = untouchable_pacs
    for dicomweb in (True, False):  # QIDO-RS, C-FIND
        config = _config(port, tmp_path, dicomweb=dicomweb)
        for uid in ("*", "1.2.3/../..", "1.2.3?includefield=all"):
            assert find_study(uid, config) is None
            assert locate_instance(uid, config) is None
    assert _nobody_connected(listener)


# --- C-STORE SCP ---------------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_c_store_of_an_instance_whose_uid_is_not_a_uid_is_refused_with_0117(tmp_path) -> None:
    received: list[ReceivedInstance] = []
    config = DicomConfig("XDSI_IDS", Peer("ORTHANC", "127.0.0.1", 1), spool_dir=tmp_path / "spool")
    server = DicomListener(config, on_instance=received.append, host="127.0.0.1", port=0)
    host, port = server.start()
    try:
        ae = make_ae("MODALITY")
        ae.add_requested_context(CTImageStorage)
        assoc = associate(ae, Peer("XDSI_IDS", host, port))
        ds = dcmread(get_testdata_file("CT_small.dcm"))
        statuses = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the invalid UI values it is asked to send
            for uid in ("../../evil", "1.2.03"):
                ds.SOPInstanceUID = uid
                # incoming (recorded) and C-MOVE'd to us (spooled: Move Originator = our AE title)
                statuses.append(assoc.send_c_store(ds).Status)
                statuses.append(assoc.send_c_store(ds, originator_aet="XDSI_IDS", originator_id=1).Status)
            ds.SOPInstanceUID = GOOD
            ds.StudyInstanceUID = "1.2.3/../.."
            statuses.append(assoc.send_c_store(ds).Status)  # a study UID that would go into C-FIND / QIDO-RS
        assoc.release()
    finally:
        server.stop()
    assert statuses == [0x0117, 0x0117, 0x0117, 0x0117, 0xA900]
    assert received == []
    assert list((tmp_path / "spool").iterdir()) == []
    assert not (tmp_path.parent / "evil").exists()
