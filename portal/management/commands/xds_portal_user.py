"""``manage.py xds_portal_user add USERNAME --hospital KEY --hospital-name NAME``: a portal user of a hospital.

Idempotent: the hospital is created when missing (its name updated when given differently), the user is
created or their membership moved to that hospital.  The password is set only when ``--password-env VAR``
names a non-empty environment variable (a password never appears on a command line or in the output); a new
user without one cannot log in until an administrator sets it.
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from portal.models import Hospital, Membership, site_key_validator


class Command(BaseCommand):
    help = "Create or update a portal user and their hospital (idempotent; never prints passwords)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="create or update a user and their hospital membership")
        add.add_argument("username")
        add.add_argument("--hospital", default="", help="the hospital's site key (XDS_SITE_KEY of its node)")
        add.add_argument("--hospital-name", default="", help="the hospital's name (default: the key)")
        add.add_argument("--password-env", default="", metavar="VAR",
                         help="environment variable holding the password (unset or empty: password unchanged)")
        add.add_argument("--staff", action="store_true", help="may use Django admin")
        add.add_argument("--superuser", action="store_true", help="every permission (implies --staff)")

    def handle(self, *args: Any, **options: Any) -> None:
        username = options["username"].strip()
        user_model = get_user_model()
        try:
            user_model._meta.get_field(user_model.USERNAME_FIELD).run_validators(username)
        except ValidationError as exc:
            raise CommandError(f"invalid user name: {'; '.join(exc.messages)}") from None
        if not username:
            raise CommandError("the user name is empty")
        key = options["hospital"].strip()
        if key:
            try:
                site_key_validator(key)
            except ValidationError:
                raise CommandError(f"--hospital {key!r}: lower-case letters, digits and '-'") from None
        password = ""
        if options["password_env"]:
            password = os.environ.get(options["password_env"], "")
        with transaction.atomic():
            user, created = user_model.objects.get_or_create(**{user_model.USERNAME_FIELD: username})
            changed = created
            if created and not password:
                user.set_unusable_password()
            if password:
                user.set_password(password)
                changed = True
            if options["superuser"] and not user.is_superuser:
                user.is_superuser = changed = True
            if (options["staff"] or options["superuser"]) and not user.is_staff:
                user.is_staff = changed = True
            if changed:
                user.save()
            hospital_text = "hospital unchanged"
            if key:
                name = options["hospital_name"].strip() or key
                hospital, _ = Hospital.objects.get_or_create(key=key, defaults={"name": name})
                if options["hospital_name"].strip() and hospital.name != name:
                    hospital.name = name
                    hospital.save(update_fields=["name"])
                Membership.objects.update_or_create(user=user, defaults={"hospital": hospital})
                hospital_text = f"{hospital.name} ({hospital.key})"
        password_text = "password set" if password else "password unchanged" if not created else "no password"
        self.stdout.write(f"portal user {username}: {'created' if created else 'updated'}, {hospital_text}, "
                          f"{password_text}")
