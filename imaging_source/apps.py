from django.apps import AppConfig


class ImagingSourceConfig(AppConfig):
    name = "imaging_source"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # In-process transactions (``local:imaging-source``, e.g. when no peer URL is configured) reach
        # this actor's endpoint through the SOAP client, which knows no actor.
        from imaging_source.soap_operations import ENDPOINT
        from xds_core.soap.client import register_local_endpoint

        register_local_endpoint(ENDPOINT.spec.name, ENDPOINT.dispatch_local)

        # The job kinds this actor owns: every process (the job worker included) knows their handlers.
        from imaging_source.publication_jobs import PUBLISH_STUDY, run_publish_study
        from jobs.registry import register

        register(PUBLISH_STUDY, run_publish_study)
