"""The conformance runner's ITI-8 client (conformance.patients.Hl7Feed) against our MLLP server."""

from __future__ import annotations

import uuid

import pytest

from conformance.patients import Hl7Feed
from tests.xds_registry.registry_helpers import AUTHORITY
from xds_registry import models as m
from xds_registry.patient_identity_feed.mllp import serve_in_thread

pytestmark = pytest.mark.django_db(transaction=True)


def test_conformance_feed_is_acknowledged_and_registers_the_patient():
    server, thread = serve_in_thread("127.0.0.1", 0, None)
    try:
        pid = f"C{uuid.uuid4().hex[:10]}^^^&{AUTHORITY}&ISO"
        Hl7Feed("127.0.0.1", server.server_address[1]).feed(pid)  # raises unless AA
        assert m.Patient.objects.filter(patient_id=pid).exists()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
