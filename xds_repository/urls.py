"""Routes of the repository actor: the SOAP endpoint (mounted at /xds/repository by config/urls.py)."""

from django.urls import path

from xds_repository.soap_operations import ENDPOINT

urlpatterns = [
    path("", ENDPOINT, name="xds-repository"),
]
