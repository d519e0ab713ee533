"""The demo's portal users: every site has both hospitals and clinician-a / clinician-b / admin; the password
comes from DEMO_PASSWORD, else the supervisor makes one at first start and prints it once."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command

from config.supervisor import PORTAL_USERS_MARKER, banner, demo_login, mark_portal_users
from portal.models import Hospital, Membership

pytestmark = pytest.mark.django_db


def load_domain() -> str:
    out = io.StringIO()
    call_command("xds_demo_load", "domain", stdout=out)
    return out.getvalue()


def test_the_domain_load_creates_both_hospitals_and_the_demo_users(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_SITE_KEY = "domain"
    monkeypatch.setenv("DEMO_PASSWORD", "demo-pw-1")
    output = load_domain()
    assert "demo-pw-1" not in output
    assert dict(Hospital.objects.values_list("key", "name")) == {"hospital-a": "Hospital A",
                                                                 "hospital-b": "Hospital B"}
    members = dict(Membership.objects.values_list("user__username", "hospital__key"))
    assert members == {"clinician-a": "hospital-a", "clinician-b": "hospital-b"}  # the domain's admin: none
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    for name in ("clinician-a", "clinician-b", "admin"):
        assert authenticate(username=name, password="demo-pw-1") is not None

    monkeypatch.delenv("DEMO_PASSWORD")
    load_domain()  # a later start without DEMO_PASSWORD: passwords kept
    assert authenticate(username="clinician-b", password="demo-pw-1") is not None
    monkeypatch.setenv("DEMO_PASSWORD", "demo-pw-2")
    load_domain()  # DEMO_PASSWORD set: it resets them
    assert authenticate(username="clinician-b", password="demo-pw-2") is not None
    assert get_user_model().objects.count() == 3


def test_on_a_hospital_node_the_admin_belongs_to_that_hospital(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from demo.management.commands.xds_demo_load import Command

    settings.XDS_SITE_KEY = "hospital-b"
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)
    command = Command(stdout=io.StringIO())
    command.portal_users()
    assert Membership.objects.get(user__username="admin").hospital.key == "hospital-b"
    assert not get_user_model().objects.get(username="clinician-b").has_usable_password()


def test_a_password_is_generated_only_before_the_users_exist_and_printed_once(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    from demo.sites import demo_sites, write_env_files
    from demo.studies import B_NIST, NIST_PATIENT, NIST_STUDY_UID, affinity_cx

    given = demo_login(tmp_path, "operator-chosen")
    assert given.env == {} and "operator-chosen" not in given.text  # it is the operator's: not echoed
    first = demo_login(tmp_path, "")
    password = first.env["DEMO_PASSWORD"]
    assert first.generated and len(password) >= 16 and password in first.text and "printed once" in first.text
    assert demo_login(tmp_path, "").env["DEMO_PASSWORD"] != password  # nothing kept before the users exist
    mark_portal_users(tmp_path)
    marker = tmp_path / PORTAL_USERS_MARKER
    assert stat.S_IMODE(marker.stat().st_mode) == 0o600 and password not in marker.read_text()
    later = demo_login(tmp_path, "")
    assert later.env == {} and not later.generated and "as printed at first start" in later.text

    settings.VAR_DIR = tmp_path
    sites = demo_sites(settings)
    files = write_env_files(sites, tmp_path / "demo")
    text = banner(sites, files, affinity_cx(NIST_PATIENT.affinity_id), NIST_STUDY_UID, sites[2], B_NIST.local_cx(),
                  B_NIST.local_id, B_NIST.issuer, 12.0, portal_login=first.text)
    assert f"Portal: {sites[2].base_url}/  log in as clinician-b / {password} (printed once" in text
    for site in sites:
        assert f"{site.base_url}/   (health: {site.base_url}/healthz)" in text
