import sys

from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Web portal"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        # The journal is a server's record of its transactions.  Under pytest the audit seam keeps its
        # default (no sink): the suite's tests count on that (tests/xds_core/test_audit.py), and test
        # transactions are no node's history; tests install the journal themselves.
        if settings.XDS_PORTAL_JOURNAL and "pytest" not in sys.modules:
            from portal import journal

            journal.install(settings.VAR_DIR / "journal")
