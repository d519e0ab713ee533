from django.apps import AppConfig


class XdsRepositoryConfig(AppConfig):
    name = "xds_repository"
    default_auto_field = "django.db.models.BigAutoField"
