from django.apps import AppConfig


class ConsumerConfig(AppConfig):
    """The Imaging Document Consumer (RAD TF-2 / RAD TF-3 4.69 consumer side; ITI-18, ITI-43 as a client)."""

    name = "consumer"
    verbose_name = "Imaging Document Consumer"
    default_auto_field = "django.db.models.BigAutoField"
