"""Routes of the registry actor: the SOAP endpoint (mounted at /xds/registry by config/urls.py)."""

from django.urls import path

from xds_registry.soap_operations import ENDPOINT

urlpatterns = [
    path("", ENDPOINT, name="xds-registry"),
]
