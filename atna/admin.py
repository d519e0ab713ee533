from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse

from atna.models import AuditRecord, NodeIdentity
from xds_core import audit


@admin.register(NodeIdentity)
class NodeIdentityAdmin(admin.ModelAdmin):
    list_display = ("name", "roles", "cert_subject", "cert_sha256", "ae_title", "address", "enabled")
    list_filter = ("enabled",)
    search_fields = ("name", "cert_subject", "cert_sha256", "ae_title", "description")


# ---------------------------------------------------------------------------------- the audit trail


def patient_matches(term: str) -> Q:
    """A patient id as typed: the exact CX, or a bare id matching every CX with that id (ID^^^&OID&ISO)."""
    return Q(patient_id=term) | Q(patient_id__startswith=f"{term}^") if "^" not in term else Q(patient_id=term)


def _log_used(request: HttpRequest, description: str) -> None:
    """Audit Log Used (PS3.15 A.5.3.2): this user searched or read the trail (recorded through the seam)."""
    user = request.user
    who = audit.Participant(user.get_username(), request.META.get("REMOTE_ADDR", ""),
                            user_name=user.get_full_name() if hasattr(user, "get_full_name") else "")
    node = audit.this_node(request.build_absolute_uri(request.path))
    audit.record(lambda: audit.audit_log_used(who, description, node=node))


@admin.register(AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin):
    """The trail, read-only: records change only by the audit seam, the chainer and retention (atna.chain)."""

    list_display = ("event_time", "event_id", "action", "outcome", "transaction", "patient_id", "user_id",
                    "user_name", "chain_seq")
    list_filter = ("event_id", "outcome", "transaction", "action", ("event_time", admin.DateFieldListFilter))
    search_fields = ("patient_id", "user_id", "user_name")  # matched by get_search_results below
    date_hierarchy = "event_time"
    readonly_fields = [f.name for f in AuditRecord._meta.fields]
    show_full_result_count = False  # COUNT(*) over six years of records on every page is not needed

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[AuditRecord], search_term: str
                           ) -> tuple[QuerySet[AuditRecord], bool]:
        """Exact matches, which the indexes serve over six years of records: the patient's CX or its id part
        (``ID`` matches ``ID^^^&OID&ISO``), the requestor's UserID or UserName."""
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(patient_matches(term) | Q(user_id=term) | Q(user_name=term)), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        query = "; ".join(f"{k}={v}" for k, v in sorted(request.GET.items()) if k not in ("p", "o"))
        _log_used(request, f"admin list {query}" if query else "admin list")
        return super().changelist_view(request, extra_context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        _log_used(request, f"admin record id={object_id[:40]}")
        return super().change_view(request, object_id, form_url, extra_context)
