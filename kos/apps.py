from django.apps import AppConfig


class KosConfig(AppConfig):
    name = "kos"
    default_auto_field = "django.db.models.BigAutoField"
