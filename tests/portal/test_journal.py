"""The transactions journal (portal/journal.py): one JSON line per audit event, shared by processes, rotated,
read from the end -- and never a patient id."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from portal import journal
from portal.journal import Journal
from tests.xds_repository.conftest import kos_doc, local, patient, provide_and_register_parts, send  # noqa: F401
from xds_core import audit
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.parse import parse_adhoc_query_response
from xds_core.soap.client import SoapClient
from xds_core.vocabulary import Action, ResponseStatus, StoredQuery

BASE_DIR = Path(__file__).resolve().parents[2]


def _event(n: int = 0, patient_id: str = "PID-SECRET^^^&1.2.3&ISO") -> audit.AuditEvent:
    return audit.transaction_event(
        audit.Transaction.ITI_18, audit.Side.RESPONDER, requestor=audit.soap_client("10.0.0.7"),
        responder=audit.soap_server(f"http://registry.example/xds/registry/{n}"),
        objects=[audit.patient(patient_id), audit.document(f"1.2.3.{n}", "1.2.9")],
        time=datetime(2026, 12, 7, 12, 0, n % 60, tzinfo=UTC))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_an_event_becomes_one_line_without_its_objects(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j(_event(1))
    (line,) = _lines(j.path)
    entry = json.loads(line)
    assert entry["transaction"] == "ITI-18" and entry["transaction_name"] == "Registry Stored Query"
    assert entry["event"] == "Query" and entry["outcome"] == 0 and entry["outcome_text"] == "success"
    assert entry["requestor_address"] == "10.0.0.7"
    assert entry["responder"] == "http://registry.example/xds/registry/1"
    assert "PID-SECRET" not in line and "1.2.3.1" not in line  # neither the patient nor the document


def test_last_reads_newest_first_across_the_rotated_file(tmp_path: Path) -> None:
    j = Journal(tmp_path, max_bytes=4000)
    for n in range(65):
        j(_event(n))
    assert j.previous_path.exists()  # rotated at least once
    assert j.path.stat().st_size < 4000 and j.previous_path.stat().st_size >= 4000
    assert not (tmp_path / "transactions.jsonl.2").exists()  # only one old file is kept
    on_disk = len(_lines(j.path)) + len(_lines(j.previous_path))
    assert 0 < len(_lines(j.path)) < 15 < on_disk
    last = j.last(15)  # more than the current file holds: the rest from the .1 file
    assert [int(e["responder"].rsplit("/", 1)[1]) for e in last] == list(range(64, 49, -1))
    assert len(j.last(10_000)) == on_disk
    assert j.last(0) == [] and Journal(tmp_path / "none").last(5) == []


def test_a_torn_line_is_skipped_by_the_reader(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j(_event(1))
    with open(j.path, "ab") as fh:
        fh.write(b'{"time": "cut by a cra')
    j.close()
    j2 = Journal(tmp_path)
    j2(_event(2))
    assert [e["responder"][-1] for e in j2.last(5)] == ["2", "1"]


def test_threads_appending_at_once_keep_whole_lines(tmp_path: Path) -> None:
    j = Journal(tmp_path, max_bytes=50_000)

    def write(k: int) -> None:
        for n in range(200):
            j(_event(k * 1000 + n))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = _lines(j.previous_path) + _lines(j.path)
    assert all(json.loads(line)["transaction"] == "ITI-18" for line in lines)
    assert len(lines) <= 1600 and len(j.last(100)) == 100


_WRITER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from portal.journal import Journal
from xds_core import audit
j = Journal(Path(sys.argv[1]), max_bytes=30_000)
for n in range(int(sys.argv[3])):
    j(audit.transaction_event(audit.Transaction.ITI_18, audit.Side.RESPONDER, requestor=audit.soap_client("10.0.0.7"),
      responder=audit.soap_server(f"http://registry.example/{sys.argv[2]}/{n}"), time=datetime.now(UTC)))
"""


def test_processes_sharing_the_file_keep_whole_lines_through_rotations(tmp_path: Path) -> None:
    # Separate interpreters, like gunicorn workers and listeners: nothing shared but the file.
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(k), "300"], cwd=BASE_DIR)
               for k in range(4)]
    assert [w.wait(60) for w in writers] == [0, 0, 0, 0]
    j = Journal(tmp_path)
    lines = _lines(j.previous_path) + _lines(j.path)
    assert lines and all(json.loads(line)["event"] == "Query" for line in lines)  # no torn or merged line
    assert not (tmp_path / "transactions.jsonl.2").exists()
    assert j.previous_path.stat().st_size >= 30_000  # they did rotate


def test_the_installed_sink_chains_to_the_one_before_and_leaves_it_on_uninstall(tmp_path: Path) -> None:
    before: list[audit.AuditEvent] = []
    previous = audit.set_sink(before.append)
    try:
        j = journal.install(tmp_path)
        assert journal.install(tmp_path / "other") is j  # once per process
        audit.record(_event(3))
        assert len(before) == 1 and len(_lines(j.path)) == 1
        journal.uninstall()
        audit.record(_event(4))
        assert len(before) == 2 and len(_lines(j.path)) == 1
    finally:
        journal.uninstall()
        audit.set_sink(previous)
    assert not audit.enabled()


def test_a_journal_that_cannot_write_breaks_no_transaction_and_the_chained_sink_still_gets_it(
        tmp_path: Path) -> None:
    before: list[audit.AuditEvent] = []
    previous = audit.set_sink(before.append)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    try:
        journal.install(blocker / "journal")  # mkdir fails on every write
        audit.record(_event(5))  # never raises
        assert len(before) == 1
    finally:
        journal.uninstall()
        audit.set_sink(previous)


@pytest.mark.django_db
def test_no_patient_id_reaches_the_file_after_an_iti41_and_an_iti18_in_process(local: Path, patient: str,  # noqa: F811
                                                                                tmp_path: Path) -> None:
    j = journal.install(tmp_path / "journal")
    try:
        body, parts, _ = provide_and_register_parts([kos_doc()], patient_id=patient)
        assert send(body, parts) == (ResponseStatus.SUCCESS, [])
        request = ebxml_serialize.adhoc_query_request(StoredQuery.FindDocuments, [
            ("$XDSDocumentEntryPatientId", [f"'{patient}'"]),
            ("$XDSDocumentEntryStatus", ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"])])
        result = SoapClient("local:registry").call(Action.RegistryStoredQuery.value, request)
        assert len(parse_adhoc_query_response(result.body).objects) == 1
    finally:
        journal.uninstall()
    text = j.path.read_text()
    transactions = [e.get("transaction") for e in j.last(20)]
    assert "ITI-41" in transactions and "ITI-42" in transactions and "ITI-18" in transactions
    bare_id = patient.split("^", 1)[0]
    assert bare_id not in text and "1.2.840.10008.5.1.4.1.1.88.59" not in text
