from django.apps import AppConfig


class XdsRegistryConfig(AppConfig):
    name = "xds_registry"
    default_auto_field = "django.db.models.BigAutoField"
