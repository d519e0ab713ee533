"""The demo affinity domain's patients and studies, and how a site gets its own into its PACS.

Hospital A holds the NIST XDS-I study IDS-DEPT002-a (conformance corpus, 36 MR instances) of affinity
patient ``IDS-AD002-a`` under its local id ``IDS-DEPT002-a``; Hospital B holds other studies of the same
patient under its own local id ``B-20417``; both hold studies of two more patients (one of them at both
sites, under each site's own id).  Studies other than
NIST's are made from the sample files bundled with pydicom (no download), with UIDs derived from fixed
seeds so that a warm start finds them already in the PACS and already published.
"""

from __future__ import annotations

import copy
import io
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from demo.sites import AFFINITY_AUTHORITY, HOSPITALS

BASE_DIR = Path(__file__).resolve().parent.parent
NIST_STUDY_DIR = BASE_DIR / "conformance" / "corpus" / "nist" / "_imagecache" / "std" / "IDS-DEPT002-a" / "images"
NIST_STUDY_UID = "1.3.6.1.4.1.21367.201599.1.201604020954059"


def affinity_cx(patient_id: str) -> str:
    return f"{patient_id}^^^&{AFFINITY_AUTHORITY}&ISO"


@dataclass(frozen=True)
class DemoPatient:
    affinity_id: str  # id in the affinity domain's authority
    family: str
    given: str
    birth_date: str
    sex: str


@dataclass(frozen=True)
class LocalRecord:
    """A hospital's own id of an affinity patient (and the Issuer of Patient ID its DICOM objects carry)."""

    site: str
    local_id: str
    issuer: str  # "" when its objects carry none (the NIST study)
    patient: DemoPatient

    def local_cx(self) -> str:
        authority = self.issuer or _hospital(self.site).patient_authority
        return f"{self.local_id}^^^&{authority}&ISO"


@dataclass(frozen=True)
class DemoStudy:
    site: str
    record: LocalRecord
    seed: str  # "" = the NIST study, read from the corpus
    sample: str = ""  # pydicom test file the instances are made from
    instances: int = 0
    modality: str = ""
    body_part: str = ""
    description: str = ""
    study_date: str = ""

    @property
    def study_instance_uid(self) -> str:
        return NIST_STUDY_UID if not self.seed else generate_uid(entropy_srcs=["xdsi-demo", self.seed, "study"])


def _hospital(site: str):  # type: ignore[no-untyped-def]
    return next(h for h in HOSPITALS if h.key == site)


NIST_PATIENT = DemoPatient("IDS-AD002-a", "Multi", "Mr", "19780202", "M")
PATIENT_2 = DemoPatient("DEMO-1002", "Demo", "Alice", "19751122", "F")
PATIENT_3 = DemoPatient("DEMO-1003", "Demo", "Bob", "19820314", "M")
PATIENTS = (NIST_PATIENT, PATIENT_2, PATIENT_3)

A_NIST = LocalRecord("hospital-a", "IDS-DEPT002-a", "", NIST_PATIENT)
B_NIST = LocalRecord("hospital-b", "B-20417", "1.3.6.1.4.1.21367.13.82.1", NIST_PATIENT)
A_2 = LocalRecord("hospital-a", "A-1002", "1.3.6.1.4.1.21367.13.81.1", PATIENT_2)
B_3 = LocalRecord("hospital-b", "B-1003", "1.3.6.1.4.1.21367.13.82.1", PATIENT_3)
A_3 = LocalRecord("hospital-a", "A-3071", "1.3.6.1.4.1.21367.13.81.1", PATIENT_3)
RECORDS = (A_NIST, B_NIST, A_2, B_3, A_3)

STUDIES = (
    DemoStudy("hospital-a", A_NIST, ""),
    DemoStudy("hospital-a", A_2, "a-2-ct", "CT_small.dcm", 3, "CT", "CHEST", "CT chest", "20230611"),
    DemoStudy("hospital-b", B_NIST, "b-nist-ct", "CT_small.dcm", 4, "CT", "ABDOMEN", "CT abdomen", "20220905"),
    DemoStudy("hospital-b", B_NIST, "b-nist-mr", "MR_small.dcm", 3, "MR", "KNEE", "MR knee", "20240118"),
    DemoStudy("hospital-b", B_3, "b-3-mr", "MR_small.dcm", 2, "MR", "BRAIN", "MR brain", "20250402"),
    # A prior of Hospital B's patient B-1003 held by Hospital A: what a CT scheduled at B prefetches.
    DemoStudy("hospital-a", A_3, "a-3-ct", "CT_small.dcm", 3, "CT", "CHEST", "CT chest", "20240710"),
)
#: The demo's scheduled-procedure example: a CT for B-1003 at Hospital B, whose prior is at Hospital A.
SCHEDULED_EXAMPLE = (B_3, "CT")


def studies_of(site: str) -> list[DemoStudy]:
    return [s for s in STUDIES if s.site == site]


def records_of(site: str) -> list[LocalRecord]:
    return [r for r in RECORDS if r.site == site]


def instances(study: DemoStudy) -> Iterator[bytes]:
    """The study's instances as Part-10 bytes."""
    if not study.seed:
        for path in sorted(NIST_STUDY_DIR.iterdir()):
            yield path.read_bytes()
        return
    template = dcmread(get_testdata_file(study.sample))
    series_uid = generate_uid(entropy_srcs=["xdsi-demo", study.seed, "series"])
    patient = study.record.patient
    for number in range(1, study.instances + 1):
        ds: Dataset = copy.deepcopy(template)
        ds.PatientID = study.record.local_id
        if study.record.issuer:
            ds.IssuerOfPatientID = study.record.issuer
        ds.PatientName = f"{patient.family}^{patient.given}"
        ds.PatientBirthDate = patient.birth_date
        ds.PatientSex = patient.sex
        ds.StudyInstanceUID = study.study_instance_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["xdsi-demo", study.seed, "instance", str(number)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.study_date
        ds.StudyTime = "093000"
        ds.Modality = study.modality
        ds.BodyPartExamined = study.body_part
        ds.StudyDescription = study.description
        ds.SeriesNumber = 1
        ds.InstanceNumber = number
        ds.AccessionNumber = f"{study.record.site[-1].upper()}{zlib.crc32(study.seed.encode()) % 10**6:06d}"
        ds.StudyID = "1"
        ds.InstitutionName = _hospital(study.site).title
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        yield buffer.getvalue()


def stow_body(parts: list[bytes]) -> tuple[bytes, str]:
    """A STOW-RS request body (PS3.18 10.5: multipart/related; type="application/dicom")."""
    boundary = uuid.uuid4().hex
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
                    for part in parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'
