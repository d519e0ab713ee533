from django.apps import AppConfig


class XdsRepositoryConfig(AppConfig):
    name = "xds_repository"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs.registry import register
        from xds_core.soap.client import register_local_endpoint
        from xds_repository.reconcile_jobs import RECONCILE, run_reconcile
        from xds_repository.soap_operations import ENDPOINT

        # In-process transactions (``local:repository``, e.g. when no peer URL is configured) reach
        # this actor's endpoint through the SOAP client, which knows no actor.
        register_local_endpoint(ENDPOINT.spec.name, ENDPOINT.dispatch_local)
        # The periodic reconcile (every process knows the kind; the job worker runs it).
        register(RECONCILE, run_reconcile)
