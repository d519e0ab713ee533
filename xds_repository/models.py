"""What the Document Repository keeps about each stored document.

The document bytes live in a Django storage (``STORAGES["xds_documents"]``,
content-addressed files by default, see :mod:`xds_repository.storage`); this
table records which document uniqueId maps to which stored content, and
whether the ITI-42 registration that must follow the store has succeeded.

A row is written in state ``pending`` *before* the bytes are stored and set to
``registered`` only after the Document Registry accepted the ITI-42 (ITI TF-2
3.41.4.1.3: the repository forwards the metadata; a document the registry never
accepted must not stay behind, and one it may have accepted must not go).
:mod:`xds_repository.reconcile` settles the pending leftovers of a crash or of an
ITI-42 whose outcome is unknown.
"""

from __future__ import annotations

from django.db import models


class StoredDocument(models.Model):
    """One document this repository stores (one DocumentEntry of one ITI-41 / RAD-68)."""

    class State(models.TextChoices):
        PENDING = "pending", "pending registration"
        REGISTERED = "registered", "registered"

    #: XDSDocumentEntry.uniqueId (ITI TF-3 4.2.3.2.26); not unique here: a rejected
    #: resubmission of a known uniqueId briefly has its own pending row.
    unique_id = models.CharField(max_length=256, db_index=True)
    #: XDSDocumentEntry.mimeType, returned in ITI-43 DocumentResponse/mimeType.
    mime_type = models.CharField(max_length=255)
    #: SHA-1 of the content, lowercase hex (ITI TF-3 4.2.3.2.11).
    hash = models.CharField(max_length=40, db_index=True)
    size = models.BigIntegerField()
    #: Alias in settings.STORAGES and the name of the content in that storage.
    storage_alias = models.CharField(max_length=64, default="xds_documents")
    storage_name = models.CharField(max_length=255, db_index=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING, db_index=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    #: The request that stored it, ``host/boot-id/pid/start-ticks/<request marker>`` (records.InFlight;
    #: without the marker part when the store keeps no local files): lets reconcile settle the pending rows
    #: of a dead process, or of a request that is over, at once, without a grace period.
    owner = models.CharField(max_length=200, blank=True, default="")
    registered = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        verbose_name = "stored document"

    def __str__(self) -> str:
        return f"{self.unique_id} ({self.state}, {self.size} bytes)"
