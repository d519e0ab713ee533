"""Local DICOM Patient ID -> affinity-domain patientId (XDS-I.b: Sequoia/RSNA test ids_2018-4801a).

A department's DICOM Patient ID (0010,0020) is not the id of the XDS affinity domain. Two ways to
map it, tried in this order:

1. the **table** (:class:`imaging_source.models.PatientMapping`, kept in the admin and by
   ``manage.py xds_patient_map``): exact (id, issuer) row, then the row with an empty issuer;
2. **authority rewrite rules** (setting ``XDS_IMAGING_PATIENT_REWRITE``): ``issuer=>OID`` keeps
   the local id and puts it under the affinity domain's assigning authority; issuer ``*`` matches
   any (also an empty) Issuer of Patient ID.

No match -> :class:`UnmappedPatient`; publication then queues the study for reconciliation and
never sends it to the repository.
"""

from __future__ import annotations

from dataclasses import dataclass

from xds_core.identifiers import is_iso_oid
from xds_core.metadata.values import CX


class UnmappedPatient(LookupError):
    """No affinity-domain id for a local patient."""

    def __init__(self, patient_id: str, issuer: str | None) -> None:
        self.patient_id = patient_id
        self.issuer = issuer or ""
        issuer_text = f" (issuer {issuer})" if issuer else ""
        super().__init__(f"no affinity-domain patient id for DICOM Patient ID {patient_id!r}{issuer_text}: "
                         "add a patient mapping (admin or `manage.py xds_patient_map`) or an authority "
                         "rewrite rule (XDS_IMAGING_PATIENT_REWRITE)")


@dataclass(frozen=True)
class RewriteRule:
    issuer: str  # "*" = any issuer, "" = no issuer
    authority_oid: str

    def matches(self, issuer: str | None) -> bool:
        return self.issuer == "*" or self.issuer == (issuer or "")


def parse_rewrite_rules(text: str) -> list[RewriteRule]:
    """``issuer=>OID, ...`` -> rules; raises ValueError naming the bad rule."""
    rules: list[RewriteRule] = []
    for raw in text.split(","):
        raw = raw.strip()
        if not raw:
            continue
        issuer, sep, oid = raw.partition("=>")
        issuer, oid = issuer.strip(), oid.strip()
        if not sep or not is_iso_oid(oid):
            raise ValueError(f"bad patient rewrite rule {raw!r}: expected issuer=>OID (issuer may be *)")
        rules.append(RewriteRule(issuer, oid))
    return rules


def check_affinity_patient_id(value: str) -> list[str]:
    """Format findings for an affinity-domain patient id (CX ``id^^^&OID&ISO``)."""
    return CX.problems(value)


def map_patient(patient_id: str, issuer: str | None, rules: list[RewriteRule]) -> str:
    """The affinity-domain patientId (CX) for a local DICOM patient, or raise UnmappedPatient."""
    from imaging_source.models import PatientMapping

    if not patient_id:
        raise UnmappedPatient(patient_id, issuer)
    rows = {m.local_issuer: m.affinity_patient_id
            for m in PatientMapping.objects.filter(local_patient_id=patient_id, local_issuer__in=[issuer or "", ""])}
    if (issuer or "") in rows:
        return rows[issuer or ""]
    if "" in rows:
        return rows[""]
    for rule in rules:
        if rule.matches(issuer):
            return str(CX(patient_id, rule.authority_oid))
    raise UnmappedPatient(patient_id, issuer)


def source_patient_id(patient_id: str, issuer: str | None, default_authority: str) -> str:
    """sourcePatientId (CX): the local DICOM Patient ID with its issuer (ITI TF-3 4.2.3.2.23).

    An OID issuer is used as the assigning authority; otherwise the configured local authority
    OID (``XDS_IMAGING_SOURCE_PATIENT_AUTHORITY``); a non-OID issuer without that setting becomes
    the CX.4 namespace id.
    """
    if issuer and is_iso_oid(issuer):  # CX.4 &OID&ISO needs an ISO OID (ITI TF-3 4.2.3.2.23)
        return f"{patient_id}^^^&{issuer}&ISO"
    if default_authority:
        return f"{patient_id}^^^&{default_authority}&ISO"
    if issuer:
        return f"{patient_id}^^^{issuer}"
    return patient_id


def set_mapping(patient_id: str, affinity_patient_id: str, *, issuer: str = "", note: str | None = None) -> bool:
    """Create or update a table mapping; True when created. Raises ValueError on a malformed CX.

    ``note=None`` keeps an existing row's note.
    """
    from imaging_source.models import PatientMapping

    problems = check_affinity_patient_id(affinity_patient_id)
    if problems:
        raise ValueError(f"{affinity_patient_id!r}: " + "; ".join(problems))
    if not patient_id:
        raise ValueError("the local Patient ID is empty")
    _, created = PatientMapping.objects.update_or_create(
        local_patient_id=patient_id, local_issuer=issuer,
        defaults={"affinity_patient_id": affinity_patient_id, **({"note": note} if note is not None else {})})
    return created
