"""Read-only admin view of the stored documents (issue #4 item 5).

Rows change only through the IHE transactions and reconcile; the admin shows
them (size, hash, mime type, registration state) and never edits them.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from xds_repository.models import StoredDocument


@admin.register(StoredDocument)
class StoredDocumentAdmin(admin.ModelAdmin):
    list_display = ("unique_id", "mime_type", "size", "hash", "state", "created", "registered")
    list_filter = ("state", "mime_type")
    search_fields = ("unique_id", "hash")
    date_hierarchy = "created"
    readonly_fields = ("unique_id", "mime_type", "hash", "size", "storage_alias", "storage_name", "state",
                       "created", "registered")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: StoredDocument | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: StoredDocument | None = None) -> bool:
        return False
