"""Modality Performed Procedure Steps kept in the database (:class:`~imaging_source.models.PerformedProcedureStep`).

The MPPS SCP (:class:`imaging_source.dicom.scp.DicomListener`) applies PS3.4 Annex F.7's rules; this
store keeps the steps' attributes (DICOM JSON model, PS3.18 Annex F) and gives the SCP one transaction
per N-CREATE / N-SET, with the step's row locked while an N-SET edits it.  A UID that is not a DICOM
UID (PS3.5 9.1: digits and dots, at most 64 characters) is refused before any query.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import IntegrityError, connection, transaction
from pydicom.dataset import Dataset

from imaging_source.dicom.status import DuplicateInstance, InvalidInstance, NoSuchInstance
from imaging_source.models import PerformedProcedureStep
from xds_core.identifiers import is_dicom_uid


def _checked(uid: str) -> str:
    if not isinstance(uid, str) or not is_dicom_uid(uid):
        raise InvalidInstance(f"SOP Instance UID {uid!r} is not a DICOM UID")
    return uid


def _status(ds: Dataset) -> str:
    return str(ds.get("PerformedProcedureStepStatus", "") or "").strip()


class MppsStore:
    """The MPPS SOP instances of our SCP, one row per SOP Instance UID."""

    def create(self, uid: str, ds: Dataset) -> None:
        """Store a new step; :class:`DuplicateInstance` if ``uid`` exists (also against a concurrent N-CREATE)."""
        try:
            with transaction.atomic():
                PerformedProcedureStep.objects.create(sop_instance_uid=_checked(uid), status=_status(ds),
                                                      attributes=ds.to_json_dict())
        except IntegrityError:
            raise DuplicateInstance(f"MPPS {uid} already exists") from None

    def get(self, uid: str) -> Dataset | None:
        row = PerformedProcedureStep.objects.filter(sop_instance_uid=_checked(uid)).first()
        return None if row is None else Dataset.from_json(row.attributes)

    @contextmanager
    def editing(self, uid: str) -> Iterator[Dataset]:
        """Yield the step's attributes to change in place; they are saved when the block ends normally.

        One transaction with the row locked: an exception in the block (a refused N-SET) leaves the step
        and anything else written in the block (e.g. queued jobs) as they were.  :class:`NoSuchInstance`
        if there is no such step.
        """
        with transaction.atomic():
            row = PerformedProcedureStep.objects.select_for_update().filter(sop_instance_uid=_checked(uid)).first()
            if row is None:
                raise NoSuchInstance(f"no MPPS {uid}")
            ds = Dataset.from_json(row.attributes)
            yield ds
            row.attributes, row.status = ds.to_json_dict(), _status(ds)
            row.save(update_fields=["attributes", "status", "updated_at"])

    @staticmethod
    def release() -> None:
        """Close this thread's database connection: the SCP calls it at the end of an MPPS request, whose
        association thread (pynetdicom) would otherwise keep a connection until it is garbage collected."""
        connection.close()
