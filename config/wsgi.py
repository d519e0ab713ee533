import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()


def _settle_heap() -> None:
    """Keep the garbage collector off the worker's start-up objects and out of large requests.

    The URL conf (and with it every endpoint's modules) is loaded now, then everything made so
    far is frozen: it lives as long as the worker, and a full collection of a started worker
    walked all of it (~35 ms, measured).  A higher first-generation threshold lets a large
    request (a 500-instance RAD-69 builds thousands of small objects) run with a few
    collections instead of dozens; reference cycles are still collected.
    """
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports the URL conf and the views it names
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(20_000, second, third)


_settle_heap()
