from django.apps import AppConfig


class AtnaConfig(AppConfig):
    """The ATNA secure node (ITI TF-1 9): node identities, TLS settings of this node, the audit trail."""

    name = "atna"
    verbose_name = "Secure node (ATNA)"
    default_auto_field = "django.db.models.BigAutoField"
