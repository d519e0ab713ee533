"""Django admin of the Document Registry.

Registry objects (SubmissionSets, DocumentEntries, Folders, Associations) are READ-ONLY here:
they change only through IHE transactions (ITI-42 and the lifecycle it carries), so the admin
never bypasses validation, atomicity or the stored XML.  Patients may be added here; the add goes
through the same code as the ITI-8 feed (:func:`add_or_update_patient`), merges only through ITI-8
A40 or ``manage.py xds_patient merge``.  The affinity-domain configuration (``XDS_AFFINITY_DOMAIN_CODES``)
is shown on its own admin page (link on the Patient list).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html, format_html_join

from xds_core.affinity_domain import AffinityDomainConfigError, load_affinity_domain
from xds_registry import models as m
from xds_registry.patient_identity_feed.patients import Demographics, PatientFeedError, add_or_update_patient


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only: registry content changes only through transactions."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="stored XML (returned by LeafClass queries)")
    def stored_xml(self, obj: Any) -> str:
        return format_html('<pre style="white-space: pre-wrap; max-width: 100em">{}</pre>', obj.xml)

    def codes_of(self, kind: str, obj: Any) -> str:
        rows = m.RegistryCode.objects.filter(object_kind=kind, object_id=obj.pk).order_by("attribute", "value")
        return format_html("<table>{}</table>", format_html_join(
            "", "<tr><td>{}</td><td>{}</td></tr>", rows.values_list("attribute", "value")))

    def associations_of(self, obj: Any) -> str:
        from django.db.models import Q

        rows = m.Association.objects.filter(Q(source_uuid=obj.entry_uuid) | Q(target_uuid=obj.entry_uuid))
        return format_html("<table>{}</table>", format_html_join(
            "", "<tr><td>{}</td><td>{} {}</td><td>{}</td><td>{} {}</td></tr>",
            ((a.association_type.rsplit(":", 1)[-1], a.source_kind, a.source_uuid, "→", a.target_kind,
              a.target_uuid) for a in rows[:200])))


class PatientForm(forms.ModelForm):
    class Meta:
        model = m.Patient
        fields = ["patient_id", "family_name", "given_name", "birth_date", "sex", "address"]

    def clean_patient_id(self) -> str:
        from xds_registry.patient_identity_feed.patients import check_patient_id

        value = self.cleaned_data["patient_id"]
        try:
            check_patient_id(value, load_affinity_domain(settings.XDS_AFFINITY_DOMAIN_CODES))
        except PatientFeedError as exc:
            raise ValidationError(str(exc)) from exc
        return value


@admin.register(m.Patient)
class PatientAdmin(admin.ModelAdmin):
    form = PatientForm
    list_display = ["patient_id", "family_name", "given_name", "birth_date", "sex", "merged_into", "updated"]
    list_filter = ["assigning_authority", ("merged_into", admin.EmptyFieldListFilter), "sex"]
    search_fields = ["patient_id", "family_name", "given_name"]
    readonly_fields = ["assigning_authority", "merged_into", "pid_segment", "created", "updated"]
    list_select_related = ["merged_into"]
    change_list_template = "admin/xds_registry/patient/change_list.html"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Existing patients change through ITI-8 (A08 update, A40 merge), not by hand.
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: m.Patient, form: Any, change: bool) -> None:
        d = form.cleaned_data
        patient, _ = add_or_update_patient(
            d["patient_id"], Demographics(d["family_name"], d["given_name"], d["birth_date"], d["sex"], d["address"]),
            affinity_domain=load_affinity_domain(settings.XDS_AFFINITY_DOMAIN_CODES))
        obj.pk = patient.pk

    def get_urls(self) -> list[Any]:
        return [path("affinity-domain/", self.admin_site.admin_view(self.affinity_domain_view),
                     name="xds_registry_affinity_domain"), *super().get_urls()]

    def affinity_domain_view(self, request: HttpRequest) -> HttpResponse:
        """The value sets and assigning authorities this registry accepts (read-only)."""
        error = ""
        domain = None
        try:
            domain = load_affinity_domain(settings.XDS_AFFINITY_DOMAIN_CODES)
        except AffinityDomainConfigError as exc:
            error = str(exc)
        context = {
            **self.admin_site.each_context(request),
            "title": "Affinity domain configuration",
            "source": settings.XDS_AFFINITY_DOMAIN_CODES or "",
            "domain": domain,
            "error": error,
            "value_sets": sorted(domain.value_sets.items()) if domain else [],
            "authorities": sorted(domain.assigning_authorities) if domain else [],
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/xds_registry/affinity_domain.html", context)


@admin.register(m.DocumentEntry)
class DocumentEntryAdmin(ReadOnlyAdmin):
    list_display = ["unique_id", "patient_id", "status_name", "class_code", "type_code", "creation_time",
                    "mime_type", "title"]
    list_filter = ["status", "mime_type", "object_type", "class_code", "format_code", "document_availability"]
    search_fields = ["=unique_id", "=entry_uuid", "=patient_id", "title"]
    show_full_result_count = False  # no COUNT(*) over millions of rows per page view
    readonly_fields = ["entry_uuid", "lid", "version_name", "unique_id", "patient_id", "status", "object_type",
                       "creation_time", "service_start_time", "service_stop_time", "class_code", "type_code",
                       "format_code", "practice_setting_code", "healthcare_facility_type_code", "mime_type",
                       "repository_unique_id", "hash", "size", "document_availability", "title", "registered",
                       "codes", "associations", "stored_xml"]

    @admin.display(description="status", ordering="status")
    def status_name(self, obj: m.DocumentEntry) -> str:
        return obj.status.rsplit(":", 1)[-1]

    @admin.display(description="multi-valued codes")
    def codes(self, obj: m.DocumentEntry) -> str:
        return self.codes_of(m.ObjectKind.DOCUMENT_ENTRY, obj)

    @admin.display(description="associations")
    def associations(self, obj: m.DocumentEntry) -> str:
        return self.associations_of(obj)


@admin.register(m.SubmissionSet)
class SubmissionSetAdmin(ReadOnlyAdmin):
    list_display = ["unique_id", "patient_id", "source_id", "submission_time", "content_type_code", "title"]
    list_filter = ["status", "content_type_code", "source_id"]
    search_fields = ["=unique_id", "=entry_uuid", "=patient_id", "=source_id", "title"]
    show_full_result_count = False
    readonly_fields = ["entry_uuid", "lid", "version_name", "unique_id", "patient_id", "status", "source_id",
                       "submission_time", "content_type_code", "title", "registered", "codes", "associations",
                       "stored_xml"]

    @admin.display(description="multi-valued codes")
    def codes(self, obj: m.SubmissionSet) -> str:
        return self.codes_of(m.ObjectKind.SUBMISSION_SET, obj)

    @admin.display(description="associations")
    def associations(self, obj: m.SubmissionSet) -> str:
        return self.associations_of(obj)


@admin.register(m.Folder)
class FolderAdmin(ReadOnlyAdmin):
    list_display = ["unique_id", "patient_id", "status", "last_update_time", "title"]
    list_filter = ["status"]
    search_fields = ["=unique_id", "=entry_uuid", "=patient_id", "title"]
    show_full_result_count = False
    readonly_fields = ["entry_uuid", "lid", "version_name", "unique_id", "patient_id", "status", "last_update_time",
                       "title", "registered", "codes", "associations", "stored_xml"]

    @admin.display(description="codeList")
    def codes(self, obj: m.Folder) -> str:
        return self.codes_of(m.ObjectKind.FOLDER, obj)

    @admin.display(description="associations")
    def associations(self, obj: m.Folder) -> str:
        return self.associations_of(obj)


@admin.register(m.Association)
class AssociationAdmin(ReadOnlyAdmin):
    list_display = ["entry_uuid", "association_type", "source_kind", "source_uuid", "target_kind", "target_uuid",
                    "submission_set_status"]
    list_filter = ["association_type", "source_kind", "target_kind", "submission_set_status", "status"]
    search_fields = ["=entry_uuid", "=source_uuid", "=target_uuid", "=patient_id"]
    show_full_result_count = False
    readonly_fields = ["entry_uuid", "lid", "association_type", "source_kind", "source_uuid", "target_kind",
                       "target_uuid", "submission_set_status", "patient_id", "status", "registered", "stored_xml"]


@admin.register(m.RegistryCode)
class RegistryCodeAdmin(ReadOnlyAdmin):
    """The index of multi-valued query attributes (eventCodeList, confidentialityCode, ...): for diagnosis."""

    list_display = ["object_kind", "object_id", "attribute", "value"]
    list_filter = ["object_kind", "attribute"]
    search_fields = ["=value", "=object_id"]
