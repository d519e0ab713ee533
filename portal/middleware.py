"""``Server-Timing`` on the portal's pages: the server's own time, for the benchmark and the browser.

W3C Server Timing (https://www.w3.org/TR/server-timing/): one metric ``app;dur=<milliseconds>`` - the
time from this middleware's entry to the view's response, every middleware below it included.  Place it
FIRST in ``MIDDLEWARE`` so that the session, authentication and CSRF middleware count too.

Only the portal's own URLs (namespace ``portal``) carry it: the SOAP endpoints, WADO and admin answer
as before, byte for byte.  A streamed response (the zip download) is timed to its first byte, i.e. to
the moment the view hands the stream over, not to the end of the body.  The value is a duration only:
no path, user or patient data goes into it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

#: The metric name (Server Timing ``server-timing-metric`` token).
METRIC = "app"
PORTAL_NAMESPACE = "portal"


def server_timing_value(milliseconds: float, existing: str | None = None) -> str:
    """``app;dur=12.3``, appended to an ``existing`` header value (Server Timing allows a list)."""
    metric = f"{METRIC};dur={max(0.0, milliseconds):.1f}"
    return f"{existing}, {metric}" if existing else metric


def is_portal_request(request: HttpRequest) -> bool:
    """Whether the URL resolved into the portal's namespace (unresolved URLs, 404s: no)."""
    match = getattr(request, "resolver_match", None)
    return match is not None and PORTAL_NAMESPACE in match.namespaces


class ServerTimingMiddleware:
    """Adds ``Server-Timing: app;dur=<ms>`` to every response of a portal page."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = self.get_response(request)
        # resolver_match is set on the request by URL resolution inside get_response.
        if is_portal_request(request):
            elapsed = (time.perf_counter() - started) * 1000.0
            response["Server-Timing"] = server_timing_value(elapsed, response.get("Server-Timing"))
        return response
