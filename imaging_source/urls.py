"""Routes of the imaging-source actor: the SOAP endpoint (mounted at /xds/imaging-source by config/urls.py)."""

from django.urls import path

from xds_registry.endpoint import XdsEndpoint

urlpatterns = [
    path("", XdsEndpoint("imaging-source"), name="xds-imaging-source"),
]
