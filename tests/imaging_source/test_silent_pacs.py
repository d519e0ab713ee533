"""A PACS that accepts connections and never answers costs RAD-69 / RAD-55 one first-byte deadline (issue 15).

The silent PACS is a real loopback TCP listener that takes every connection and every request byte and sends
nothing (what a hung or SIGSTOPped PACS looks like from here; tests/imaging_source/test_pacs_stall.py does it
with a real Orthanc under gunicorn).  Deadlines of 1 s keep these tests quick.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging_source.dicom.config import DicomConfig, FetchMethod, Peer
from imaging_source.dicom.fetch import FetchStream
from imaging_source.dicom.instances import PacsDeadlines, PacsTimeout, SeriesFetch
from imaging_source.dicom.wado_rs import send_ahead
from imaging_source.retrieve_imaging_document_set import ImagingSourceConfig, retrieve_imaging_document_set
from imaging_source.wado import wado_retrieve
from xds_core.ebxml.messages import DocumentRequest, RetrieveImagingDocumentSetRequest, SeriesRequest, StudyRequest
from xds_core.errors import ErrorCode

STUDY, SERIES = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.1.1"
SOPS = [f"{SERIES}.{n}" for n in range(1, 4)]
SOURCE_ID = "1.3.6.1.4.1.21367.13.80.110"
DEADLINES = PacsDeadlines(first_byte=1.0, idle=1.0)
#: Allowed beyond the deadline on a loaded machine.
MARGIN = 1.5


class SilentPacs:
    """Accepts, reads and discards whatever comes, answers nothing; closes everything on :meth:`close`."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._swallow, args=(conn,), daemon=True).start()

    @staticmethod
    def _swallow(conn: socket.socket) -> None:
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentPacs]:
    pacs = SilentPacs()
    yield pacs
    pacs.close()


def _config(silent: SilentPacs, method: FetchMethod, spool: Path) -> DicomConfig:
    return DicomConfig("XDSI_T", Peer("SILENT", "127.0.0.1", silent.port),
                       f"http://127.0.0.1:{silent.port}/dicom-web" if method == FetchMethod.WADO_RS else "",
                       method, spool_dir=spool)


@pytest.mark.parametrize("method", [FetchMethod.WADO_RS, FetchMethod.C_GET, FetchMethod.C_MOVE])
def test_a_fetch_from_a_silent_pacs_fails_after_the_first_byte_deadline(silent, tmp_path, method) -> None:
    started = time.monotonic()
    with pytest.raises(PacsTimeout):
        list(FetchStream(_config(silent, method, tmp_path), [SeriesFetch(STUDY, SERIES, SOPS)], deadlines=DEADLINES))
    elapsed = time.monotonic() - started
    assert DEADLINES.first_byte * 0.9 <= elapsed <= DEADLINES.first_byte + MARGIN, elapsed
    assert silent.connections, "the fetch never reached the silent PACS"


def test_the_first_byte_deadline_of_a_request_sent_ahead_counts_from_its_send(silent, tmp_path) -> None:
    config = _config(silent, FetchMethod.WADO_RS, tmp_path)
    item = SeriesFetch(STUDY, SERIES, SOPS)
    sent = time.monotonic()
    ahead = send_ahead(config, item, deadlines=DEADLINES)
    assert ahead is not None
    time.sleep(0.6)  # the request's own work before it reads the answer
    with pytest.raises(PacsTimeout):
        list(FetchStream(config, [item], ahead=ahead, deadlines=DEADLINES))
    elapsed = time.monotonic() - sent
    assert elapsed <= DEADLINES.first_byte + 0.5, elapsed  # not 0.6 s + a whole deadline


@pytest.mark.parametrize("method", [FetchMethod.WADO_RS, FetchMethod.C_GET])
def test_rad69_from_a_silent_pacs_answers_xds_repository_error_for_each_instance_in_time(
        silent, tmp_path, method) -> None:
    config = ImagingSourceConfig(SOURCE_ID, _config(silent, method, tmp_path), DEADLINES)
    request = RetrieveImagingDocumentSetRequest([StudyRequest(STUDY, [SeriesRequest(SERIES, [
        DocumentRequest(SOURCE_ID, sop) for sop in SOPS])])], ["1.2.840.10008.1.2.1"])
    started = time.monotonic()
    outcome = retrieve_imaging_document_set(request, config)
    elapsed = time.monotonic() - started
    assert outcome.documents == []
    # RAD TF-3 4.69.4.2.3 / ITI TF-3 Table 4.2.4.1-2: the source could not produce them - not "unknown".
    assert [(e.error_code, e.location) for e in outcome.errors] == [(ErrorCode.XDSRepositoryError, sop) for sop in SOPS]
    assert all("did not answer in time" in e.code_context for e in outcome.errors), outcome.errors
    assert elapsed <= DEADLINES.first_byte + MARGIN, elapsed  # one deadline, no per-instance locating


@pytest.mark.parametrize("method", [FetchMethod.WADO_RS, FetchMethod.C_GET])
def test_rad55_from_a_silent_pacs_answers_504_in_time(silent, tmp_path, method) -> None:
    started = time.monotonic()
    answer = wado_retrieve({"requestType": "WADO", "contentType": "application/dicom", "studyUID": STUDY,
                            "seriesUID": SERIES, "objectUID": SOPS[0]}, _config(silent, method, tmp_path), DEADLINES)
    assert answer.status == 504, answer
    assert time.monotonic() - started <= DEADLINES.first_byte + MARGIN


def test_pacs_deadlines_must_be_positive() -> None:
    for first_byte, idle in ((0, 1), (1, 0), (-1, 5)):
        with pytest.raises(ValueError):
            PacsDeadlines(first_byte, idle)
