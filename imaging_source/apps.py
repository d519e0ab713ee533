from django.apps import AppConfig


class ImagingSourceConfig(AppConfig):
    name = "imaging_source"
    default_auto_field = "django.db.models.BigAutoField"
