"""HTTP views of the imaging-source actor besides the SOAP endpoint (thin: settings -> config -> domain)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from imaging_source.dicom.config import DicomConfig
from imaging_source.wado import flat_params, wado_retrieve


@require_GET
def wado(request: HttpRequest) -> HttpResponse:
    """RAD-55 WADO-URI retrieve (``GET ...?requestType=WADO&studyUID=...``)."""
    answer = wado_retrieve(flat_params(request.GET), DicomConfig.from_settings(settings))
    return HttpResponse(answer.body, status=answer.status, content_type=answer.content_type)
