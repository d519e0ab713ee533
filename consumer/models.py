"""The consumer's endpoint directory: which URL answers for which repositoryUniqueId / Retrieve Location UID.

A DocumentEntry names its repository only by ``repositoryUniqueId`` (ITI TF-3 4.2.3.2.18) and a KOS
names its Imaging Document Source only by the Retrieve Location UID (RAD TF-3 4.68.4.1.2.2); the
affinity domain publishes which web-services endpoint answers for each.  This directory holds that
mapping: ITI-43 Retrieve Document Set endpoints of Document Repositories (ITI TF-2b 3.43) and RAD-69
Retrieve Imaging Document Set endpoints of Imaging Document Sources (RAD TF-3 4.69).
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import models

from xds_core.identifiers import iso_oid_problems

#: http:// or https:// then a host; no whitespace anywhere (the web services are SOAP over HTTP).
_HTTP_URL = re.compile(r"https?://[^\s/?#]+[^\s]*")
MAX_URL_LENGTH = 500


class EndpointKind(models.TextChoices):
    """Which transaction the endpoint answers."""

    REPOSITORY = "repository", "Document Repository (ITI-43 Retrieve Document Set)"
    IMAGING_SOURCE = "imaging_source", "Imaging Document Source (RAD-69 Retrieve Imaging Document Set)"


def validate_endpoint_oid(value: str) -> None:
    """repositoryUniqueId (ITI TF-3 4.2.3.2.18) and Retrieve Location UID are ISO OIDs."""
    problems = iso_oid_problems(value, "unique_id")
    if problems:
        raise ValidationError("; ".join(problems))


def validate_http_url(value: str) -> None:
    if len(value) > MAX_URL_LENGTH or _HTTP_URL.fullmatch(value) is None:
        raise ValidationError(f"url {value!r} is not an http:// or https:// URL (at most {MAX_URL_LENGTH} "
                              "characters, no whitespace)")


class Endpoint(models.Model):
    kind = models.CharField(max_length=20, choices=EndpointKind.choices)
    unique_id = models.CharField(
        max_length=64, validators=[validate_endpoint_oid],
        help_text="repositoryUniqueId (repository) or Retrieve Location UID (imaging source): an OID")
    url = models.CharField(max_length=MAX_URL_LENGTH, validators=[validate_http_url])
    description = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "unique_id"], name="consumer_endpoint_kind_uid")]
        ordering = ["kind", "unique_id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.unique_id} -> {self.url}"


class PriorImportState(models.TextChoices):
    QUEUED = "queued", "Queued"
    IMPORTED = "imported", "Imported"
    PARTIAL = "partial", "Partly imported (retried)"
    FAILED = "failed", "Failed"


class PriorImport(models.Model):
    """A prior study imported into this site's PACS by predictive prefetch: one row per manifest, so that a
    manifest is imported once however many procedures of the patient follow.  No patient data: the job
    holds the ids; this row holds what an operator needs to see what was done."""

    manifest_unique_id = models.CharField(max_length=128, unique=True, help_text="the manifest's XDS uniqueId")
    study_instance_uids = models.JSONField(default=list)
    trigger = models.CharField(max_length=64, help_text="what asked for it, e.g. the MPPS SOP Instance UID")
    state = models.CharField(max_length=16, choices=PriorImportState.choices, default=PriorImportState.QUEUED)
    requested = models.PositiveIntegerField(default=0)
    present = models.PositiveIntegerField(default=0, help_text="instances in the PACS after the last attempt")
    detail = models.TextField(blank=True, default="", help_text="error codes of the last attempt")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"prior {self.manifest_unique_id} ({self.state})"
