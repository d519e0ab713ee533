from django.contrib import admin

from atna.models import NodeIdentity


@admin.register(NodeIdentity)
class NodeIdentityAdmin(admin.ModelAdmin):
    list_display = ("name", "roles", "cert_subject", "cert_sha256", "ae_title", "address", "enabled")
    list_filter = ("enabled",)
    search_fields = ("name", "cert_subject", "cert_sha256", "ae_title", "description")
