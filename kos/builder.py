"""Build an XDS-I.b imaging manifest: a DICOM Key Object Selection (KOS) document.

What the manifest holds (IHE RAD TF-3 4.68.4.1.2.2, DICOM PS3.3 A.35.4):

* SOP Class Key Object Selection Document Storage (1.2.840.10008.5.1.4.1.1.88.59), Modality ``KO``,
  in its own Series, with Instance Number, Content Date/Time;
* the patient and study attributes of the referenced study (Patient, General Study modules);
* root content item CONTAINER, Concept Name (113030, DCM, "Manifest") from CID 7010, Content
  Template Sequence DCMR / TID 2010;
* one ``CONTAINS`` IMAGE (or WAVEFORM / COMPOSITE) item per referenced instance;
* Current Requested Procedure Evidence Sequence (0040,A375) listing **every** referenced instance
  study -> series -> SOP, and per Referenced Series item the Retrieve AE Title (0008,0054), the
  Retrieve Location UID (0040,E011) = the Imaging Document Source's repositoryUniqueId, and
  optionally a Retrieve URL (0008,1190) for WADO-RS;
* Referenced Request Sequence (0040,A370) with the Accession Number when one is known.

Why plain pydicom and not highdicom
-----------------------------------
``highdicom.ko.KeyObjectSelectionDocument`` needs a full pydicom Dataset per referenced instance
(we hold a plain :class:`StudyRef`-like description from C-FIND/QIDO, not the images) and builds
every content item through its SR object model (measured on this project's machine, highdicom 0.28.2):
0.5-0.7 s for 100 references, and (build only, no encoding) 1.1 s for 200 and 2.3 s for 2 000
references -- over the <= 1 s budget for 2 000 instances (issue 5). It also
fixes two choices that differ from the XDS-I reference manifest (NIST ``IDS-DEPT002-a/kos.dcm``):

* **ContinuityOfContent**: highdicom writes ``CONTINUOUS``. PS3.3 C.18.8.1.1 (Container Macro,
  "Continuity of Content") defines CONTINUOUS as contained items "logically linked in a continuous
  textual flow" (its example: TEXT "A mass of" / NUM diameter / TEXT "was detected.") and
  SEPARATE as "separate entities". The references of a manifest are separate entities, so
  ``SEPARATE``; the NIST reference manifest, dcm4chee-arc and the RSNA Image Share write the same.
* **Concept name on IMAGE items**: PS3.3 C.17.3.3 Table C.17-5 (Document Content Macro) requires the
  Concept Name Code Sequence on IMAGE / COMPOSITE / WAVEFORM items only "if the Purpose of
  Reference is conveyed in the Concept Name"; TID 2010 conveys none for its reference rows, and the
  generic (260753009, SCT, "Source") that highdicom adds is only the optional convenience the
  table's note allows. The reference manifest has no concept name there; we follow the template
  and the reference, which is also what the IMG-03 comparison of the content sequence expects.

(Sources found with the project's search tool: dicom.nema.org PS3.3 C.17.3.3 and the dabsoft.ch
mirror of PS3.3 C.18.8.)

The two bulky sequences (Current Requested Procedure Evidence and Content, one item per instance)
are encoded directly as Explicit VR Little Endian bytes and attached as raw elements; pydicom
writes them as they are and parses them only if someone reads them. Building one Dataset object
per reference and letting pydicom encode it cost ~0.3 s for 2 000 references (and over 1 s on a
loaded machine); the direct encoding takes a few milliseconds (measure: ``manage.py xds_bench_kos``).
The dataset is therefore marked as Explicit VR Little Endian (its original encoding): encode it
with :func:`to_part10`.

This module imports pydicom and xds_core's plain modules (identifier rules, vocabulary), never Django:
the study is any object with the attributes of
``imaging_source.study.StudyRef`` (structural typing via the Protocols below).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Protocol

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

from xds_core.identifiers import is_dicom_uid
from xds_core.vocabulary import KOS_SOP_CLASS_UID

#: Document title of an XDS-I.b manifest: (113030, DCM, "Manifest") from CID 7010.
MANIFEST_TITLE = ("113030", "DCM", "Manifest")
#: (113012, DCM, "Key Object Description") -- TID 2010 row 4 (optional TEXT).
KEY_OBJECT_DESCRIPTION = ("113012", "DCM", "Key Object Description")
TEMPLATE_MAPPING_RESOURCE = "DCMR"
TEMPLATE_ID = "2010"
IMPLEMENTATION_VERSION_NAME = "XDSI_IDS_1"

# Tags of the directly encoded elements (see _ui / _sq below).
_T_REF_SOP_CLASS = 0x00081150
_T_REF_SOP_INSTANCE = 0x00081155
_T_REF_SOP_SEQ = 0x00081199
_T_RELATIONSHIP_TYPE = 0x0040A010
_T_VALUE_TYPE = 0x0040A040
_T_RETRIEVE_AE_TITLE = 0x00080054
_T_RETRIEVE_URL = 0x00081190
_T_REF_SERIES_SEQ = 0x00081115
_T_STUDY_UID = 0x0020000D
_T_SERIES_UID = 0x0020000E
_T_RETRIEVE_LOCATION_UID = 0x0040E011
_T_EVIDENCE_SEQ = 0x0040A375
_T_CONTENT_SEQ = 0x0040A730


class InstanceLike(Protocol):
    sop_class_uid: str
    sop_instance_uid: str


class SeriesLike(Protocol):
    series_instance_uid: str
    modality: str

    @property
    def instances(self) -> Sequence[InstanceLike]: ...


class StudyLike(Protocol):
    study_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str | None
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession_number: str
    issuer_of_accession_number: str | None
    study_id: str
    study_description: str
    referring_physician_name: str

    @property
    def series(self) -> Sequence[SeriesLike]: ...


@dataclass(frozen=True)
class RetrieveLocation:
    """Where a consumer retrieves the referenced instances (per Referenced Series item).

    ``location_uid`` is the Imaging Document Source's repositoryUniqueId: the consumer puts it in
    DocumentRequest/RepositoryUniqueId of RAD-69. ``ae_title`` serves C-MOVE/C-GET (RAD-16/RAD-55
    mapping); ``wado_rs_base`` (optional) yields a Retrieve URL ``{base}/studies/{s}/series/{se}``.
    """

    location_uid: str
    ae_title: str
    wado_rs_base: str | None = None


@dataclass(frozen=True)
class ManifestOptions:
    series_instance_uid: str | None = None  # generated when None
    sop_instance_uid: str | None = None  # generated when None
    series_number: int = 999
    instance_number: int = 1
    series_description: str = "XDS-I.b manifest"
    manufacturer: str = "XDS-I Imaging Document Source"
    institution_name: str | None = None
    description: str | None = None  # optional TID 2010 "Key Object Description" TEXT item
    requested_procedure_id: str | None = None
    content_datetime: datetime | None = None  # UTC "now" when None


class ManifestError(ValueError):
    """The study cannot be described by a manifest (no instances, missing UIDs...)."""


def build_manifest(study: StudyLike, location: RetrieveLocation,
                   options: ManifestOptions | None = None) -> Dataset:
    """Return the KOS manifest of *study* as a pydicom Dataset with File Meta Information."""
    opts = options or ManifestOptions()
    if not study.study_instance_uid:
        raise ManifestError("study has no Study Instance UID")
    series_list = [s for s in study.series if s.instances]
    if not series_list:
        raise ManifestError(f"study {study.study_instance_uid} has no instances to reference")

    now = (opts.content_datetime or datetime.now(UTC)).astimezone(UTC)
    sop_instance_uid = opts.sop_instance_uid or generate_uid()
    series_instance_uid = opts.series_instance_uid or generate_uid()

    ds = Dataset()
    ds.file_meta = _file_meta(sop_instance_uid)
    if _needs_utf8(study, opts.description):
        ds.SpecificCharacterSet = "ISO_IR 192"

    # --- SOP Common (PS3.3 C.12.1) ---------------------------------------------------------
    ds.SOPClassUID = KOS_SOP_CLASS_UID
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.TimezoneOffsetFromUTC = "+0000"

    # --- General Study (C.7.2.1): Type 2 attributes present even when empty -----------------
    ds.StudyDate = study.study_date or ""
    ds.StudyTime = study.study_time or ""
    ds.AccessionNumber = study.accession_number or ""
    if study.issuer_of_accession_number:
        ds.IssuerOfAccessionNumberSequence = [_issuer_item(study.issuer_of_accession_number)]

    # --- Key Object Document Series (C.17.6.1) --------------------------------------------------
    ds.Modality = "KO"
    # --- General Equipment (C.7.5.1) ---------------------------------------------------------
    ds.Manufacturer = opts.manufacturer
    if opts.institution_name:
        ds.InstitutionName = opts.institution_name
    ds.ReferringPhysicianName = study.referring_physician_name or ""
    if study.study_description:
        ds.StudyDescription = study.study_description
    if opts.series_description:
        ds.SeriesDescription = opts.series_description
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()  # Type 2, empty

    # --- Patient (C.7.1.1) -------------------------------------------------------------------
    ds.PatientName = study.patient_name or ""
    ds.PatientID = study.patient_id or ""
    if study.issuer_of_patient_id:
        ds.IssuerOfPatientID = study.issuer_of_patient_id
    ds.PatientBirthDate = study.patient_birth_date or ""
    ds.PatientSex = study.patient_sex or ""

    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.StudyID = study.study_id or ""
    ds.SeriesNumber = opts.series_number

    # --- Key Object Document (C.17.6.2) --------------------------------------------------------
    ds.InstanceNumber = opts.instance_number
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")

    # --- SR Document Content (C.17.3): root CONTAINER, TID 2010 ------------------------------
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code(*MANIFEST_TITLE)]
    ds.ContinuityOfContent = "SEPARATE"  # see module docstring
    template = Dataset()
    template.MappingResource = TEMPLATE_MAPPING_RESOURCE
    template.TemplateIdentifier = TEMPLATE_ID
    ds.ContentTemplateSequence = [template]

    content_items: list[bytes] = []
    if opts.description:
        text = Dataset()
        text.RelationshipType = "CONTAINS"
        text.ValueType = "TEXT"
        text.ConceptNameCodeSequence = [_code(*KEY_OBJECT_DESCRIPTION)]
        text.TextValue = opts.description
        content_items.append(_item(_encode_dataset(text, ds._character_set)))

    evidence_series: list[bytes] = []
    seen: set[str] = set()
    location_uid = _checked_uid(location.location_uid, "Retrieve Location UID")
    ae_title = _checked_text(location.ae_title, "Retrieve AE Title", 16)
    for series in series_list:
        series_uid = _checked_uid(series.series_instance_uid,
                                  f"Series Instance UID in study {study.study_instance_uid}")
        sop_items: list[bytes] = []
        for inst in series.instances:
            if not inst.sop_instance_uid or not inst.sop_class_uid:
                raise ManifestError(f"an instance of series {series_uid} lacks SOP UIDs")
            if inst.sop_instance_uid in seen:
                continue  # a manifest references each instance once
            seen.add(inst.sop_instance_uid)
            sop = _item(_ui(_T_REF_SOP_CLASS, _checked_uid(inst.sop_class_uid, "SOP Class UID"))
                        + _ui(_T_REF_SOP_INSTANCE, _checked_uid(inst.sop_instance_uid, "SOP Instance UID")))
            sop_items.append(sop)
            # TID 2010 row 6-8: CONTAINS IMAGE/WAVEFORM/COMPOSITE, no concept name (module docstring).
            content_items.append(_item(_sq(_T_REF_SOP_SEQ, [sop]) + _CS_CONTAINS
                                       + _cs(_T_VALUE_TYPE, value_type_for(inst.sop_class_uid))))
        if not sop_items:
            continue
        body = _text_element(_T_RETRIEVE_AE_TITLE, "AE", ae_title)
        if location.wado_rs_base:
            url = (f"{location.wado_rs_base.rstrip('/')}/studies/{study.study_instance_uid}"
                   f"/series/{series_uid}")
            body += _text_element(_T_RETRIEVE_URL, "UR", _checked_text(url, "Retrieve URL", 1 << 16))
        body += _sq(_T_REF_SOP_SEQ, sop_items) + _ui(_T_SERIES_UID, series_uid) \
            + _ui(_T_RETRIEVE_LOCATION_UID, location_uid)
        evidence_series.append(_item(body))

    study_item = _item(_sq(_T_REF_SERIES_SEQ, evidence_series)
                       + _ui(_T_STUDY_UID, _checked_uid(study.study_instance_uid, "Study Instance UID")))
    _set_raw_sq(ds, _T_EVIDENCE_SEQ, [study_item])
    _set_raw_sq(ds, _T_CONTENT_SEQ, content_items)
    # The raw elements above are Explicit VR Little Endian: declare it as the dataset's encoding so
    # pydicom writes them as they are (see module docstring).
    ds.set_original_encoding(False, True, ds._character_set)

    if study.accession_number:
        ds.ReferencedRequestSequence = [_referenced_request(study, opts)]
    return ds


def to_part10(ds: Dataset) -> bytes:
    """Encode as a DICOM Part 10 file (preamble + File Meta), as RAD-68 requires (RAD68-005)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@lru_cache(maxsize=512)
def value_type_for(sop_class_uid: str) -> str:
    """TID 2010: IMAGE for image storage classes, WAVEFORM for waveforms, COMPOSITE otherwise."""
    name = UID(sop_class_uid).name if sop_class_uid else ""
    if "Image Storage" in name:
        return "IMAGE"
    if "Waveform Storage" in name or "ECG" in name:
        return "WAVEFORM"
    return "COMPOSITE"


def _file_meta(sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = KOS_SOP_CLASS_UID
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _issuer_item(issuer: str) -> Dataset:
    """Issuer of Accession Number Sequence item: an OID issuer is a Universal Entity ID (ISO)."""
    item = Dataset()
    if _looks_like_oid(issuer):
        item.UniversalEntityID = issuer
        item.UniversalEntityIDType = "ISO"
    else:
        item.LocalNamespaceEntityID = issuer
    return item


def _referenced_request(study: StudyLike, opts: ManifestOptions) -> Dataset:
    """Referenced Request Sequence item (PS3.3 Table 10-9 Request Attributes / C.17.6.2)."""
    item = Dataset()
    item.AccessionNumber = study.accession_number
    if study.issuer_of_accession_number:
        item.IssuerOfAccessionNumberSequence = [_issuer_item(study.issuer_of_accession_number)]
    item.ReferencedStudySequence = DicomSequence()
    item.StudyInstanceUID = study.study_instance_uid
    item.RequestedProcedureDescription = study.study_description or ""
    item.RequestedProcedureCodeSequence = DicomSequence()
    item.RequestedProcedureID = opts.requested_procedure_id or study.study_id or ""
    item.PlacerOrderNumberImagingServiceRequest = ""
    item.FillerOrderNumberImagingServiceRequest = ""
    return item


def _looks_like_oid(value: str) -> bool:
    parts = value.split(".")
    return len(parts) > 1 and all(p.isdigit() for p in parts)


def _needs_utf8(study: StudyLike, description: str | None = None) -> bool:
    texts = (description or "", study.patient_name, study.patient_id, study.study_description,
             study.referring_physician_name, study.accession_number, study.study_id,
             study.issuer_of_patient_id or "")
    return any(not t.isascii() for t in texts if t)


# --- direct Explicit VR Little Endian encoding (PS3.5 7.1.2, 7.5) ---------------------------------

_ITEM = struct.Struct("<HHI")  # (FFFE,E000) + 32-bit length
_SHORT = struct.Struct("<HH2sH")  # tag, VR, 16-bit length
_LONG = struct.Struct("<HH2s2xI")  # tag, VR, reserved, 32-bit length (SQ, UR, UT, ...)


def _tag_parts(tag: int) -> tuple[int, int]:
    return tag >> 16, tag & 0xFFFF


def _ui(tag: int, uid: str) -> bytes:
    value = uid.encode("ascii")
    if len(value) % 2:
        value += b"\0"  # UI pads with NULL (PS3.5 6.2)
    return _SHORT.pack(*_tag_parts(tag), b"UI", len(value)) + value


def _cs(tag: int, text: str) -> bytes:
    return _text_element(tag, "CS", text)


def _text_element(tag: int, vr: str, text: str) -> bytes:
    value = text.encode("ascii")
    if len(value) % 2:
        value += b" "  # text VRs pad with SPACE (PS3.5 6.2)
    if vr in ("UR", "UT", "UC"):
        return _LONG.pack(*_tag_parts(tag), vr.encode("ascii"), len(value)) + value
    return _SHORT.pack(*_tag_parts(tag), vr.encode("ascii"), len(value)) + value


def _item(body: bytes) -> bytes:
    return _ITEM.pack(0xFFFE, 0xE000, len(body)) + body


def _sq(tag: int, items: list[bytes]) -> bytes:
    value = b"".join(items)
    return _LONG.pack(*_tag_parts(tag), b"SQ", len(value)) + value


_CS_CONTAINS = _cs(_T_RELATIONSHIP_TYPE, "CONTAINS")


def _set_raw_sq(ds: Dataset, tag: int, items: list[bytes]) -> None:
    value = b"".join(items)
    ds[tag] = RawDataElement(Tag(tag), "SQ", len(value), value, 0, False, True)


def _encode_dataset(item: Dataset, encodings: str | list[str]) -> bytes:
    """A small nested dataset (the optional TEXT item) encoded Explicit VR Little Endian by pydicom,
    its text in the document's character set."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, item, encodings)
    return buffer.getvalue()


def _checked_uid(uid: str, what: str) -> str:
    if not is_dicom_uid(uid):
        raise ManifestError(f"{what} {uid!r} is not a valid UID (PS3.5 9.1)")
    return uid


def _checked_text(text: str, what: str, max_length: int) -> str:
    if not text or len(text) > max_length or not text.isascii() or "\\" in text:
        raise ManifestError(f"{what} {text!r} must be 1-{max_length} ASCII characters without backslash")
    return text
