"""``manage.py xds_hl7_listener``: the ITI-8 Patient Identity Feed MLLP server (HL7 v2 ADT).

With ``XDS_TLS`` on (or ``demo``) it serves MLLP over TLS with mutual authentication (ITI-19) on the same port,
peers authorized by the node identity table; off, plain MLLP (local development), as its start line says.
"""

from __future__ import annotations

import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from atna.activity import started
from atna.tls import node_server_context
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
        handshake_timeout=settings.HL7_HANDSHAKE_TIMEOUT,
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
        context = node_server_context()  # None: XDS_TLS=off (node_tls() logs the warning)
        server = MllpServer((options["host"], port), domain, limits, ssl_context=context)
        authorities = ", ".join(sorted(domain.assigning_authorities)) if domain else "any"
        tls = ("TLS on: ITI-19 mutual authentication, peers from the node identity table" if context is not None
               else "TLS off: plain MLLP, local development only")
        self.stdout.write(f"ITI-8 MLLP listener on {options['host']}:{server.server_address[1]} "
                          f"({tls}; assigning authorities: {authorities}; at most {limits.max_connections} "
                          f"connections, {limits.max_connections_per_peer} per peer address)")
        # SIGTERM (the supervisor's stop) ends the loop like Ctrl-C: connections closed, workers joined, a
        # normal exit (status 0) -- which records Application Stop (atexit, atna.activity).
        signal.signal(signal.SIGTERM, lambda _signum, _frame: server.stop_soon())
        started("hl7-listener")  # Application Activity start/stop (atna.activity)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
