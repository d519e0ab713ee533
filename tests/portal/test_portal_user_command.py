"""``manage.py xds_portal_user add``: idempotent; creates the hospital, moves the membership, sets a password only
from the environment, never prints it."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command

from portal.models import Hospital, Membership

pytestmark = pytest.mark.django_db


def add(*args: str) -> str:
    out = io.StringIO()
    call_command("xds_portal_user", "add", *args, stdout=out)
    return out.getvalue()


def test_a_user_and_their_hospital_are_created_once_and_the_password_is_never_printed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PORTAL_PW", "s3cret-portal-pw")
    first = add("clinician-b", "--hospital", "hospital-b", "--hospital-name", "Hospital B",
                "--password-env", "PORTAL_PW")
    second = add("clinician-b", "--hospital", "hospital-b", "--hospital-name", "Hospital B",
                 "--password-env", "PORTAL_PW")
    assert "created" in first and "updated" in second
    assert "s3cret" not in first + second
    assert Hospital.objects.filter(key="hospital-b").count() == 1
    assert get_user_model().objects.filter(username="clinician-b").count() == 1
    assert Membership.objects.get(user__username="clinician-b").hospital.name == "Hospital B"
    assert authenticate(username="clinician-b", password="s3cret-portal-pw") is not None


def test_without_a_password_an_existing_one_is_kept_and_a_new_user_cannot_log_in(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PORTAL_PW", "first-pw")
    add("clinician-a", "--hospital", "hospital-a", "--password-env", "PORTAL_PW")
    monkeypatch.delenv("PORTAL_PW")
    add("clinician-a", "--hospital", "hospital-a", "--password-env", "PORTAL_PW")  # unset: unchanged
    assert authenticate(username="clinician-a", password="first-pw") is not None
    add("nobody-yet")
    assert not get_user_model().objects.get(username="nobody-yet").has_usable_password()
    assert not Membership.objects.filter(user__username="nobody-yet").exists()


def test_the_membership_moves_and_flags_are_set(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    add("admin", "--hospital", "hospital-a", "--hospital-name", "Hospital A")
    add("admin", "--hospital", "hospital-b", "--hospital-name", "Hospital B", "--superuser")
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.is_staff
    assert Membership.objects.get(user=user).hospital.key == "hospital-b"
    assert Hospital.objects.filter(key="hospital-a").exists()  # kept: other users may belong to it
    assert add("admin").endswith("hospital unchanged, password unchanged\n")
    assert Membership.objects.get(user=user).hospital.key == "hospital-b"


@pytest.mark.parametrize("args", [("bad user!",), ("ok", "--hospital", "Hospital B"),
                                  ("ok", "--hospital", "x" * 64), ("",)])
def test_hostile_names_are_refused(args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError):
        add(*args)
    assert not get_user_model().objects.exists() and not Hospital.objects.exists()
