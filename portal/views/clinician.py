"""Portal pages: clinician."""

from django.urls import URLPattern

from portal.views.manifests import urlpatterns as _manifests
from portal.views.patients import urlpatterns as _patients

urlpatterns: list[URLPattern] = []
urlpatterns += _patients
urlpatterns += _manifests
