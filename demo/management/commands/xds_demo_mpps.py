"""``manage.py xds_demo_mpps --patient ID [--issuer OID] --modality MR --to AET@host:port``: play a modality.

Sends what a modality sends when an examination starts: an MPPS N-CREATE, status IN PROGRESS (PS3.4
F.7.2, RAD-6), for a local patient, to a site's DICOM listener.  With ``XDS_PREFETCH`` on, the site then
imports the patient's relevant priors held by other sites (predictive prefetch).  ``--complete`` also
sends the N-SET COMPLETED (RAD-7).  The DICOM status of each message is printed; exit 1 on a failure.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from atna.tls import node_client_context


def ae_title(value: str) -> str:
    """PS3.5 Table 6.2-1 AE: 1-16 characters, no backslash."""
    value = value.strip()
    if not value or len(value) > 16 or "\\" in value:
        raise CommandError(f"AE title {value!r}: 1-16 characters without backslash")
    return value


def _peer(value: str) -> tuple[str, str, int]:
    title, _, address = value.partition("@")
    host, _, port = address.rpartition(":")
    if not (title and host and port.isdigit() and 0 < int(port) < 65536):
        raise CommandError(f"--to {value!r}: expected AET@host:port")
    return ae_title(title), host, int(port)


def in_progress(patient_id: str, issuer: str, modality: str, *, study_uid: str, name: str = "") -> Dataset:
    """The N-CREATE attributes of PS3.4 Table F.7.2-1 a modality fills at the start of an examination."""
    ds = Dataset()
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.AccessionNumber = ""
    item.RequestedProcedureID = ""
    item.ScheduledProcedureStepID = ""
    item.ScheduledProcedureStepDescription = ""
    item.ReferencedStudySequence = []
    ds.ScheduledStepAttributesSequence = [item]
    ds.PatientName = name
    ds.PatientID = patient_id
    if issuer:
        ds.IssuerOfPatientID = issuer
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PerformedProcedureStepID = generate_uid()[-16:]
    ds.PerformedStationAETitle = "DEMO_MODALITY"
    ds.PerformedProcedureStepStartDate = ""
    ds.PerformedProcedureStepStartTime = ""
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = modality
    ds.ProcedureCodeSequence = []
    ds.PerformedSeriesSequence = []
    return ds


class Command(BaseCommand):
    help = "Send an MPPS IN PROGRESS (as a modality would) for a local patient to a site's DICOM listener."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--patient", required=True, help="the site's local DICOM Patient ID")
        parser.add_argument("--issuer", default="", help="Issuer of Patient ID")
        parser.add_argument("--modality", required=True, help="e.g. MR, CT")
        parser.add_argument("--to", required=True, metavar="AET@HOST:PORT", help="the site's DICOM listener")
        parser.add_argument("--calling-ae", default="DEMO_MODALITY")
        parser.add_argument("--complete", action="store_true", help="also send N-SET COMPLETED")

    def handle(self, *args: Any, **options: Any) -> None:
        called, host, port = _peer(options["to"])
        ae = AE(ae_title(options["calling_ae"]))
        ae.add_requested_context(ModalityPerformedProcedureStep)
        # Under XDS_TLS the listener admits only TLS with a certificate of its identity table: the site's own.
        context = node_client_context()
        assoc = ae.associate(host, port, ae_title=called, tls_args=(context, None) if context else None)
        if not assoc.is_established:
            raise CommandError(f"no association with {options['to']}")
        uid, study = generate_uid(), generate_uid()
        try:
            status, _ = assoc.send_n_create(
                in_progress(options["patient"], options["issuer"], options["modality"], study_uid=study),
                ModalityPerformedProcedureStep, uid)
            code = getattr(status, "Status", None)
            self.stdout.write(f"N-CREATE IN PROGRESS mpps={uid} status=0x{code:04X}" if code is not None
                              else "N-CREATE: no answer")
            if code != 0:
                raise CommandError("the listener refused the MPPS")
            if options["complete"]:
                done = Dataset()
                done.PerformedProcedureStepStatus = "COMPLETED"
                status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
                code = getattr(status, "Status", None)
                self.stdout.write(f"N-SET COMPLETED status=0x{code:04X}" if code is not None else "N-SET: no answer")
                if code != 0:
                    raise CommandError("the listener refused the N-SET")
        finally:
            assoc.release()
