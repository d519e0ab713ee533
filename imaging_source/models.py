"""Imaging Document Source state: publications (RAD-68), patient-id mapping, reconciliation queue.

The Imaging Document Source talks to the repository only through RAD-68 over SOAP; these tables
record what *it* sent and what it still has to send. They never hold another actor's data.
"""

from __future__ import annotations

from django.db import models


class PatientMapping(models.Model):
    """Local DICOM Patient ID (+ issuer) -> affinity-domain patient id (CX).

    Kept in the admin and by ``manage.py xds_patient_map``. ``local_issuer`` empty matches a study
    whose Issuer of Patient ID is empty *or* any issuer not listed in its own row (see
    :mod:`imaging_source.patient_mapping`).
    """

    local_patient_id = models.CharField(max_length=64, help_text="DICOM Patient ID (0010,0020)")
    local_issuer = models.CharField(max_length=64, blank=True, default="",
                                    help_text="DICOM Issuer of Patient ID (0010,0021); empty = any")
    affinity_patient_id = models.CharField(
        max_length=256, help_text="XDS patientId in the affinity domain, CX id^^^&OID&ISO")
    note = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["local_patient_id", "local_issuer"],
                                               name="imaging_source_patient_mapping_unique")]
        ordering = ["local_patient_id", "local_issuer"]

    def __str__(self) -> str:
        issuer = f" ({self.local_issuer})" if self.local_issuer else ""
        return f"{self.local_patient_id}{issuer} -> {self.affinity_patient_id}"


class Publication(models.Model):
    """One RAD-68 submission of a study's manifest (original or replacement)."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending"  # recorded before sending; stays if the process dies mid-send
        PUBLISHED = "published", "published"  # repository answered Success
        FAILED = "failed", "failed"  # Failure/PartialSuccess, SOAP fault or transport error
        #: Not sent, on purpose: ``skip_reason`` says why (a study this site imported; no manifest, no KOS).
        SKIPPED = "skipped", "skipped"

    study_instance_uid = models.CharField(max_length=64, db_index=True)
    kos_sop_instance_uid = models.CharField(max_length=64, unique=True, null=True, blank=True,
                                            help_text="= DocumentEntry.uniqueId (RAD TF-3 4.68); none when skipped")
    entry_uuid = models.CharField(max_length=64, unique=True, null=True, blank=True,
                                  help_text="DocumentEntry entryUUID we assigned (urn:uuid:...); none when skipped")
    submission_set_unique_id = models.CharField(max_length=64)
    patient_id = models.CharField(max_length=256, help_text="affinity-domain patientId (CX)")
    source_patient_id = models.CharField(max_length=256)
    accession_number = models.CharField(max_length=64, blank=True, default="")
    instance_set_hash = models.CharField(max_length=64, help_text="SHA-256 of the referenced instance set")
    instance_count = models.PositiveIntegerField(default=0)
    series_count = models.PositiveIntegerField(default=0)
    replaces = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="replaced_by",
                                 help_text="previous publication this one replaces (RPLC)")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    repository_url = models.CharField(max_length=500, blank=True, default="")
    response_status = models.CharField(max_length=200, blank=True, default="")
    errors = models.JSONField(default=list, blank=True,
                              help_text="RegistryErrors / fault / transport error: list of dicts")
    kos = models.BinaryField(help_text="the DICOM Part 10 manifest as sent")
    kos_size = models.PositiveIntegerField(default=0)
    kos_sha1 = models.CharField(max_length=40, blank=True, default="")
    trigger = models.CharField(max_length=32, blank=True, default="",
                               help_text="command / admin / mpps / stable / reconciliation")
    skip_reason = models.CharField(max_length=200, blank=True, default="",
                                   help_text="why a SKIPPED study was not sent (no patient data)")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["study_instance_uid", "status"])]
        # One send in flight per study: a second publisher of the same study fails to insert its
        # PENDING row instead of submitting a second original.
        constraints = [models.UniqueConstraint(
            fields=["study_instance_uid"], condition=models.Q(status="pending"),
            name="imaging_source_one_pending_publication_per_study")]

    def __str__(self) -> str:
        return f"{self.study_instance_uid} [{self.status}] {self.kos_sop_instance_uid}"

    @property
    def is_replacement(self) -> bool:
        return self.replaces_id is not None


class ReconciliationItem(models.Model):
    """A study that could not be published because its patient has no affinity-domain id.

    It never reaches the repository until resolved: the admin's "resolve and publish" action (or a
    later ``xds_publish`` once a mapping exists) publishes it and links the publication.
    """

    class Status(models.TextChoices):
        OPEN = "open", "open"
        RESOLVED = "resolved", "resolved"
        DISCARDED = "discarded", "discarded"

    study_instance_uid = models.CharField(max_length=64, db_index=True)
    local_patient_id = models.CharField(max_length=64)
    local_issuer = models.CharField(max_length=64, blank=True, default="")
    patient_name = models.CharField(max_length=200, blank=True, default="")
    accession_number = models.CharField(max_length=64, blank=True, default="")
    study_date = models.CharField(max_length=8, blank=True, default="")
    reason = models.TextField()
    study = models.JSONField(help_text="the StudyRef as found (used when the PACS cannot be asked again)")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    publication = models.ForeignKey(Publication, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="reconciliations")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(
            fields=["study_instance_uid"], condition=models.Q(status="open"),
            name="imaging_source_one_open_reconciliation_per_study")]

    def __str__(self) -> str:
        return f"{self.study_instance_uid} ({self.local_patient_id}) [{self.status}]"


class PerformedProcedureStep(models.Model):
    """A Modality Performed Procedure Step our MPPS SCP received (DICOM PS3.4 Annex F.7).

    Kept in the database (not in the listener's memory) so an N-SET after a listener restart, or sent to
    another listener process, finds its N-CREATE; the row lock serialises N-SETs of one step, and an N-SET
    to COMPLETED commits together with the publication jobs it queues.  The rules (status transitions,
    DIMSE statuses) are the SCP's, in :mod:`imaging_source.dicom.scp`; :mod:`imaging_source.mpps` stores.
    """

    sop_instance_uid = models.CharField(max_length=64, unique=True,
                                        help_text="Affected SOP Instance UID of the N-CREATE (PS3.5 9.1)")
    status = models.CharField(max_length=16, db_index=True,
                              help_text="Performed Procedure Step Status (0040,0252): IN PROGRESS, COMPLETED "
                                        "or DISCONTINUED")
    attributes = models.JSONField(help_text="the step's attributes as the DICOM JSON model (PS3.18 Annex F)")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"MPPS {self.sop_instance_uid} [{self.status}]"


# --- Requests from the DICOM engineer (imaging_source/dicom/): add a comment below -------------
