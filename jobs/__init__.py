"""One durable, database-backed job queue for every long or retried task of the suite.

- :mod:`jobs.models`    the :class:`~jobs.models.Job` table (state, attempts, backoff, lease);
- :mod:`jobs.api`       enqueue / claim / complete / fail / retry_now / cancel (plain functions, no settings);
- :mod:`jobs.registry`  kind name -> handler; actors register their kinds from ``AppConfig.ready()``;
- :mod:`jobs.worker`    run one claimed job through its handler (``run_one``, ``run_pending``);
- ``manage.py xds_jobs_worker``  the long-running worker ``make run`` starts.

A job is at-least-once: a handler may run again after a worker died mid-job (its lease expired), so
handlers are idempotent (RAD-68 publication is: an unchanged study is not sent twice).  This package
imports no actor; actors import it.
"""
