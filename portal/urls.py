"""The portal's pages (namespace ``portal``): each area's module lists its own routes."""

from django.contrib.auth import views as auth_views
from django.urls import path

from portal.views import clinician, operator, overview

app_name = "portal"

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(template_name="portal/login.html", redirect_authenticated_user=True),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    *overview.urlpatterns,
    *clinician.urlpatterns,
    *operator.urlpatterns,
]
