"""Patient registry operations behind ITI-8 (and ``manage.py xds_patient``).

* add / update (ADT A01, A04, A05, A08): create the patient or refresh its demographics;
* merge (ADT A40, ITI TF-2a 3.8.4.1.3): the merged-away id (MRG-1) is marked ``merged_into`` the
  surviving id (PID-3) and becomes unknown for new submissions (XDSUnknownPatientId).  Its
  registry metadata is re-pointed to the surviving id -- both the ``patient_id`` columns and the
  patientId ExternalIdentifier value in the stored XML -- so queries by the surviving id find the
  documents (the TF leaves "re-point or keep" to the registry; re-pointing keeps queries complete
  and the one-patient-per-result rule true).  Ids previously merged into the merged-away id follow
  to the survivor.

Configuration (the affinity domain) is passed in; nothing here reads settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from xds_core.affinity_domain import AffinityDomain
from xds_core.metadata.values import CX
from xds_registry.models import Association, DocumentEntry, Folder, Patient, SubmissionSet
from xds_registry.stored_xml import patient_id_replaced_in_xml


class PatientFeedError(ValueError):
    """A feed request the registry refuses (bad id, foreign authority, unknown merge target)."""

    def __init__(self, message: str, *, code: str = "AE", hl7_error: str = "103", field: str = "") -> None:
        super().__init__(message)
        self.code = code              #: MSA-1 to answer: AE (error) or AR (reject)
        #: HL7 table 0357 code (101 required field missing, 103 table value not found, 204 unknown key)
        self.hl7_error = hl7_error
        self.field = field            #: segment^sequence, e.g. "PID^3"


@dataclass(frozen=True)
class Demographics:
    family_name: str = ""
    given_name: str = ""
    birth_date: str = ""
    sex: str = ""
    address: str = ""
    pid_segment: str = ""


def check_patient_id(patient_id: str, affinity_domain: AffinityDomain | None, field: str = "PID^3") -> None:
    problems = CX.problems(patient_id)
    if problems:
        raise PatientFeedError(f"patient id {patient_id!r}: {'; '.join(problems)}", hl7_error="102", field=field)
    if affinity_domain is not None and not affinity_domain.accepts_patient_id(patient_id):
        raise PatientFeedError(
            f"patient id {patient_id} is not of an assigning authority of this affinity domain "
            f"({', '.join(sorted(affinity_domain.assigning_authorities))})", hl7_error="103", field=field)


def add_or_update_patient(patient_id: str, demographics: Demographics | None = None, *,
                          affinity_domain: AffinityDomain | None = None) -> tuple[Patient, bool]:
    """Register (or update the demographics of) ``patient_id``; returns (patient, created)."""
    check_patient_id(patient_id, affinity_domain)
    d = demographics or Demographics()
    values = {k: v for k, v in d.__dict__.items() if v}
    with transaction.atomic():
        patient, created = Patient.objects.select_for_update().get_or_create(
            patient_id=patient_id,
            defaults={"assigning_authority": CX.from_str(patient_id).assigning_authority_oid, **values})
        if not created and values:
            for key, value in values.items():
                setattr(patient, key, value)
            patient.save()
    return patient, created


def merge_patients(surviving_id: str, merged_id: str, *, affinity_domain: AffinityDomain | None = None,
                   demographics: Demographics | None = None) -> int:
    """Merge ``merged_id`` into ``surviving_id`` (ADT A40); returns the number of re-pointed objects."""
    check_patient_id(surviving_id, affinity_domain, "PID^3")
    check_patient_id(merged_id, affinity_domain, "MRG^1")
    if surviving_id == merged_id:
        raise PatientFeedError("MRG-1 names the surviving patient itself", field="MRG^1")
    with transaction.atomic():
        survivor, _ = add_or_update_patient(surviving_id, demographics, affinity_domain=affinity_domain)
        merged = Patient.objects.select_for_update().filter(patient_id=merged_id).first()
        if merged is None:
            # ITI TF-2a 3.8.4.1.3: the merged id must be known; answer AE with "unknown key identifier".
            raise PatientFeedError(f"merged patient id {merged_id} is not known", hl7_error="204", field="MRG^1")
        if survivor.merged_into_id is not None:
            raise PatientFeedError(f"surviving patient id {surviving_id} was itself merged away", hl7_error="204",
                                   field="PID^3")
        merged.merged_into = survivor
        merged.save(update_fields=["merged_into", "updated"])
        Patient.objects.filter(merged_into=merged).update(merged_into=survivor)
        return repoint_registry_objects(merged_id, surviving_id)


def repoint_registry_objects(old: str, new: str) -> int:
    """Re-point every registry object of patient ``old`` to ``new`` (ITI TF-2a 3.8.4.1.3 merge).

    Rewrites the ``patient_id`` column and the patientId ExternalIdentifier value in the stored
    XML (:func:`~xds_registry.stored_xml.patient_id_replaced_in_xml`).  Returns the number of rows
    changed.  Must run inside the caller's transaction.
    """
    xml = patient_id_replaced_in_xml(old, new)
    changed = 0
    for model in (DocumentEntry, SubmissionSet, Folder):
        changed += model.objects.filter(patient_id=old).update(patient_id=new, xml=xml)
    Association.objects.filter(patient_id=old).update(patient_id=new)
    return changed
