from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The two-hospital demo affinity domain `make run` starts: its sites and their demo data."""

    name = "demo"
    verbose_name = "Demo affinity domain"
