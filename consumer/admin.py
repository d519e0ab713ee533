"""Admin of the consumer's endpoint directory (validated like the loader: OID unique_id, http(s) url)."""

from __future__ import annotations

from django.contrib import admin

from consumer.models import Endpoint


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = ("kind", "unique_id", "url", "description")
    list_filter = ("kind",)
    search_fields = ("unique_id", "url", "description")
