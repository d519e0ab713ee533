"""HTTP views of the imaging-source actor besides the SOAP endpoint (thin: settings -> config -> domain)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from imaging_source.dicom.config import DicomConfig
from imaging_source.dicom.instances import PacsDeadlines
from imaging_source.wado import audit_event, flat_params, wado_retrieve
from xds_core import audit


@require_GET
def wado(request: HttpRequest) -> HttpResponse:
    """RAD-55 WADO-URI retrieve (``GET ...?requestType=WADO&studyUID=...``)."""
    params = flat_params(request.GET)
    answer = wado_retrieve(params, DicomConfig.from_settings(settings), PacsDeadlines.from_settings(settings))
    audit.record(lambda: audit_event(params, answer, request.META.get("REMOTE_ADDR", ""),
                                     request.build_absolute_uri(request.path)))
    return HttpResponse(answer.body, status=answer.status, content_type=answer.content_type)
