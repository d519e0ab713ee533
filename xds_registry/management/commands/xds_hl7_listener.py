"""``manage.py xds_hl7_listener``: the ITI-8 Patient Identity Feed MLLP server (HL7 v2 ADT)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from xds_core.affinity_domain import load_affinity_domain
from xds_core.mllp import ServerLimits
from xds_registry.patient_identity_feed.mllp import MllpServer


def limits_from_settings() -> ServerLimits:
    """The listener's connection caps and time rules (settings ``HL7_*``)."""
    return ServerLimits(
        max_connections=settings.HL7_MAX_CONNECTIONS,
        max_connections_per_peer=settings.HL7_MAX_CONNECTIONS_PER_PEER,
        workers=settings.HL7_WORKERS,
        idle_timeout=settings.HL7_IDLE_TIMEOUT,
        min_rate=settings.HL7_MIN_RATE,
        rate_window=settings.HL7_RATE_WINDOW,
        frame_deadline=settings.HL7_FRAME_DEADLINE,
    )


class Command(BaseCommand):
    help = "Run the ITI-8 Patient Identity Feed listener (HL7 v2 over MLLP) on HL7_PORT."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=None, help="TCP port (default: setting HL7_PORT)")

    def handle(self, *args: Any, **options: Any) -> None:
        port = options["port"] if options["port"] is not None else settings.HL7_PORT
        domain = load_affinity_domain(settings.XDS_AFFINITY_DOMAIN_CODES)
        limits = limits_from_settings()
        server = MllpServer((options["host"], port), domain, limits)
        authorities = ", ".join(sorted(domain.assigning_authorities)) if domain else "any"
        self.stdout.write(f"ITI-8 MLLP listener on {options['host']}:{server.server_address[1]} "
                          f"(assigning authorities: {authorities}; at most {limits.max_connections} connections, "
                          f"{limits.max_connections_per_peer} per peer address)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
