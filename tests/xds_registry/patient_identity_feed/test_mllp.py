"""ITI-8 Patient Identity Feed over a real MLLP socket: ADT in, ACK AA/AE/AR out, registry updated."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.xds_registry.registry_helpers import AUTHORITY, load_submission
from xds_core.affinity_domain import load_affinity_domain
from xds_core.errors import ErrorCode, XdsError
from xds_registry import models as m
from xds_registry.patient_identity_feed.hl7v2 import parse_message
from xds_registry.patient_identity_feed.mllp import send, serve_in_thread
from xds_registry.register_document_set import register_document_set

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def feed(corpus_dir: Path):
    domain = load_affinity_domain(corpus_dir / "affinity-domain" / "codes.xml")
    server, thread = serve_in_thread("127.0.0.1", 0, domain)
    host, port = server.server_address[:2]
    yield lambda text: parse_message(send(host, port, text))
    server.shutdown()
    server.server_close()
    thread.join(5)


def adt(event: str, pid3: str, *, version: str = "2.3.1", mrg: str | None = None, control: str = "MSG1",
        message_type: str = "ADT") -> str:
    segments = [
        f"MSH|^~\\&|PAT_IDENTITY_X_REF_MGR|ORG|XDS_REGISTRY|AFFINITY|20261127120000||{message_type}^{event}^ADT_{event}"
        f"|{control}|P|{version}",
        "EVN||20261127120000",
        f"PID|||{pid3}||Doe^Jane^^^^^L||19800101|F|||1 Main St^^Springfield^IL^62701^USA",
        "PV1||O",
    ]
    if mrg:
        segments.append(f"MRG|{mrg}")
    return "\r".join(segments) + "\r"


def local_id() -> str:
    return f"P{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("event", ["A01", "A04", "A05"])
def test_admit_register_preadmit_create_the_patient(feed, event: str):
    pid = local_id()
    ack = feed(adt(event, f"{pid}^^^IHEFACILITY&{AUTHORITY}&ISO", control=f"C-{event}"))
    assert ack.field("MSA", 1) == "AA" and ack.field("MSA", 2) == f"C-{event}"
    assert ack.message_type == "ACK" and ack.trigger_event == event
    assert ack.segment("ERR") is None
    patient = m.Patient.objects.get(patient_id=f"{pid}^^^&{AUTHORITY}&ISO")
    assert (patient.family_name, patient.given_name) == ("Doe", "Jane")
    assert (patient.birth_date, patient.sex) == ("19800101", "F")


def test_a08_updates_demographics_and_v25_is_accepted(feed):
    pid = local_id()
    feed(adt("A04", f"{pid}^^^&{AUTHORITY}&ISO"))
    ack = feed(adt("A08", f"{pid}^^^&{AUTHORITY}&ISO", version="2.5").replace("Doe^Jane", "Roe^Jane"))
    assert ack.field("MSA", 1) == "AA" and ack.version == "2.5"
    assert m.Patient.objects.get(patient_id=f"{pid}^^^&{AUTHORITY}&ISO").family_name == "Roe"


def test_the_affinity_domain_identifier_is_chosen_among_repetitions(feed):
    pid = local_id()
    ack = feed(adt("A01", f"X1^^^OTHER&1.2.3.4&ISO~{pid}^^^&{AUTHORITY}&ISO"))
    assert ack.field("MSA", 1) == "AA"
    assert m.Patient.objects.filter(patient_id=f"{pid}^^^&{AUTHORITY}&ISO").exists()
    assert not m.Patient.objects.filter(patient_id__startswith="X1^").exists()


def test_foreign_assigning_authority_is_an_application_error_with_err_detail(feed):
    ack = feed(adt("A01", "X9^^^OTHER&1.2.3.4&ISO", version="2.5"))
    assert ack.field("MSA", 1) == "AE"
    err = ack.segment("ERR")
    assert err is not None
    assert ack.field("ERR", 2) == "PID^1^3" and ack.component("ERR", 3, 1) == "103"
    assert m.Patient.objects.count() == 0


def test_v231_err_segment_form(feed):
    ack = feed(adt("A01", "X9^^^OTHER&1.2.3.4&ISO"))
    assert ack.field("MSA", 1) == "AE"
    assert ack.field("ERR", 1).startswith("PID^1^3^103&")


def test_unsupported_event_and_message_type_and_version_are_rejected(feed):
    pid = f"{local_id()}^^^&{AUTHORITY}&ISO"
    assert feed(adt("A03", pid)).field("MSA", 1) == "AR"
    assert feed(adt("O01", pid, message_type="ORM")).field("MSA", 1) == "AR"
    ack = feed(adt("A01", pid, version="3.0"))
    assert ack.field("MSA", 1) == "AR" and ack.component("ERR", 3, 1) == "203"  # answered as v2.5
    assert m.Patient.objects.count() == 0


def test_garbage_is_rejected():
    from xds_registry.patient_identity_feed.hl7v2 import handle

    ack, message, outcome = handle("hello", None)
    assert message is None and outcome.ack_code == "AR"
    assert parse_message(ack).field("MSA", 1) == "AR"


def test_merge_makes_the_old_id_unknown_and_repoints_its_documents(feed):
    surviving, merged = local_id(), local_id()
    surviving_cx, merged_cx = f"{surviving}^^^&{AUTHORITY}&ISO", f"{merged}^^^&{AUTHORITY}&ISO"
    assert feed(adt("A01", surviving_cx)).field("MSA", 1) == "AA"
    assert feed(adt("A01", merged_cx)).field("MSA", 1) == "AA"
    result = register_document_set(load_submission("single_doc.xml", merged_cx)[0])
    ack = feed(adt("A40", surviving_cx, mrg=merged_cx))
    assert ack.field("MSA", 1) == "AA"
    assert m.Patient.objects.get(patient_id=merged_cx).merged_into.patient_id == surviving_cx
    de = m.DocumentEntry.objects.get(entry_uuid=result.entry_uuids["Document01"])
    assert de.patient_id == surviving_cx
    with pytest.raises(XdsError) as exc:
        register_document_set(load_submission("single_doc.xml", merged_cx)[0])
    assert [e.error_code for e in exc.value.errors] == [ErrorCode.XDSUnknownPatientId]
    register_document_set(load_submission("single_doc.xml", surviving_cx)[0])


def test_merge_of_an_unknown_id_is_an_application_error(feed):
    surviving = f"{local_id()}^^^&{AUTHORITY}&ISO"
    ack = feed(adt("A40", surviving, mrg=f"{local_id()}^^^&{AUTHORITY}&ISO", version="2.5"))
    assert ack.field("MSA", 1) == "AE" and ack.component("ERR", 3, 1) == "204"


def test_a40_without_mrg_is_an_error(feed):
    ack = feed(adt("A40", f"{local_id()}^^^&{AUTHORITY}&ISO"))
    assert ack.field("MSA", 1) == "AE"


def test_several_messages_on_one_connection(corpus_dir: Path):
    import socket

    from xds_core.mllp import frame, read_frames

    server, thread = serve_in_thread("127.0.0.1", 0, None)
    try:
        with socket.create_connection(server.server_address[:2], timeout=10) as sock:
            ids = [f"{local_id()}^^^&{AUTHORITY}&ISO" for _ in range(3)]
            sock.sendall(b"".join(frame(adt("A04", p, control=f"N{i}").encode()) for i, p in enumerate(ids)))
            answers = read_frames(sock)
            acks = [parse_message(next(answers).decode()) for _ in ids]
        assert [(a.field("MSA", 1), a.field("MSA", 2)) for a in acks] == [("AA", "N0"), ("AA", "N1"), ("AA", "N2")]
        assert m.Patient.objects.filter(patient_id__in=ids).count() == 3
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
