"""Routes of the registry actor: the SOAP endpoint (mounted at /xds/registry by config/urls.py)."""

from django.urls import path

from xds_registry.endpoint import XdsEndpoint

urlpatterns = [
    path("", XdsEndpoint("registry"), name="xds-registry"),
]
