"""The MPPS steps' store: one row per SOP Instance UID, edits in one transaction, UIDs checked first."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from imaging_source.dicom.status import DuplicateInstance, InvalidInstance, NoSuchInstance
from imaging_source.models import PerformedProcedureStep
from imaging_source.mpps import MppsStore

pytestmark = pytest.mark.django_db


def _step(status: str = "IN PROGRESS") -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PatientName = "DOE^JANE"
    return ds


def test_a_step_is_stored_once_and_read_back() -> None:
    store = MppsStore()
    store.create("1.2.840.99.1", _step())
    with pytest.raises(DuplicateInstance):
        store.create("1.2.840.99.1", _step())
    assert store.get("1.2.840.99.1").PatientName == "DOE^JANE"
    assert store.get("1.2.840.99.2") is None
    assert PerformedProcedureStep.objects.get().status == "IN PROGRESS"


def test_an_edit_is_saved_when_its_block_ends_and_undone_when_it_raises() -> None:
    store = MppsStore()
    store.create("1.2.840.99.1", _step())
    with pytest.raises(RuntimeError), store.editing("1.2.840.99.1") as ds:
        ds.PerformedProcedureStepStatus = "COMPLETED"
        raise RuntimeError("refused half-way")
    assert PerformedProcedureStep.objects.get().status == "IN PROGRESS"
    with store.editing("1.2.840.99.1") as ds:
        ds.PerformedProcedureStepStatus = "COMPLETED"
    assert PerformedProcedureStep.objects.get().status == "COMPLETED"
    assert store.get("1.2.840.99.1").PerformedProcedureStepStatus == "COMPLETED"
    with pytest.raises(NoSuchInstance), store.editing("1.2.840.99.3"):
        pass


@pytest.mark.parametrize("uid", ["../../etc/passwd", "/tmp/x", ".hidden", "1.2.3/../4", "", "1.02.3", "1" * 65])
def test_a_sop_instance_uid_that_is_not_a_uid_is_refused_before_anything_is_stored(uid, tmp_path,
                                                                                    monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may appear here (the steps used to be files named by UID)
    store = MppsStore()
    with pytest.raises(InvalidInstance):
        store.create(uid, _step())
    with pytest.raises(InvalidInstance):
        store.get(uid)
    with pytest.raises(InvalidInstance), store.editing(uid):
        pass
    assert not PerformedProcedureStep.objects.exists()
    assert list(tmp_path.iterdir()) == []
