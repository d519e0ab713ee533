from django.apps import AppConfig


class XdsRegistryConfig(AppConfig):
    name = "xds_registry"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # In-process transactions (``local:registry``, e.g. when no peer URL is configured) reach
        # this actor's endpoint through the SOAP client, which knows no actor.
        from xds_core.soap.client import register_local_endpoint
        from xds_registry.soap_operations import ENDPOINT

        register_local_endpoint(ENDPOINT.spec.name, ENDPOINT.dispatch_local)
