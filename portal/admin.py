from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from portal.models import Hospital, ManifestCache, Membership, ThumbnailCache


@admin.register(Hospital)
class HospitalAdmin(admin.ModelAdmin):
    list_display = ("name", "key")
    list_filter = ("members__user__is_active",)
    search_fields = ("name", "key")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "hospital")
    list_filter = ("hospital",)
    search_fields = ("user__username", "hospital__name")
    list_select_related = ("user", "hospital")


class MembershipInline(admin.StackedInline):
    model = Membership
    can_delete = False


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    inlines = [MembershipInline]
    list_display = (*UserAdmin.list_display, "hospital")
    list_filter = (*UserAdmin.list_filter, "membership__hospital")

    @admin.display(ordering="membership__hospital__name")
    def hospital(self, user) -> str:  # type: ignore[no-untyped-def]
        membership = getattr(user, "membership", None)
        return str(membership.hospital) if membership else "-"


@admin.register(ManifestCache)
class ManifestCacheAdmin(admin.ModelAdmin):
    list_display = ("document_uid", "repository_uid", "status", "instance_count", "fetched_at", "checked_at")
    list_filter = ("status", "repository_uid")
    search_fields = ("document_uid", "repository_uid", "patient_id")
    date_hierarchy = "fetched_at"


@admin.register(ThumbnailCache)
class ThumbnailCacheAdmin(admin.ModelAdmin):
    list_display = ("sop_instance_uid", "series_instance_uid", "modality", "width", "height", "rendered_at")
    list_filter = ("modality",)
    search_fields = ("sop_instance_uid", "series_instance_uid", "series_description")
    exclude = ("png",)
