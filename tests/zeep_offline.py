"""zeep (the project's independent SOAP client, pinned 4.3.3) restricted to loopback.

Every WSDL and XSD zeep needs must come from our own server (``?wsdl`` and the ``?xsd=``
links it serves): the session refuses any other host, and records what was fetched.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
import zeep
from zeep.transports import Transport

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class LoopbackOnlySession(requests.Session):
    """A requests session that fails the test on any non-loopback URL."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False  # no proxy from the environment between zeep and our server
        self.fetched: list[str] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        text = url.decode() if isinstance(url, bytes) else url
        if urlsplit(text).hostname not in LOOPBACK:
            raise AssertionError(f"zeep tried to reach {text}: everything must come from the server under test")
        self.fetched.append(text)
        return super().request(method, url, *args, **kwargs)


def zeep_client(wsdl_url: str) -> tuple[zeep.Client, LoopbackOnlySession]:
    """A zeep client built from the served WSDL (no cache: every document is fetched)."""
    session = LoopbackOnlySession()
    client = zeep.Client(wsdl_url, transport=Transport(session=session, timeout=60, operation_timeout=300))
    return client, session
