"""Who may use the portal: a user belongs to one hospital of the affinity domain."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

site_key_validator = RegexValidator(r"^[a-z0-9][a-z0-9-]{0,62}$", "lower-case letters, digits and '-'")


class Hospital(models.Model):
    """A hospital (site) of the affinity domain; ``key`` is the site key its node runs with (``XDS_SITE_KEY``)."""

    key = models.CharField(max_length=63, unique=True, validators=[site_key_validator],
                           help_text="the site key of the hospital's node, e.g. hospital-b")
    name = models.CharField(max_length=200)

    class Meta:
        ordering = ["name", "key"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """The hospital a user works for: a clinician imports only into that hospital's PACS."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership")
    hospital = models.ForeignKey(Hospital, on_delete=models.PROTECT, related_name="members")

    class Meta:
        ordering = ["hospital__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} @ {self.hospital}"


class ManifestCache(models.Model):
    """An imaging manifest (KOS) this node has read for the portal: its DocumentEntry's metadata and the
    manifest's study -> series -> instances, so a later view runs no ITI-43 again.

    A document's content never changes for its uniqueId (ITI TF-3 4.2.3.2.26: a new version is a new
    document), so the structure is kept for good; only the entry's availabilityStatus can change
    (deprecated by a replacement), which ``checked_at`` says when it was last asked (ITI-18)."""

    repository_uid = models.CharField(max_length=64, help_text="repositoryUniqueId of the manifest's entry")
    document_uid = models.CharField(max_length=64, help_text="uniqueId of the manifest's entry (the KOS's "
                                                             "SOP Instance UID)")
    patient_id = models.CharField(max_length=256, help_text="the entry's affinity-domain patientId (CX)")
    status = models.CharField(max_length=100, blank=True, default="", help_text="availabilityStatus")
    title = models.CharField(max_length=256, blank=True, default="")
    creation_time = models.CharField(max_length=32, blank=True, default="")
    service_start_time = models.CharField(max_length=32, blank=True, default="")
    service_stop_time = models.CharField(max_length=32, blank=True, default="")
    study_uids = models.JSONField(default=list, help_text="Study Instance UIDs the manifest references")
    instance_count = models.PositiveIntegerField(default=0)
    entry = models.JSONField(default=dict, help_text="the entry as the consumer's FoundManifest")
    structure = models.JSONField(default=list, help_text="studies -> series -> instances of the KOS evidence")
    fetched_at = models.DateTimeField(help_text="when the manifest was retrieved (ITI-43)")
    checked_at = models.DateTimeField(help_text="when the entry's status was last asked (ITI-18)")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["repository_uid", "document_uid"],
                                               name="portal_manifest_cache_unique")]
        ordering = ["-fetched_at", "id"]

    def __str__(self) -> str:
        return f"manifest {self.document_uid} @ {self.repository_uid}"


class ThumbnailCache(models.Model):
    """One series' thumbnail, rendered from one instance (a middle one), kept by its SOP Instance UID: an
    instance's pixels never change for its UID (PS3.3 C.12.1.1.1), so neither does its thumbnail."""

    sop_instance_uid = models.CharField(max_length=64, unique=True)
    series_instance_uid = models.CharField(max_length=64, db_index=True)
    png = models.BinaryField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    modality = models.CharField(max_length=16, blank=True, default="")
    series_description = models.CharField(max_length=128, blank=True, default="")
    series_number = models.IntegerField(null=True, blank=True)
    rendered_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-rendered_at", "id"]

    def __str__(self) -> str:
        return f"thumbnail of {self.sop_instance_uid}"
