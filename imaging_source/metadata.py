"""RAD-68 metadata: the DocumentEntry + SubmissionSet describing a KOS manifest of a study.

Rules (IHE RAD TF-3 4.68.4.1.2.3, ITI TF-3 4.2.3):

* mimeType ``application/dicom``; formatCode = the KOS SOP Class UID 1.2.840.10008.5.1.4.1.1.88.59
  in coding scheme 1.2.840.10008.2.6.1 (DICOM UID registry) (RAD68-022);
* uniqueId = the KOS SOP Instance UID;
* eventCodeList = the acquisition modalities (CID 29, scheme DCM) then the anatomic regions
  (CID 4), display names = code meanings (RAD68-021);
* referenceIdList = the Accession Number (``urn:ihe:iti:xds:2013:accession``) and the Study Instance
  UID (``urn:ihe:iti:xds:2016:studyInstanceUID``) (ITI TF-3 4.2.3.2.28);
* serviceStartTime = Study Date/Time (converted to UTC, ITI TF-3 4.2.3.1.7 DTM);
* sourcePatientId = the local DICOM Patient ID with its issuer; sourcePatientInfo PID-3/5/7/8;
* patientId (DocumentEntry and SubmissionSet) = the affinity-domain id from the patient mapping;
* class/type/confidentiality/facility/practice-setting/contentType codes from configuration;
* a replacement manifest carries an RPLC association (source = new entry, target = the previous
  entry's entryUUID) (ITI TF-3 4.2.2.2.2; RAD68-006).

No Django here: configuration comes in as a :class:`MetadataConfig` value.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

from pydicom.uid import generate_uid

from imaging_source.study import StudyRef
from xds_core.affinity_domain import AffinityDomain, load_affinity_domain
from xds_core.identifiers import is_iso_oid
from xds_core.metadata.objects import (
    Association,
    Classification,
    DocumentEntry,
    InternationalString,
    Slot,
    Submission,
    SubmissionSet,
)
from xds_core.metadata.values import Code
from xds_core.vocabulary import (
    DICOM_MIME_TYPE,
    DICOM_UID_REGISTRY,
    KOS_FORMAT_CODE,
    REFERENCE_ID_LIST_SLOT,
    AssociationType,
    ClassificationNode,
    ClassificationScheme,
    ObjectType,
    ReferenceIdType,
    SubmissionSetStatus,
)

#: DCMR CID 29 "Acquisition Modality" code meanings (scheme DCM).
MODALITY_MEANINGS: dict[str, str] = {
    "AR": "Autorefraction", "BDUS": "Ultrasound Bone Densitometry", "BMD": "Bone Mineral Densitometry",
    "BI": "Biomagnetic imaging", "CR": "Computed Radiography", "CT": "Computed Tomography",
    "DG": "Diaphanography", "DMS": "Dermoscopy", "DX": "Digital Radiography", "ECG": "Electrocardiography",
    "EPS": "Cardiac Electrophysiology", "ES": "Endoscopy", "GM": "General Microscopy",
    "HD": "Hemodynamic Waveform", "IO": "Intra-oral Radiography", "IVOCT": "Intravascular Optical Coherence "
    "Tomography", "IVUS": "Intravascular Ultrasound", "KER": "Keratometry", "LEN": "Lensometry",
    "LS": "Laser surface scan", "MG": "Mammography", "MR": "Magnetic Resonance", "NM": "Nuclear Medicine",
    "OAM": "Ophthalmic Axial Measurements", "OCT": "Optical Coherence Tomography",
    "OP": "Ophthalmic Photography", "OPM": "Ophthalmic Mapping", "OPT": "Ophthalmic Tomography",
    "OPV": "Ophthalmic Visual Field", "OSS": "Optical Surface Scanner", "PT": "Positron emission tomography",
    "PX": "Panoramic X-Ray", "RF": "Radio Fluoroscopy", "RG": "Radiographic imaging",
    "SM": "Slide Microscopy", "SRF": "Subjective Refraction", "TG": "Thermography", "US": "Ultrasound",
    "VA": "Visual Acuity", "XA": "X-Ray Angiography", "XC": "External-camera Photography",
    "OT": "Other",
}
#: Modalities of derived / non-acquisition objects: not event codes of the imaging study (CID 29).
NON_ACQUISITION_MODALITIES = frozenset({
    "KO", "PR", "SR", "DOC", "REG", "SEG", "FID", "RWV", "PLAN", "RTPLAN", "RTRECORD", "RTSTRUCT",
    "RTDOSE", "AU", "ASMT", "CTPROTOCOL", "M3D", "POS", "STAIN", "TEXTUREMAP", "OTHER"})

#: Body Part Examined (0018,0015) -> CID 4 anatomic region: (SCT concept id, legacy SNOMED-RT id,
#: meaning), following the PS3.16 Annex L correspondence table for the common defined terms.
ANATOMIC_REGIONS: dict[str, tuple[str, str, str]] = {
    "ABDOMEN": ("818981001", "T-D4000", "Abdomen"),
    "ANKLE": ("70258002", "T-15750", "Ankle joint"),
    "BRAIN": ("12738006", "T-A0100", "Brain"),
    "BREAST": ("76752008", "T-04000", "Breast"),
    "CHEST": ("51185008", "T-D3000", "Chest"),
    "CHESTABDOMEN": ("416550000", "R-FAB55", "Chest and Abdomen"),
    "CLAVICLE": ("51299004", "T-12310", "Clavicle"),
    "CSPINE": ("122494005", "T-D00F7", "Cervical spine"),
    "ELBOW": ("127949000", "T-D8300", "Elbow"),
    "EXTREMITY": ("66019005", "T-D0300", "Extremity"),
    "FOOT": ("56459004", "T-D9700", "Foot"),
    "HAND": ("85562004", "T-D8700", "Hand"),
    "HEAD": ("69536005", "T-D1100", "Head"),
    "HEADNECK": ("774007", "T-D1000", "Head and Neck"),
    "HEART": ("80891009", "T-32000", "Heart"),
    "HIP": ("24136001", "T-15710", "Hip joint"),
    "KIDNEY": ("64033007", "T-71000", "Kidney"),
    "KNEE": ("72696002", "T-D9200", "Knee"),
    "LIVER": ("10200004", "T-62000", "Liver"),
    "LSPINE": ("122496007", "T-D00F9", "Lumbar spine"),
    "NECK": ("45048000", "T-D1600", "Neck"),
    "PELVIS": ("816092008", "T-D6000", "Pelvis"),
    "SHOULDER": ("16982005", "T-D2220", "Shoulder"),
    "SKULL": ("89546000", "T-11100", "Skull"),
    "SPINE": ("421060004", "T-D04FF", "Spine"),
    "TSPINE": ("122495006", "T-D00F8", "Thoracic spine"),
    "WHOLEBODY": ("38266002", "T-D0010", "Entire body"),
    "WRIST": ("74670003", "T-15460", "Wrist joint"),
}


@dataclass(frozen=True)
class MetadataConfig:
    """Affinity-domain values for RAD-68 metadata (built from settings by the caller)."""

    source_id: str  # XDSSubmissionSet.sourceId: the Imaging Document Source OID
    class_code: Code
    type_code: Code
    confidentiality_code: Code
    facility_type_code: Code
    practice_setting_code: Code
    content_type_code: Code
    language_code: str = "en-us"
    anatomy_scheme: str = "SCT"  # SCT | SRT | SNM3 | none
    source_patient_authority: str = ""
    author_institution: str = ""
    #: Time zone of DICOM Study Date/Time (DICOM DA/TM are local time); XDS DTM is UTC.
    local_timezone: str = "UTC"
    #: The affinity domain's value sets (codes.xml), when configured: event codes it does not
    #: accept are left out (eventCodeList is optional) rather than failing the whole submission.
    affinity_domain: AffinityDomain | None = None

    @staticmethod
    def code(value: tuple[str, str, str] | Code) -> Code:
        if isinstance(value, Code):
            return value
        code, scheme, display = value
        return Code(code, scheme, display or code)

    @classmethod
    def from_settings(cls, settings: object) -> MetadataConfig:
        """From a settings object (``django.conf.settings``) handed in by a command or view."""
        c = cls.code
        return cls(
            source_id=settings.XDS_IMAGING_SOURCE_ID,  # type: ignore[attr-defined]
            class_code=c(settings.XDS_IMAGING_CLASS_CODE),  # type: ignore[attr-defined]
            type_code=c(settings.XDS_IMAGING_TYPE_CODE),  # type: ignore[attr-defined]
            confidentiality_code=c(settings.XDS_IMAGING_CONFIDENTIALITY_CODE),  # type: ignore[attr-defined]
            facility_type_code=c(settings.XDS_IMAGING_FACILITY_TYPE_CODE),  # type: ignore[attr-defined]
            practice_setting_code=c(settings.XDS_IMAGING_PRACTICE_SETTING_CODE),  # type: ignore[attr-defined]
            content_type_code=c(settings.XDS_IMAGING_CONTENT_TYPE_CODE),  # type: ignore[attr-defined]
            language_code=settings.XDS_IMAGING_LANGUAGE_CODE,  # type: ignore[attr-defined]
            anatomy_scheme=settings.XDS_IMAGING_ANATOMY_SCHEME,  # type: ignore[attr-defined]
            source_patient_authority=settings.XDS_IMAGING_SOURCE_PATIENT_AUTHORITY,  # type: ignore[attr-defined]
            author_institution=settings.XDS_IMAGING_AUTHOR_INSTITUTION,  # type: ignore[attr-defined]
            local_timezone=getattr(settings, "TIME_ZONE", "UTC") or "UTC",
            affinity_domain=load_affinity_domain(getattr(settings, "XDS_AFFINITY_DOMAIN_CODES", "") or None),
        )


@dataclass(frozen=True)
class ManifestSubmission:
    """A built RAD-68 submission and the identifiers publication records."""

    submission: Submission
    document_entry: DocumentEntry
    submission_set: SubmissionSet
    entry_uuid: str
    submission_set_unique_id: str


def new_uuid_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def event_codes(study: StudyRef, anatomy_scheme: str, domain: AffinityDomain | None = None) -> list[Code]:
    """Modalities (CID 29, DCM) then anatomic regions (CID 4), each once, in study order (RAD68-021).

    With an affinity domain that constrains eventCodeList, an anatomic region is written in the
    first of (configured scheme, SCT, SRT, SNM3) the domain accepts, and codes it accepts in none
    are left out (logged by the caller through the returned list being shorter).
    """
    def accepted(code: Code) -> bool:
        return domain is None or domain.accepts_code("eventCodeList", code.code, code.scheme)

    out: list[Code] = []
    for modality in study.modalities:
        if modality in NON_ACQUISITION_MODALITIES:
            continue
        code = Code(modality, "DCM", MODALITY_MEANINGS.get(modality, modality))
        if accepted(code):
            out.append(code)
    if anatomy_scheme == "none":
        return out
    seen: set[str] = set()
    for series in study.series:
        part = (series.body_part_examined or "").strip().upper()
        region = ANATOMIC_REGIONS.get(part)
        if not region or part in seen:
            continue
        seen.add(part)
        sct, legacy, meaning = region
        schemes = [anatomy_scheme] + [x for x in ("SCT", "SRT", "SNM3") if x != anatomy_scheme]
        for scheme in schemes:
            code = Code(sct, "SCT", meaning) if scheme == "SCT" else Code(legacy, scheme, meaning)
            if accepted(code):
                out.append(code)
                break
    return out


def reference_ids(study: StudyRef) -> list[str]:
    """referenceIdList CXi values (ITI TF-3 4.2.3.2.28): accession (with issuer) and Study Instance UID."""
    out: list[str] = []
    if study.accession_number:
        issuer = study.issuer_of_accession_number or ""
        # &OID&ISO only for an ISO OID (the old isdigit() check took '1.02' and Unicode digits).
        authority = f"&{issuer}&ISO" if issuer and is_iso_oid(issuer) else issuer
        out.append(f"{study.accession_number}^^^{authority}^{ReferenceIdType.ACCESSION}")
    out.append(f"{study.study_instance_uid}^^^^{ReferenceIdType.STUDY_INSTANCE_UID}")
    return out


def dicom_to_dtm(date: str, time: str, tz: tzinfo) -> str | None:
    """DICOM DA + TM (local time) -> XDS DTM in UTC (``YYYYMMDD[hhmmss]``); None when no date."""
    date = (date or "").strip()
    if len(date) != 8 or not date.isdigit():
        return None
    digits = "".join(ch for ch in (time or "").split(".")[0] if ch.isdigit())
    if not digits:
        return date  # date only: DTM precision of a day, no zone conversion possible
    digits = (digits + "0000")[:6]
    try:
        local = datetime.strptime(date + digits, "%Y%m%d%H%M%S").replace(tzinfo=tz)
    except ValueError:
        return date
    return local.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def hl7_name(dicom_pn: str) -> str:
    """DICOM PN ``Family^Given^Middle^Prefix^Suffix`` -> HL7 XPN ``Family^Given^Middle^Suffix^Prefix``."""
    alphabetic = dicom_pn.split("=")[0]
    parts = (alphabetic.split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = parts
    return "^".join([family, given, middle, suffix, prefix]).rstrip("^")


def build_submission(study: StudyRef, *, kos_sop_instance_uid: str, patient_id: str, source_patient_id: str,
                     config: MetadataConfig, replaces_entry_uuid: str | None = None,
                     entry_uuid: str | None = None, now: datetime | None = None) -> ManifestSubmission:
    """DocumentEntry + SubmissionSet (+ HasMember, + RPLC) for the manifest of *study*.

    ``entry_uuid``: we choose the DocumentEntry id (a ``urn:uuid:``) ourselves, so a later
    replacement can target it by entryUUID (the registry keeps UUID ids as sent, ITI TF-3 4.2.3.1.5).
    """
    now_utc = (now or datetime.now(UTC)).astimezone(UTC)
    tz = _zone(config.local_timezone)
    entry_id = entry_uuid or new_uuid_id()
    ss_id = new_uuid_id()

    entry = DocumentEntry(id=entry_id, object_type=ObjectType.STABLE_DOCUMENT_ENTRY, mime_type=DICOM_MIME_TYPE)
    entry.name = InternationalString.of(_title(study))
    if study.study_description:
        entry.description = InternationalString.of(study.study_description)
    entry.set_slot("creationTime", now_utc.strftime("%Y%m%d%H%M%S"))
    entry.set_slot("languageCode", config.language_code)
    start = dicom_to_dtm(study.study_date, study.study_time, tz)
    if start:
        entry.set_slot("serviceStartTime", start)
    entry.set_slot("sourcePatientId", source_patient_id)
    entry.set_slot("sourcePatientInfo", _source_patient_info(study, source_patient_id))
    refs = reference_ids(study)
    if refs:
        entry.set_slot(REFERENCE_ID_LIST_SLOT, refs)

    classifications: list[Classification] = []
    if config.author_institution:
        classifications.append(_author(ClassificationScheme.DocumentEntry_author, entry_id, config.author_institution))
    for scheme, codes in (
        (ClassificationScheme.DocumentEntry_classCode, [config.class_code]),
        (ClassificationScheme.DocumentEntry_confidentialityCode, [config.confidentiality_code]),
        (ClassificationScheme.DocumentEntry_eventCodeList,
         event_codes(study, config.anatomy_scheme, config.affinity_domain)),
        (ClassificationScheme.DocumentEntry_formatCode,
         [Code(KOS_FORMAT_CODE, DICOM_UID_REGISTRY, KOS_FORMAT_CODE)]),
        (ClassificationScheme.DocumentEntry_healthcareFacilityTypeCode, [config.facility_type_code]),
        (ClassificationScheme.DocumentEntry_practiceSettingCode, [config.practice_setting_code]),
        (ClassificationScheme.DocumentEntry_typeCode, [config.type_code]),
    ):
        classifications += [_classification(scheme, entry_id, code) for code in codes]
    entry.classifications = classifications
    entry.patient_id = patient_id
    entry.unique_id = kos_sop_instance_uid
    _number_nested(entry)

    ss_unique_id = generate_uid(prefix=None)  # 2.25.<uuid>: an OID (ITI TF-3 4.2.3.3.12)
    ss = SubmissionSet(id=ss_id, object_type=ObjectType.REGISTRY_PACKAGE)
    ss.name = InternationalString.of(f"Imaging manifest {_title(study)}")
    ss.set_slot("submissionTime", now_utc.strftime("%Y%m%d%H%M%S"))
    ss_classes: list[Classification] = []
    if config.author_institution:
        ss_classes.append(_author(ClassificationScheme.SubmissionSet_author, ss_id, config.author_institution))
    ss_classes.append(_classification(ClassificationScheme.SubmissionSet_contentTypeCode, ss_id,
                                      config.content_type_code))
    ss_classes.append(Classification(id="", classified_object=ss_id,
                                     classification_node=ClassificationNode.SUBMISSION_SET))
    ss.classifications = ss_classes
    ss.unique_id = ss_unique_id
    ss.source_id = config.source_id
    ss.patient_id = patient_id
    _number_nested(ss)

    associations = [Association(
        id=new_uuid_id(), object_type="urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association",
        association_type=AssociationType.HasMember, source_object=ss_id, target_object=entry_id,
        slots=[Slot("SubmissionSetStatus", [SubmissionSetStatus.ORIGINAL])])]
    if replaces_entry_uuid:
        # ITI TF-3 4.2.2.2.2: RPLC source = the new DocumentEntry, target = the replaced one.
        associations.append(Association(
            id=new_uuid_id(),
            object_type="urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association",
            association_type=AssociationType.RPLC, source_object=entry_id, target_object=replaces_entry_uuid))

    submission = Submission(submission_set=ss, document_entries=[entry], associations=associations)
    return ManifestSubmission(submission, entry, ss, entry_id, ss_unique_id)


# --- helpers ---------------------------------------------------------------------------------

def _title(study: StudyRef) -> str:
    return study.study_description or (f"Imaging study {study.accession_number}" if study.accession_number
                                       else "Imaging study")


def _source_patient_info(study: StudyRef, source_patient_id: str) -> list[str]:
    values = [f"PID-3|{source_patient_id}"]
    if study.patient_name:
        values.append(f"PID-5|{hl7_name(study.patient_name)}")
    if study.patient_birth_date:
        values.append(f"PID-7|{study.patient_birth_date}")
    if study.patient_sex:
        values.append(f"PID-8|{study.patient_sex}")
    return values


def _classification(scheme: str, classified: str, code: Code) -> Classification:
    c = Classification.for_code(scheme, classified, code)
    c.object_type = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
    return c


def _author(scheme: str, classified: str, institution: str) -> Classification:
    return Classification(id="", classification_scheme=scheme, classified_object=classified,
                          node_representation="", slots=[Slot("authorInstitution", [institution])])


def _number_nested(obj: DocumentEntry | SubmissionSet) -> None:
    """Give nested Classifications / ExternalIdentifiers UUID ids (ebRIM ids must be unique)."""
    for c in obj.classifications:
        if not c.id:
            c.id = new_uuid_id()
    for e in obj.external_identifiers:
        if not e.id:
            e.id = new_uuid_id()
        e.registry_object = obj.id
        e.object_type = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except Exception:  # unknown zone name: DICOM times are then taken as UTC
        return UTC
