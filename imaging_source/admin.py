"""Admin pages of the Imaging Document Source: patient mapping, publications, reconciliation queue.

Actions stay thin: they build a :class:`~imaging_source.publish.PublishConfig` from settings and call
:func:`imaging_source.publish.publish` (the one place that publishes).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from imaging_source.models import PatientMapping, PerformedProcedureStep, Publication, ReconciliationItem
from imaging_source.patient_mapping import check_affinity_patient_id
from imaging_source.publish import Outcome, PublishConfig, PublishResult, publish
from imaging_source.study import StudyRef
from kos.builder import ManifestError
from xds_core.identifiers import is_dicom_uid


class PatientMappingForm(forms.ModelForm):
    class Meta:
        model = PatientMapping
        fields = ["local_patient_id", "local_issuer", "affinity_patient_id", "note"]

    def clean_affinity_patient_id(self) -> str:
        value = self.cleaned_data["affinity_patient_id"].strip()
        problems = check_affinity_patient_id(value)
        if problems:
            raise forms.ValidationError("; ".join(problems))
        return value


@admin.register(PatientMapping)
class PatientMappingAdmin(admin.ModelAdmin):
    form = PatientMappingForm
    list_display = ["local_patient_id", "local_issuer", "affinity_patient_id", "note", "updated_at"]
    list_filter = ["local_issuer", "note"]
    search_fields = ["local_patient_id", "affinity_patient_id", "note"]


def _publish_config() -> PublishConfig:
    return PublishConfig.from_settings(settings)


def _find_study(study_uid: str) -> StudyRef | None:
    """Ask the PACS again (the DICOM side, imported lazily: it needs a configured PACS)."""
    from imaging_source.dicom.config import DicomConfig
    from imaging_source.dicom.find import find_study

    return find_study(study_uid, DicomConfig.from_settings(settings))


def _report(modeladmin: admin.ModelAdmin, request: HttpRequest, results: list[PublishResult]) -> None:
    for result in results:
        level = messages.SUCCESS if result.ok else (
            messages.WARNING if result.outcome == Outcome.QUEUED else messages.ERROR)
        modeladmin.message_user(request, f"{result.study_instance_uid}: {result.outcome} {result.message}", level)


class PublishStudyForm(forms.Form):
    study_uids = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 70}), label="Study Instance UIDs",
        help_text="One per line. Each study is looked up in the PACS (C-FIND / QIDO-RS) and published.")

    def clean_study_uids(self) -> list[str]:
        uids = [line.strip() for line in self.cleaned_data["study_uids"].splitlines() if line.strip()]
        bad = [u for u in uids if not is_dicom_uid(u)]  # PS3.5 §9.1
        if bad:
            raise forms.ValidationError(f"not a UID: {', '.join(bad)}")
        return list(dict.fromkeys(uids))


@admin.register(Publication)
class PublicationAdmin(admin.ModelAdmin):
    change_list_template = "admin/imaging_source/publication_change_list.html"
    list_display = ["study_instance_uid", "status", "is_replacement", "patient_id", "instance_count",
                    "kos_sop_instance_uid", "trigger", "created_at"]
    list_filter = ["status", "trigger"]
    search_fields = ["study_instance_uid", "kos_sop_instance_uid", "entry_uuid", "patient_id", "accession_number"]
    exclude = ["kos"]
    readonly_fields = [f.name for f in Publication._meta.fields if f.name != "kos"]
    actions = ["republish"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # publications are made by publishing, not typed in

    def get_urls(self) -> list[URLPattern]:
        return [path("publish-study/", self.admin_site.admin_view(self.publish_study_view),
                     name="imaging_source_publication_publish_study"), *super().get_urls()]

    def publish_study_view(self, request: HttpRequest) -> HttpResponse:
        """Publish studies by Study Instance UID (the admin twin of ``manage.py xds_publish --study``)."""
        if not self.has_view_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        form = PublishStudyForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            self._publish_uids(request, form.cleaned_data["study_uids"])
            return HttpResponseRedirect(reverse("admin:imaging_source_publication_changelist"))
        context = {**self.admin_site.each_context(request), "title": "Publish studies (RAD-68)", "form": form,
                   "opts": self.model._meta}
        return TemplateResponse(request, "admin/imaging_source/publish_study.html", context)

    def _publish_uids(self, request: HttpRequest, uids: list[str]) -> None:
        config = _publish_config()
        results: list[PublishResult] = []
        for uid in uids:
            try:
                study = _find_study(uid)
            except Exception as exc:  # the PACS side raises its own errors; report, do not crash the page
                self.message_user(request, f"{uid}: cannot query the PACS: {exc}", messages.ERROR)
                continue
            if study is None:
                self.message_user(request, f"{uid}: not found in the PACS", messages.ERROR)
                continue
            try:
                results.append(publish(study, config, trigger="admin"))
            except ManifestError as exc:
                self.message_user(request, f"{uid}: {exc}", messages.ERROR)
        _report(self, request, results)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(boolean=True, description="replacement")
    def is_replacement(self, obj: Publication) -> bool:
        return obj.is_replacement

    @admin.action(description="Publish the selected studies again (replacement if they changed in the PACS)")
    def republish(self, request: HttpRequest, queryset: QuerySet[Publication]) -> None:
        self._publish_uids(request, list(dict.fromkeys(queryset.values_list("study_instance_uid", flat=True))))


class ResolveForm(forms.Form):
    affinity_patient_id = forms.CharField(
        max_length=256, help_text="XDS patientId in the affinity domain, CX id^^^&OID&ISO")

    def clean_affinity_patient_id(self) -> str:
        value = self.cleaned_data["affinity_patient_id"].strip()
        problems = check_affinity_patient_id(value)
        if problems:
            raise forms.ValidationError("; ".join(problems))
        return value


@admin.register(ReconciliationItem)
class ReconciliationItemAdmin(admin.ModelAdmin):
    list_display = ["study_instance_uid", "local_patient_id", "local_issuer", "patient_name", "accession_number",
                    "study_date", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["study_instance_uid", "local_patient_id", "patient_name", "accession_number"]
    readonly_fields = [f.name for f in ReconciliationItem._meta.fields]
    actions = ["resolve_and_publish", "discard"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Resolve (map the patient) and publish")
    def resolve_and_publish(self, request: HttpRequest, queryset: QuerySet[ReconciliationItem]
                            ) -> HttpResponse | None:
        items = list(queryset.filter(status=ReconciliationItem.Status.OPEN))
        if not items:
            self.message_user(request, "no open item selected", messages.WARNING)
            return None
        patients = {(i.local_patient_id, i.local_issuer) for i in items}
        if len(patients) != 1:
            self.message_user(request, "select items of one local patient at a time", messages.ERROR)
            return None
        (local_id, issuer), = patients
        form = ResolveForm(request.POST if "apply" in request.POST else None,
                           initial={"affinity_patient_id": _current_mapping(local_id, issuer)})
        if "apply" in request.POST and form.is_valid():
            from imaging_source.dicom.config import DicomConfig
            from imaging_source.operations import resolve_reconciliation

            try:
                # One home for "map, then publish every open item of the patient" (the portal's too).
                resolution = resolve_reconciliation(items[0].pk, form.cleaned_data["affinity_patient_id"],
                                                    publish_config=_publish_config(),
                                                    dicom=DicomConfig.from_settings(settings))
            except (LookupError, ValueError) as exc:
                self.message_user(request, str(exc), messages.ERROR)
                return None
            for error in resolution.errors:
                self.message_user(request, error, messages.ERROR)
            _report(self, request, resolution.results)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Resolve and publish",
            "items": items,
            "local_patient_id": local_id,
            "local_issuer": issuer,
            "form": form,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/imaging_source/reconciliation_resolve.html", context)

    @admin.action(description="Discard (never publish)")
    def discard(self, request: HttpRequest, queryset: QuerySet[ReconciliationItem]) -> None:
        count = queryset.filter(status=ReconciliationItem.Status.OPEN).update(
            status=ReconciliationItem.Status.DISCARDED, resolved_at=timezone.now(), updated_at=timezone.now())
        self.message_user(request, f"{count} item(s) discarded")


def _current_mapping(local_id: str, issuer: str) -> str:
    row = PatientMapping.objects.filter(local_patient_id=local_id, local_issuer__in=[issuer, ""]).order_by(
        "-local_issuer").first()
    return row.affinity_patient_id if row else ""


@admin.register(PerformedProcedureStep)
class PerformedProcedureStepAdmin(admin.ModelAdmin):
    """The MPPS steps the DICOM listener received: read-only (they change only by N-CREATE / N-SET)."""

    list_display = ["sop_instance_uid", "status", "created_at", "updated_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["=sop_instance_uid"]
    readonly_fields = ["sop_instance_uid", "status", "attributes", "created_at", "updated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
