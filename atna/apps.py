from django.apps import AppConfig


class AtnaConfig(AppConfig):
    """The ATNA secure node (ITI TF-1 9): node identities, TLS settings of this node, the audit trail."""

    name = "atna"
    verbose_name = "Secure node (ATNA)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Every SoapClient given no session presents this node's certificate under XDS_TLS (atna.tls doc).
        from atna.tls import tls_session
        from xds_core.soap import client

        client.set_session_factory(tls_session)
        # Logins, logouts and failed logins as User Authentication audit events (atna.activity doc).
        from atna.activity import connect_signals

        connect_signals()
        # The audit trail: its job kinds, and the sink storing every audit event (atna.trail_jobs doc).
        from atna.trail_jobs import start_trail

        start_trail()
