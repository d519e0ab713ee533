"""Validate a received XDS-I.b manifest against the DICOM KOS IOD and the XDS-I.b rules.

All findings are collected (never stop at the first). Each finding names the rule it comes from:

* DICOM PS3.10 7.1 -- Part 10 file (preamble, File Meta Information);
* DICOM PS3.3 A.35.4 Key Object Selection Document IOD: Patient (C.7.1.1), General Study
  (C.7.2.1), Key Object Document Series (C.17.6.1), General Equipment (C.7.5.1), Key Object
  Document (C.17.6.2), SR Document Content (C.17.3), SOP Common (C.12.1);
* DICOM PS3.16 TID 2010 Key Object Selection (root CONTAINER, title from CID 7010, CONTAINS
  IMAGE/WAVEFORM/COMPOSITE references, optional "Key Object Description" TEXT);
* PS3.3 C.17.2.3 / A.35.4: every object referenced in the content tree is in the Current
  Requested Procedure Evidence Sequence;
* IHE RAD TF-3 4.68.4.1.2 (XDS-I.b manifest): title (113030, DCM, "Manifest"); every Referenced
  Series item carries Retrieve AE Title and Retrieve Location UID (the IDS repositoryUniqueId);
  the RAD-68 document is a Part 10 file (RAD68-005).

Errors make a manifest unusable for a consumer; warnings are deviations a consumer can live with.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from kos.builder import MANIFEST_TITLE
from xds_core.identifiers import is_dicom_uid
from xds_core.vocabulary import KOS_SOP_CLASS_UID

ERROR = "error"
WARNING = "warning"
_REFERENCE_VALUE_TYPES = {"IMAGE", "WAVEFORM", "COMPOSITE"}
#: CID 7010 Key Object Selection Document Title codes (DCM 1130xx family, the ones in use).
_CID_7010 = {"113000", "113001", "113002", "113003", "113004", "113005", "113006", "113007", "113008",
             "113009", "113010", "113013", "113018", "113020", "113021", "113030", "113031", "113032",
             "113033", "113034", "113035", "113036", "113037", "113038", "113039", "113022"}


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning"
    code: str  # short stable identifier, e.g. "evidence.missing-retrieve-location"
    message: str
    rule: str  # where the rule comes from
    path: str = ""  # attribute path, e.g. "CurrentRequestedProcedureEvidenceSequence[0]..."

    def __str__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"{self.severity.upper()} {self.code}{where}: {self.message} ({self.rule})"


def validate_manifest(source: bytes | str | Path | Dataset, *,
                      expected_location_uid: str | None = None) -> list[Finding]:
    """Return every finding for *source* (Part 10 bytes, a path or a Dataset); [] = valid.

    ``expected_location_uid``: when given, each series' Retrieve Location UID must equal it (a
    source checking its own output, or a consumer that knows the IDS).
    """
    findings: list[Finding] = []
    add = findings.append

    ds: Dataset
    if isinstance(source, Dataset):
        ds = source
        if not getattr(ds, "file_meta", None):
            add(Finding(ERROR, "part10.no-file-meta", "no File Meta Information",
                        "PS3.10 7.1; RAD68-005"))
    else:
        raw = source if isinstance(source, bytes) else Path(source).read_bytes()
        if len(raw) < 132 or raw[128:132] != b"DICM":
            add(Finding(ERROR, "part10.no-preamble", "not a DICOM Part 10 file (no 128-byte preamble + 'DICM')",
                        "PS3.10 7.1; RAD68-005"))
        try:
            ds = dcmread(io.BytesIO(raw), force=True)
        except Exception as exc:
            add(Finding(ERROR, "part10.unreadable", f"cannot be parsed as DICOM: {exc}", "PS3.10 7"))
            return findings
    _check_file_meta(ds, add)
    _check_modules(ds, add)
    _check_content(ds, add)
    _check_evidence(ds, add, expected_location_uid)
    return findings


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == ERROR]


# --- checks ----------------------------------------------------------------------------------

def _check_file_meta(ds: Dataset, add) -> None:
    meta = getattr(ds, "file_meta", None)
    if not meta:
        return
    media_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
    media_inst = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
    if media_class and media_class != str(ds.get("SOPClassUID", "")):
        add(Finding(ERROR, "part10.class-mismatch", "Media Storage SOP Class UID differs from SOP Class UID",
                    "PS3.10 7.1"))
    if media_inst and media_inst != str(ds.get("SOPInstanceUID", "")):
        add(Finding(ERROR, "part10.instance-mismatch",
                    "Media Storage SOP Instance UID differs from SOP Instance UID", "PS3.10 7.1"))
    if not meta.get("TransferSyntaxUID"):
        add(Finding(ERROR, "part10.no-transfer-syntax", "File Meta lacks Transfer Syntax UID", "PS3.10 7.1"))


def _check_modules(ds: Dataset, add) -> None:
    sop_class = _s(ds, "SOPClassUID")
    if sop_class != KOS_SOP_CLASS_UID:
        add(Finding(ERROR, "iod.sop-class", f"SOP Class UID is {sop_class or '(missing)'}, not Key Object "
                    f"Selection Document Storage {KOS_SOP_CLASS_UID}", "PS3.4 B.5; RAD TF-3 4.68"))
    _uid(ds, "SOPInstanceUID", "PS3.3 C.12.1", add)
    _uid(ds, "StudyInstanceUID", "PS3.3 C.7.2.1", add)
    _uid(ds, "SeriesInstanceUID", "PS3.3 C.17.6.1", add)
    if _s(ds, "Modality") != "KO":
        add(Finding(ERROR, "iod.modality", f"Modality is {_s(ds, 'Modality') or '(missing)'}, must be KO",
                    "PS3.3 C.17.6.1"))
    # Type 1 attributes (must be present with a value).
    for keyword, rule in (("SeriesNumber", "PS3.3 C.17.6.1"), ("InstanceNumber", "PS3.3 C.17.6.2"),
                          ("ContentDate", "PS3.3 C.17.6.2"), ("ContentTime", "PS3.3 C.17.6.2")):
        if not _s(ds, keyword):
            add(Finding(ERROR, f"iod.missing.{keyword}", f"{keyword} is required (Type 1)", rule))
    # Type 2 attributes (must be present, may be empty).
    for keyword, rule in (("PatientName", "PS3.3 C.7.1.1"), ("PatientID", "PS3.3 C.7.1.1"),
                          ("PatientBirthDate", "PS3.3 C.7.1.1"), ("PatientSex", "PS3.3 C.7.1.1"),
                          ("StudyDate", "PS3.3 C.7.2.1"), ("StudyTime", "PS3.3 C.7.2.1"),
                          ("ReferringPhysicianName", "PS3.3 C.7.2.1"), ("StudyID", "PS3.3 C.7.2.1"),
                          ("AccessionNumber", "PS3.3 C.7.2.1"), ("Manufacturer", "PS3.3 C.7.5.1"),
                          ("ReferencedPerformedProcedureStepSequence", "PS3.3 C.17.6.1")):
        if keyword not in ds:
            add(Finding(ERROR, f"iod.absent.{keyword}", f"{keyword} must be present (Type 2)", rule))
    if "PatientID" in ds and not _s(ds, "PatientID"):
        add(Finding(WARNING, "xdsi.empty-patient-id", "Patient ID is empty: the manifest cannot be matched "
                    "to the affinity-domain patient", "RAD TF-3 4.68.4.1.2.3"))
    if "PixelData" in ds:
        add(Finding(ERROR, "iod.pixel-data", "a KOS carries no Pixel Data", "PS3.3 A.35.4"))


def _check_content(ds: Dataset, add) -> None:
    if _s(ds, "ValueType") != "CONTAINER":
        add(Finding(ERROR, "sr.root-value-type", "root content item Value Type must be CONTAINER",
                    "PS3.3 C.17.3; TID 2010 row 1"))
    titles = ds.get("ConceptNameCodeSequence")
    if not titles or len(titles) != 1:
        add(Finding(ERROR, "sr.title", "Concept Name Code Sequence (document title) must have exactly one item",
                    "PS3.3 C.17.3; TID 2010 row 1"))
    else:
        t = titles[0]
        code = (_s(t, "CodeValue"), _s(t, "CodingSchemeDesignator"))
        if code != MANIFEST_TITLE[:2]:
            in_cid = code[1] == "DCM" and code[0] in _CID_7010
            add(Finding(ERROR, "xdsi.title", f"document title is ({code[0]}, {code[1]}), an XDS-I.b manifest "
                        "is (113030, DCM, \"Manifest\")" + ("" if in_cid else "; not a CID 7010 title either"),
                        "RAD TF-3 4.68.4.1.2.2; CID 7010"))
    continuity = _s(ds, "ContinuityOfContent")
    if continuity not in ("SEPARATE", "CONTINUOUS"):
        add(Finding(ERROR, "sr.continuity", "Continuity Of Content must be SEPARATE or CONTINUOUS (Type 1 for "
                    "CONTAINER)", "PS3.3 C.17.3"))
    elif continuity != "SEPARATE":
        add(Finding(WARNING, "xdsi.continuity", "manifest references are independent items; SEPARATE expected",
                    "PS3.3 C.18.8.1.1; TID 2010"))
    templates = ds.get("ContentTemplateSequence")
    if not templates:
        add(Finding(WARNING, "sr.template", "Content Template Sequence (DCMR / 2010) absent", "PS3.3 C.17.3"))
    elif (_s(templates[0], "MappingResource"), _s(templates[0], "TemplateIdentifier")) != ("DCMR", "2010"):
        add(Finding(ERROR, "sr.template", "Content Template must be DCMR / 2010", "PS3.3 A.35.4; TID 2010"))

    items = ds.get("ContentSequence")
    if not items:
        add(Finding(ERROR, "sr.no-content", "Content Sequence is empty: a manifest references at least one "
                    "object", "TID 2010 rows 6-8"))
        return
    for i, item in enumerate(items):
        path = f"ContentSequence[{i}]"
        rel, vt = _s(item, "RelationshipType"), _s(item, "ValueType")
        if vt in _REFERENCE_VALUE_TYPES:
            if rel != "CONTAINS":
                add(Finding(ERROR, "sr.relationship", f"{vt} reference must be related by CONTAINS, not {rel!r}",
                            "TID 2010", path))
            refs = item.get("ReferencedSOPSequence")
            if not refs or len(refs) != 1:
                add(Finding(ERROR, "sr.reference", "Referenced SOP Sequence must hold exactly one item",
                            "PS3.3 C.18.3", path))
            else:
                _uid(refs[0], "ReferencedSOPClassUID", "PS3.3 C.18.3", add, path)
                _uid(refs[0], "ReferencedSOPInstanceUID", "PS3.3 C.18.3", add, path)
        elif vt == "TEXT":
            name = item.get("ConceptNameCodeSequence")
            if rel != "CONTAINS" or not name or _s(name[0], "CodeValue") != "113012":
                add(Finding(ERROR, "sr.text", "the only TEXT item allowed is CONTAINS (113012, DCM, "
                            "\"Key Object Description\")", "TID 2010 row 4", path))
        elif rel in ("HAS OBS CONTEXT", "HAS CONCEPT MOD"):
            continue  # TID 1002 observer context / TID 1204 language: allowed, not checked further
        else:
            add(Finding(ERROR, "sr.item", f"content item {rel!r} {vt!r} is not allowed in TID 2010",
                        "PS3.3 A.35.4.3; TID 2010", path))


def _check_evidence(ds: Dataset, add, expected_location_uid: str | None) -> None:
    evidence = ds.get("CurrentRequestedProcedureEvidenceSequence")
    if not evidence:
        add(Finding(ERROR, "evidence.missing", "Current Requested Procedure Evidence Sequence is required and "
                    "must list every referenced instance", "PS3.3 C.17.6.2; RAD TF-3 4.68.4.1.2.2"))
        return
    in_evidence: dict[str, str] = {}
    own_study = _s(ds, "StudyInstanceUID")
    for s_i, study in enumerate(evidence):
        s_path = f"CurrentRequestedProcedureEvidenceSequence[{s_i}]"
        study_uid = _uid(study, "StudyInstanceUID", "PS3.3 C.17.2.3", add, s_path)
        if study_uid and own_study and study_uid != own_study:
            add(Finding(WARNING, "xdsi.other-study", f"evidence study {study_uid} differs from the manifest's own "
                        "Study Instance UID", "RAD TF-3 4.68.4.1.2.2", s_path))
        series_seq = study.get("ReferencedSeriesSequence")
        if not series_seq:
            add(Finding(ERROR, "evidence.no-series", "Referenced Series Sequence is empty", "PS3.3 C.17.2.3",
                        s_path))
            continue
        for se_i, series in enumerate(series_seq):
            se_path = f"{s_path}.ReferencedSeriesSequence[{se_i}]"
            _uid(series, "SeriesInstanceUID", "PS3.3 C.17.2.3", add, se_path)
            if not _s(series, "RetrieveAETitle"):
                add(Finding(ERROR, "xdsi.no-retrieve-ae", "Retrieve AE Title is required on every referenced "
                            "series of an XDS-I.b manifest", "RAD TF-3 4.68.4.1.2.2", se_path))
            location = _s(series, "RetrieveLocationUID")
            if not location:
                add(Finding(ERROR, "xdsi.no-retrieve-location", "Retrieve Location UID (the Imaging Document "
                            "Source repositoryUniqueId) is required on every referenced series",
                            "RAD TF-3 4.68.4.1.2.2; RAD TF-3 4.69", se_path))
            elif not is_dicom_uid(location):
                add(Finding(ERROR, "xdsi.bad-retrieve-location", f"Retrieve Location UID {location!r} is not an "
                            "OID", "PS3.5 9.1", se_path))
            elif expected_location_uid and location != expected_location_uid:
                add(Finding(ERROR, "xdsi.wrong-retrieve-location", f"Retrieve Location UID is {location}, "
                            f"expected {expected_location_uid}", "RAD TF-3 4.68.4.1.2.2", se_path))
            url = _s(series, "RetrieveURL")
            if url and not url.lower().startswith(("http://", "https://")):
                add(Finding(WARNING, "xdsi.retrieve-url", f"Retrieve URL {url!r} is not an http(s) URL",
                            "PS3.3 C.17.2.3", se_path))
            sops = series.get("ReferencedSOPSequence")
            if not sops:
                add(Finding(ERROR, "evidence.no-instances", "Referenced SOP Sequence is empty", "PS3.3 C.17.2.3",
                            se_path))
                continue
            for sop_i, sop in enumerate(sops):
                sop_path = f"{se_path}.ReferencedSOPSequence[{sop_i}]"
                _uid(sop, "ReferencedSOPClassUID", "PS3.3 C.17.2.3", add, sop_path)
                inst = _uid(sop, "ReferencedSOPInstanceUID", "PS3.3 C.17.2.3", add, sop_path)
                if inst:
                    if inst in in_evidence:
                        add(Finding(WARNING, "evidence.duplicate", f"instance {inst} listed twice",
                                    "PS3.3 C.17.2.3", sop_path))
                    in_evidence[inst] = sop_path

    referenced: set[str] = set()
    for i, item in enumerate(ds.get("ContentSequence") or []):
        if _s(item, "ValueType") not in _REFERENCE_VALUE_TYPES:
            continue
        for ref in item.get("ReferencedSOPSequence") or []:
            inst = _s(ref, "ReferencedSOPInstanceUID")
            if not inst:
                continue
            referenced.add(inst)
            if inst not in in_evidence:
                add(Finding(ERROR, "evidence.incomplete", f"instance {inst} is referenced in the content tree but "
                            "not in the Current Requested Procedure Evidence Sequence", "PS3.3 C.17.6.2",
                            f"ContentSequence[{i}]"))
    for inst, path in in_evidence.items():
        if referenced and inst not in referenced:
            add(Finding(WARNING, "xdsi.unlisted-in-content", f"instance {inst} is in the evidence but not "
                        "referenced by the content tree", "TID 2010; RAD TF-3 4.68.4.1.2.2", path))


# --- helpers ---------------------------------------------------------------------------------

def _s(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip()


def _uid(ds: Dataset, keyword: str, rule: str, add, path: str = "") -> str:
    value = _s(ds, keyword)
    where = f"{path}.{keyword}" if path else keyword
    if not value:
        add(Finding(ERROR, f"uid.missing.{keyword}", f"{keyword} is required", rule, where))
    elif not is_dicom_uid(value):
        add(Finding(ERROR, f"uid.invalid.{keyword}", f"{value!r} is not a valid UID (PS3.5 9.1)", rule, where))
    return value
