import gc
import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

from xds_core.http import direct_write

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
_django = get_wsgi_application()


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Django, with vectored writes offered to streamed answers under gunicorn (:mod:`xds_core.http.direct_write`)."""
    direct_write.install(environ, start_response)
    return _django(environ, start_response)


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
