"""Every portal page needs a login (but /healthz); logging in and out works, with CSRF, and cannot be bent
into an open redirect."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, reverse
from django.urls.converters import IntConverter

import portal.urls

pytestmark = pytest.mark.django_db

PUBLIC = {"login", "logout", "healthz"}
SAMPLE_UID = "1.2.3.4"


def _portal_urls() -> list[str]:
    """A concrete URL of every portal route but the public ones (path arguments filled with samples)."""
    out = []
    for pattern in portal.urls.urlpatterns:
        assert isinstance(pattern, URLPattern)
        if pattern.name in PUBLIC:
            continue
        kwargs = {name: 1 if isinstance(converter, IntConverter) else SAMPLE_UID
                  for name, converter in pattern.pattern.converters.items()}
        out.append(reverse(f"portal:{pattern.name}", kwargs=kwargs))
    return out


def test_there_are_pages_to_protect() -> None:
    assert "/" in _portal_urls()


@pytest.mark.parametrize("url", _portal_urls())
def test_an_anonymous_visitor_is_sent_to_the_login_page(client, url: str) -> None:  # type: ignore[no-untyped-def]
    answer = client.get(url)
    if answer.status_code == 405:  # a POST-only action: the login check comes first for POSTs too
        answer = client.post(url)
    assert answer.status_code == 302, url
    target = urlsplit(answer["Location"])
    assert target.path == reverse("portal:login") and "next=" in target.query


def test_a_user_logs_in_with_csrf_sees_the_overview_and_logs_out(settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_PORTAL_PEERS, settings.DICOM_PACS, settings.DICOMWEB_URL = [], None, ""
    get_user_model().objects.create_user("clinician-b", password="correct horse battery")
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(reverse("portal:login"))
    assert page.status_code == 200 and b'name="csrfmiddlewaretoken"' in page.content
    token = page.context["csrf_token"]
    refused = browser.post(reverse("portal:login"), {"username": "clinician-b", "password": "correct horse battery"})
    assert refused.status_code == 403  # no CSRF token: refused
    wrong = browser.post(reverse("portal:login"), {"username": "clinician-b", "password": "wrong",
                                                   "csrfmiddlewaretoken": token})
    assert wrong.status_code == 200 and b'role="alert"' in wrong.content
    answer = browser.post(reverse("portal:login"), {"username": "clinician-b", "password": "correct horse battery",
                                                    "csrfmiddlewaretoken": token})
    assert answer.status_code == 302 and answer["Location"] == reverse("portal:home")
    home = browser.get("/")
    assert home.status_code == 200 and b'<section id="node"' in home.content
    token = home.context["csrf_token"]
    out = browser.post(reverse("portal:logout"), {"csrfmiddlewaretoken": token})
    assert out.status_code == 302
    assert urlsplit(browser.get("/")["Location"]).path == reverse("portal:login")


@pytest.mark.parametrize("next_url", ["https://evil.example/", "//evil.example/x", "/\\evil.example"])
def test_login_never_redirects_off_site(client, next_url: str) -> None:  # type: ignore[no-untyped-def]
    get_user_model().objects.create_user("clinician-a", password="pw-login-test")
    answer = client.post(f"{reverse('portal:login')}?next={next_url}",
                         {"username": "clinician-a", "password": "pw-login-test", "next": next_url})
    assert answer.status_code == 302
    assert urlsplit(answer["Location"]).netloc == "" and "evil" not in answer["Location"]


def test_a_logged_in_user_at_the_login_page_goes_home(client) -> None:  # type: ignore[no-untyped-def]
    client.force_login(get_user_model().objects.create_user("clinician-a"))
    answer = client.get(reverse("portal:login"))
    assert answer.status_code == 302 and answer["Location"] == reverse("portal:home")
