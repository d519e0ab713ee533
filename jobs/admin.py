"""Admin: the job queue as operators see it (by state and kind, search by key), read-only, with two
actions: "retry now" (failed / dead jobs) and "cancel" (jobs still waiting to run)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from jobs import api
from jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "key", "state", "attempts", "max_attempts", "run_after", "last_error",
                    "locked_by", "updated_at"]
    list_filter = ["state", "kind"]
    search_fields = ["key"]
    readonly_fields = [f.name for f in Job._meta.fields]
    date_hierarchy = "created_at"
    actions = ["retry_now", "cancel"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are enqueued by the actors, not typed in

    @admin.action(description="Retry now (failed or dead jobs)", permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        retried, skipped = api.retry_now(queryset.values_list("pk", flat=True))
        self.message_user(request, f"{retried} job(s) queued to run now")
        if skipped:
            self.message_user(request, f"{skipped} job(s) not retried: another job with the same kind and key is "
                                       "already queued or running", messages.WARNING)

    @admin.action(description="Cancel (jobs not yet running)", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        count = api.cancel(queryset.values_list("pk", flat=True), reason=f"by {request.user.get_username()} (admin)")
        self.message_user(request, f"{count} job(s) cancelled")
