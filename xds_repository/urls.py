"""Routes of the repository actor: the SOAP endpoint (mounted at /xds/repository by config/urls.py)."""

from django.urls import path

from xds_registry.endpoint import XdsEndpoint

urlpatterns = [
    path("", XdsEndpoint("repository"), name="xds-repository"),
]
