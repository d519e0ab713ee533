"""Admin of the consumer's endpoint directory (validated like the loader: OID unique_id, http(s) url)."""

from __future__ import annotations

from django.contrib import admin

from consumer.models import Endpoint, PriorImport


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = ("kind", "unique_id", "url", "description")
    list_filter = ("kind",)
    search_fields = ("unique_id", "url", "description")


@admin.register(PriorImport)
class PriorImportAdmin(admin.ModelAdmin):
    """What predictive prefetch imported (read-only: the job queue's admin retries a failed import)."""

    list_display = ("manifest_unique_id", "state", "present", "requested", "trigger", "updated_at")
    list_filter = ("state",)
    search_fields = ("manifest_unique_id", "trigger")
    readonly_fields = [f.name for f in PriorImport._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False
