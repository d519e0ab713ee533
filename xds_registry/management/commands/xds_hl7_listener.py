"""``manage.py xds_hl7_listener``: the ITI-8 Patient Identity Feed MLLP server (HL7 v2 ADT)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from xds_core.affinity_domain import load_affinity_domain
from xds_registry.patient_identity_feed.mllp import MllpServer


class Command(BaseCommand):
    help = "Run the ITI-8 Patient Identity Feed listener (HL7 v2 over MLLP) on HL7_PORT."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=None, help="TCP port (default: setting HL7_PORT)")

    def handle(self, *args: Any, **options: Any) -> None:
        port = options["port"] if options["port"] is not None else settings.HL7_PORT
        domain = load_affinity_domain(settings.XDS_AFFINITY_DOMAIN_CODES)
        server = MllpServer((options["host"], port), domain)
        authorities = ", ".join(sorted(domain.assigning_authorities)) if domain else "any"
        self.stdout.write(f"ITI-8 MLLP listener on {options['host']}:{server.server_address[1]} "
                          f"(assigning authorities: {authorities})")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
