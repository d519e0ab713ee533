"""The Imaging Document Source's access gate: every retrieval request passes here before any PACS call.

One module for RAD-69 (RAD TF-3 4.69), RAD-55 (RAD TF-3 4.55, WADO-URI) and later DICOMweb: the
study / series / SOP Instance UIDs and the transfer syntax UIDs a request names are checked against
DICOM PS3.5 §9.1 (:func:`xds_core.identifiers.is_dicom_uid`: digits and dots, at least two
components, no leading zero in a component, at most 64 characters) and come out as typed, checked
requests - or as the findings, all of them (not only the first), for the caller to answer with its
own protocol's error:

* RAD-69: the DocumentRequest is not attempted; a RegistryError ``XDSDocumentUniqueIdError`` with
  ``location`` = the DocumentUniqueId as received (ITI TF-3 Table 4.2.4.1-2; RAD TF-3 4.69.5 via
  Gazelle RAD69-016), PartialSuccess or Failure overall (ITI TF-2b 3.43.4.2.3);
* RAD-55: HTTP 400 Bad Request (PS3.18 §8.5.3 / RFC 7231 §6.5.1: the request is malformed).

The published-only rule of the access-control issue belongs here too, next to the UID rule.

Defence in depth: :func:`pacs_path_segment` is what puts a UID into a PACS URL path; it raises
:class:`NotADicomUid` for anything else and percent-encodes what it returns, so a value that somehow
skipped the gate still cannot carry ``?``, ``#``, ``/`` or ``..`` to the PACS.

Nothing here logs: UIDs can identify a patient's study (no patient data in logs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import quote

from xds_core.identifiers import MAX_DICOM_UID_LENGTH, is_dicom_uid


class UidRole(StrEnum):
    """Which UID of a request a finding is about (named as RAD-69 / WADO-URI name them)."""

    STUDY = "studyInstanceUID"
    SERIES = "seriesInstanceUID"
    SOP_INSTANCE = "DocumentUniqueId"  # = SOP Instance UID (RAD TF-3 4.69.4.1.2); WADO-URI objectUID
    TRANSFER_SYNTAX = "TransferSyntaxUID"


@dataclass(frozen=True, slots=True)
class UidFinding:
    """One UID of a request that is not a DICOM UID, and why (PS3.5 §9.1)."""

    role: UidRole
    value: str  # as received
    reason: str

    def __str__(self) -> str:
        return f"{self.role.value} {self.value!r} is not a DICOM UID (PS3.5 9.1: {self.reason})"


class NotADicomUid(ValueError):
    """A value that is not a DICOM UID was about to go into a PACS URL or request."""


def uid_problem(value: str) -> str | None:
    """Why ``value`` is not a DICOM UID (PS3.5 §9.1), or None when it is one."""
    if is_dicom_uid(value):
        return None
    if not value:
        return "empty"
    if len(value) > MAX_DICOM_UID_LENGTH:
        return f"{len(value)} characters, at most {MAX_DICOM_UID_LENGTH}"
    if any(c not in "0123456789." for c in value):  # ASCII digits only: '١' is not a UID digit
        return "only the digits 0-9 and '.' are allowed"
    components = value.split(".")
    if any(not c for c in components):
        return "empty component"
    if len(components) < 2:
        return "at least two components"
    return "a component has a leading zero"


def _finding(role: UidRole, value: str) -> UidFinding | None:
    reason = uid_problem(value.strip())
    return None if reason is None else UidFinding(role, value, reason)


def pacs_path_segment(uid: str) -> str:
    """``uid`` as one segment of a PACS URL path (WADO-RS / QIDO-RS, PS3.18 §10.4.1 / §10.6).

    Raises :class:`NotADicomUid` for anything but a DICOM UID (PS3.5 §9.1); the result is
    percent-encoded with nothing kept (``quote(safe="")``), which leaves a DICOM UID as it is.
    """
    if not is_dicom_uid(uid):
        raise NotADicomUid(f"{uid!r} is not a DICOM UID (PS3.5 9.1)")
    return quote(uid, safe="")


def require_uids(uids: Iterable[str]) -> None:
    """Raise :class:`NotADicomUid` for the first of ``uids`` that is not a DICOM UID (DIMSE keys, QIDO values)."""
    for uid in uids:
        if not is_dicom_uid(uid):
            raise NotADicomUid(f"{uid!r} is not a DICOM UID (PS3.5 9.1)")


# --- checked requests -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CheckedInstance:
    """Study / series / SOP Instance UIDs that passed the gate (surrounding XML/URL whitespace removed)."""

    study_uid: str
    series_uid: str
    sop_uid: str


@dataclass(frozen=True, slots=True)
class CheckedSeries:
    """A series request (one WADO-RS / C-GET / C-MOVE per series) whose UIDs passed the gate."""

    study_uid: str
    series_uid: str
    sop_uids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DocumentAccess:
    """One RAD-69 DocumentRequest after the gate: ``checked`` or its ``findings`` (never both)."""

    index: int  # position in the request (the answer keeps the request's order)
    document_unique_id: str  # as received: the RegistryError location (RAD69-016)
    checked: CheckedInstance | None
    findings: tuple[UidFinding, ...] = ()


@dataclass(frozen=True, slots=True)
class TransferSyntaxAccess:
    """A request's TransferSyntaxUIDList after the gate: the UIDs in order, and the values refused."""

    uids: tuple[str, ...]
    findings: tuple[UidFinding, ...] = ()


@dataclass(slots=True)
class _SeriesMemo:
    """(study, series) pairs already judged: 500 instances of one series cost 502 checks, not 1500."""

    judged: dict[tuple[str, str], tuple[UidFinding, ...]] = field(default_factory=dict)

    def findings(self, study_uid: str, series_uid: str) -> tuple[UidFinding, ...]:
        key = (study_uid, series_uid)
        found = self.judged.get(key)
        if found is None:
            found = tuple(f for f in (_finding(UidRole.STUDY, study_uid), _finding(UidRole.SERIES, series_uid)) if f)
            self.judged[key] = found
        return found


def check_documents(documents: Sequence[tuple[str, str, str]]) -> list[DocumentAccess]:
    """RAD-69: each ``(studyInstanceUID, seriesInstanceUID, DocumentUniqueId)`` -> its :class:`DocumentAccess`.

    Every UID of every DocumentRequest is judged; each document gets all its findings (RAD TF-3 4.69.5:
    one RegistryError per document not returned, its location = the DocumentUniqueId).
    """
    memo = _SeriesMemo()
    out: list[DocumentAccess] = []
    for index, (study_uid, series_uid, sop_uid) in enumerate(documents):
        study, series, sop = study_uid.strip(), series_uid.strip(), sop_uid.strip()
        findings = (*memo.findings(study, series), *((f,) if (f := _finding(UidRole.SOP_INSTANCE, sop)) else ()))
        if findings:
            out.append(DocumentAccess(index, sop_uid, None, findings))
        else:
            out.append(DocumentAccess(index, sop_uid, CheckedInstance(study, series, sop)))
    return out


def check_transfer_syntaxes(uids: Iterable[str]) -> TransferSyntaxAccess:
    """A TransferSyntaxUIDList (RAD TF-3 4.69.4.1.2, in preference order) or a WADO-URI ``transferSyntax``:
    the DICOM UIDs, first occurrence each, in order; every other value a finding (never sent on)."""
    kept: dict[str, None] = {}
    findings: list[UidFinding] = []
    for value in uids:
        uid = value.strip()
        if (finding := _finding(UidRole.TRANSFER_SYNTAX, value)) is not None:
            findings.append(finding)
        else:
            kept.setdefault(uid)
    return TransferSyntaxAccess(tuple(kept), tuple(findings))


def check_instance(study_uid: str, series_uid: str, sop_uid: str) -> CheckedInstance | list[UidFinding]:
    """RAD-55 (WADO-URI studyUID / seriesUID / objectUID, PS3.18 §8.2.2-§8.2.4): the checked
    instance, or every finding."""
    findings = [f for f in (_finding(UidRole.STUDY, study_uid), _finding(UidRole.SERIES, series_uid),
                            _finding(UidRole.SOP_INSTANCE, sop_uid)) if f is not None]
    if findings:
        return findings
    return CheckedInstance(study_uid.strip(), series_uid.strip(), sop_uid.strip())


def check_series(study_uid: str, series_uid: str, sop_uids: Iterable[str]) -> CheckedSeries | list[UidFinding]:
    """A series request before anything is sent ahead to the PACS (the RAD-69 first series): the
    checked series (duplicates dropped, order kept), or every finding."""
    findings = list(_SeriesMemo().findings(study_uid.strip(), series_uid.strip()))
    sops: dict[str, None] = {}
    for value in sop_uids:
        if (finding := _finding(UidRole.SOP_INSTANCE, value)) is not None:
            findings.append(finding)
        else:
            sops.setdefault(value.strip())
    if findings:
        return findings
    return CheckedSeries(study_uid.strip(), series_uid.strip(), tuple(sops))


def describe(findings: Iterable[UidFinding]) -> str:
    """The findings as one codeContext / plain-text message."""
    return "; ".join(str(f) for f in findings)
