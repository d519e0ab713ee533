"""What counting the XML root's markup costs a large, realistic ITI-42 (issue 15).

The element/attribute limit (``max_xml_nodes``) is enforced while the SOAP body is read, by two ``bytes.count``
passes per chunk, and the root part is no longer SHA-1 hashed (nothing used its digest).  This measures
read + envelope parse of a 1,000-document Register Document Set-b (~7 MB, the NIST single-document sample's
DocumentEntry repeated) with and without the limit, interleaved, and reports both; the limit must not make it
measurably slower (the bound leaves room for a loaded machine).
"""

from __future__ import annotations

import copy
import gc
import io
import time

import pytest

from tests.faults.figures import report
from tests.xds_registry.registry_helpers import new_patient_id, submission_bytes
from xds_core import ns
from xds_core.safe_xml import DEFAULT_MAX_XML_NODES, markup_count, parse_xml, to_bytes
from xds_core.soap.envelope import parse_envelope
from xds_core.soap.mtom_reader import read_message

pytestmark = [pytest.mark.slow, pytest.mark.fault]

DOCUMENTS = 1000
ROUNDS = 12


def _large_register_request() -> bytes:
    data, _ = submission_bytes("single_doc.xml", new_patient_id())
    request = parse_xml(data)
    entry = next(request.iter(ns.q(ns.RIM, "ExtrinsicObject")))
    for index in range(DOCUMENTS - 1):
        twin = copy.deepcopy(entry)
        twin.set("id", f"urn:uuid:00000000-0000-4000-8000-{index:012d}")
        entry.addnext(twin)
    body = to_bytes(request, xml_declaration=False)
    return (f"<env:Envelope xmlns:env='{ns.SOAP12}' xmlns:wsa='{ns.WSA}'><env:Header>"
            "<wsa:Action>urn:ihe:iti:2007:RegisterDocumentSet-b</wsa:Action>"
            "<wsa:MessageID>urn:uuid:00000000-0000-4000-8000-000000000042</wsa:MessageID>"
            "</env:Header><env:Body>").encode() + body + b"</env:Body></env:Envelope>"


def _read_and_parse(data: bytes, max_xml_nodes: int | None) -> float:
    """CPU milliseconds of this thread (other processes on a shared machine do not count)."""
    started = time.thread_time()
    message = read_message("application/soap+xml; charset=UTF-8", io.BytesIO(data), content_length=len(data),
                           max_size=1 << 30, max_xml_size=64 << 20, max_xml_nodes=max_xml_nodes)
    parse_envelope(message)
    return (time.thread_time() - started) * 1000


def test_counting_markup_does_not_slow_a_large_register_request() -> None:
    data = _large_register_request()
    assert markup_count(data) < DEFAULT_MAX_XML_NODES  # a realistic 1,000-document request is admitted
    uncounted, counted = [], []
    gc.disable()  # a collection landing in one run would be charged to it
    try:
        for _ in range(ROUNDS):  # interleaved: the machine's load hits both alike
            uncounted.append(_read_and_parse(data, None))
            counted.append(_read_and_parse(data, DEFAULT_MAX_XML_NODES))
    finally:
        gc.enable()
    report("xml-limit-cost", documents=DOCUMENTS, xml_mb=round(len(data) / 1e6, 1), nodes=markup_count(data),
           read_parse_cpu_ms_unlimited=round(min(uncounted), 1), read_parse_cpu_ms_limited=round(min(counted), 1),
           ratio=round(min(counted) / min(uncounted), 3))
    assert min(counted) < min(uncounted) * 1.2
