"""Real sockets for the status tests: a closed port, a port that accepts and never answers, a C-ECHO SCP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from imaging_source.dicom.ae import make_ae


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released: connect is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers a byte."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@contextmanager
def echo_scp(ae_title: str) -> Iterator[int]:
    """A real DICOM Verification SCP (C-ECHO) on an ephemeral port, as our listener would be."""
    from pynetdicom.sop_class import Verification

    ae = make_ae(ae_title)
    ae.add_supported_context(Verification)
    server = ae.start_listener(("127.0.0.1", 0))
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def isolate(settings) -> None:  # type: ignore[no-untyped-def]
    """This node alone with only its database: no PACS, no listener, the registry in process, no peers."""
    settings.DICOM_PACS = None
    settings.DICOMWEB_URL = ""
    settings.XDS_CONSUMER_REGISTRY_URL = ""
    settings.XDS_REPOSITORY_URL = ""
    settings.XDS_PORTAL_PEERS = []
    settings.XDS_SITE_KEY = "hospital-b"
    settings.XDS_SITE_NAME = "Hospital B"
