"""portal.middleware.ServerTimingMiddleware: ``Server-Timing: app;dur=<ms>`` on portal pages only."""

from __future__ import annotations

import re
import time

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import include, path

from portal.middleware import server_timing_value

MIDDLEWARE = "portal.middleware.ServerTimingMiddleware"
SLOW_SECONDS = 0.06
DUR = re.compile(r"(?:^|,\s*)app;dur=(\d+(?:\.\d+)?)(?:\s*,|$)")


def slow(request: HttpRequest) -> HttpResponse:
    time.sleep(SLOW_SECONDS)
    return HttpResponse("slow")


def with_own_metric(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("measured")
    response["Server-Timing"] = "db;dur=3"
    return response


def not_portal(request: HttpRequest) -> HttpResponse:
    return HttpResponse("soap-ish")


# A URLconf of its own: two views in the portal's namespace and one outside it, as config.urls mounts them.
urlpatterns = [
    path("xds/elsewhere", not_portal),
    path("", include(([path("slow/", slow), path("own/", with_own_metric)], "portal"))),
]


@pytest.fixture
def timed(settings) -> Client:
    settings.MIDDLEWARE = [MIDDLEWARE, *(m for m in settings.MIDDLEWARE if m != MIDDLEWARE)]  # first, once
    return Client()


def duration_of(header: str) -> float:
    found = DUR.search(header)
    assert found, f"no app;dur in {header!r}"
    return float(found.group(1))


@pytest.mark.django_db
def test_the_real_login_page_carries_the_server_time(timed: Client) -> None:
    response = timed.get("/login/")
    assert response.status_code == 200
    assert duration_of(response["Server-Timing"]) >= 0


@pytest.mark.django_db
def test_an_anonymous_redirect_of_a_portal_page_is_timed_too(timed: Client) -> None:
    response = timed.get("/logout/")  # GET is refused (405) but still a portal URL
    assert "Server-Timing" in response


@pytest.mark.django_db
def test_soap_endpoints_admin_and_unknown_urls_have_no_server_timing(timed: Client) -> None:
    for url in ("/xds/registry?wsdl", "/admin/login/", "/no/such/page/"):
        response = timed.get(url)
        assert "Server-Timing" not in response, url


@pytest.mark.urls(__name__)
def test_duration_covers_the_view_and_is_in_milliseconds(timed: Client) -> None:
    response = timed.get("/slow/")
    dur = duration_of(response["Server-Timing"])
    assert SLOW_SECONDS * 1000 <= dur < SLOW_SECONDS * 1000 + 2000


@pytest.mark.urls(__name__)
def test_a_views_own_metric_is_kept_and_app_appended(timed: Client) -> None:
    header = timed.get("/own/")["Server-Timing"]
    assert header.startswith("db;dur=3, app;dur=")
    assert "Server-Timing" not in timed.get("/xds/elsewhere")


def test_header_value_format() -> None:
    assert server_timing_value(12.345) == "app;dur=12.3"
    assert server_timing_value(-1.0) == "app;dur=0.0"  # a clock step never gives a negative duration
    assert server_timing_value(2, "cache;desc=hit") == "cache;desc=hit, app;dur=2.0"


@pytest.mark.urls(__name__)
def test_one_app_metric_per_response(timed: Client) -> None:
    assert timed.get("/slow/")["Server-Timing"].count("app;dur=") == 1
