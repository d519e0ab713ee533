"""Routes of the imaging-source actor: the SOAP endpoint (mounted at /xds/imaging-source by config/urls.py).

``wado_urlpatterns``: RAD-55 WADO-URI, mounted at /xds/imaging-source/wado.
"""

from django.urls import path

from imaging_source.soap_operations import ENDPOINT
from imaging_source.views import wado

urlpatterns = [
    path("", ENDPOINT, name="xds-imaging-source"),
]

wado_urlpatterns = [
    path("", wado, name="xds-imaging-source-wado"),
]
