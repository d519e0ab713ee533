"""Root URLconf: each actor's endpoints, the web portal and admin."""

from django.contrib import admin
from django.urls import include, path

from imaging_source.urls import wado_urlpatterns

urlpatterns = [
    path("admin/", admin.site.urls),
    path("xds/registry", include("xds_registry.urls")),
    path("xds/repository", include("xds_repository.urls")),
    path("xds/imaging-source", include("imaging_source.urls")),
    path("xds/imaging-source/wado", include(wado_urlpatterns)),  # RAD-55 WADO-URI
    # The web portal: "/", "/healthz", the clinician's and the operator's pages.
    path("", include("portal.urls")),
]
