"""``manage.py xds_demo_identities SITE --plan FILE``: fill a demo site's node identity table (``XDS_TLS=demo``).

Run by ``make run`` with the site's environment after its database is migrated and before its listeners start,
so that the first connection between nodes is already known.  ``FILE`` (``var/demo/identities.json``, written by
the supervisor from :func:`demo.sites.demo_identities`) lists, per site, the certificates it admits and their
roles; each becomes (or updates, when a certificate was re-issued) the row of that name, matched by the
certificate's SHA-256 fingerprint.  Rows the plan does not name are left alone: an operator's own are kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from atna.pki_demo import CertFiles, register
from xds_core.identity import Role


class Command(BaseCommand):
    help = "Fill a demo site's node identity table from the supervisor's plan (XDS_TLS=demo)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("site", help="a key of the plan: domain, hospital-a, hospital-b (or node: XDS_DEMO=false)")
        parser.add_argument("--plan", type=Path, required=True, help="identities.json written by make run")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            plans = json.loads(options["plan"].read_text())
        except (OSError, ValueError) as exc:
            raise CommandError(f"{options['plan']}: {exc}") from None
        if options["site"] not in plans:
            raise CommandError(f"{options['plan']}: no plan for {options['site']} (plans: {', '.join(plans)})")
        plan = plans[options["site"]]
        changed = 0
        for row in plan:
            cert = Path(row["cert"])
            try:
                peer = CertFiles(cert, cert.with_suffix(".key")).peer()
            except (OSError, ValueError) as exc:
                raise CommandError(f"{cert}: {exc}") from None
            changed += register(row["name"], peer, [Role(r) for r in row["roles"]],
                                source_ids=row.get("source_ids", ()), description=row.get("description", ""))
        self.stdout.write(f"identity table of {options['site']}: {len(plan)} demo identities, {changed} added or "
                          "updated")
