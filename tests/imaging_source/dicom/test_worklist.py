"""Modality Worklist C-FIND against a real worklist SCP (Orthanc's ModalityWorklists plugin, serving the
import PACS's worklist folder), and the poller that announces each new scheduled step once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset

from demo.worklist import worklist_item, write_worklist_item
from imaging_source.dicom.config import Peer
from imaging_source.dicom.worklist import WorklistError, query_worklist, worklist_query
from imaging_source.procedures import WorklistPoller, procedure_event_codes, worklist_item_key
from tests.consumer.import_pacs import ImportPacs

pytestmark = pytest.mark.pacs


@pytest.fixture
def worklist(import_pacs: ImportPacs) -> Iterator[ImportPacs]:
    assert import_pacs.worklists is not None
    for old in import_pacs.worklists.glob("*.wl"):
        old.unlink()
    yield import_pacs
    for old in import_pacs.worklists.glob("*.wl"):
        old.unlink()


def peer(pacs: ImportPacs) -> Peer:
    return Peer(pacs.ae_title, "127.0.0.1", pacs.dicom_port)


def test_the_scheduled_steps_of_the_day_come_back_with_patient_issuer_and_modality(worklist: ImportPacs) -> None:
    today = dt.datetime.now()
    write_worklist_item(worklist.worklists, worklist_item("B-20417", "1.2.826.0.1.3680043.10.1042", "Multi^Mr",
                                                          "MR", when=today))
    write_worklist_item(worklist.worklists, worklist_item("B-1003", "", "Demo^Bob", "CT",
                                                          when=today + dt.timedelta(days=10)))
    items = query_worklist(worklist.calling_ae_title, peer(worklist), worklist_query(f"{today:%Y%m%d}"))
    (item,) = items
    assert (item.PatientID, item.IssuerOfPatientID) == ("B-20417", "1.2.826.0.1.3680043.10.1042")
    assert item.ScheduledProcedureStepSequence[0].Modality == "MR"
    assert procedure_event_codes(item) == ["MR^^DCM"]
    assert worklist_item_key(item) == item.StudyInstanceUID


def test_an_unknown_calling_ae_is_a_worklist_error(worklist: ImportPacs) -> None:
    with pytest.raises(WorklistError, match="rejected|aborted|failed|status"):
        query_worklist("NOT_ALLOWED", peer(worklist), worklist_query(f"{dt.date.today():%Y%m%d}"))


def test_nobody_listening_is_a_worklist_error() -> None:
    with pytest.raises(WorklistError):
        query_worklist("XDSI", Peer("NOBODY", "127.0.0.1", 9), worklist_query("20260101"),
                       timeouts={"connection": 2})


def test_the_poller_announces_each_new_step_once(worklist: ImportPacs) -> None:
    announced: list[tuple[str, str]] = []

    def announce(item: Dataset, key: str) -> None:
        announced.append((item.PatientID, key))
        if item.PatientID == "BROKEN":
            raise RuntimeError("the queue is down")

    poller = WorklistPoller(worklist.calling_ae_title, peer(worklist), announce, interval=60)
    first = write_worklist_item(worklist.worklists, worklist_item("B-20417", "", "A^B", "MR"))
    write_worklist_item(worklist.worklists, worklist_item("BROKEN", "", "C^D", "CT"))
    assert poller.poll_once() == 1  # the broken one is logged, the other announced
    assert poller.poll_once() == 0  # nothing new; the broken one is tried again
    write_worklist_item(worklist.worklists, worklist_item("B-1003", "", "E^F", "CT"))
    assert poller.poll_once() == 1
    assert sorted(p for p, _ in announced) == ["B-1003", "B-20417", "BROKEN", "BROKEN", "BROKEN"]
    assert [key for p, key in announced if p == "B-20417"] == [first.stem]  # keyed by its Study Instance UID
