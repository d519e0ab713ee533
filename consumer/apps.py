from django.apps import AppConfig


class ConsumerConfig(AppConfig):
    """The Imaging Document Consumer (RAD TF-2 / RAD TF-3 4.69 consumer side; ITI-18, ITI-43 as a client)."""

    name = "consumer"
    verbose_name = "Imaging Document Consumer"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from consumer.prefetch import IMPORT_PRIOR, PREFETCH_PRIORS, run_import_prior, run_prefetch_priors
        from jobs.registry import Event, register, subscribe

        # Every process knows the kinds (a job queued before prefetch was turned off still runs);
        # only a site with prefetch on answers procedures with them.
        register(PREFETCH_PRIORS, run_prefetch_priors)
        register(IMPORT_PRIOR, run_import_prior)
        if settings.XDS_PREFETCH:
            subscribe(Event.PROCEDURE_SCHEDULED, PREFETCH_PRIORS)
            subscribe(Event.PROCEDURE_IN_PROGRESS, PREFETCH_PRIORS)
