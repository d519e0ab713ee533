"""The repository as a real server process (gunicorn on loopback).

- ITI-41 -> ITI-42 to our registry running as *another* gunicorn process, then
  ITI-43 back, all over HTTP;
- a crash (SIGKILL) between storing and registering leaves a pending document
  that ``manage.py xds_repository_reconcile`` removes (or keeps, if the
  registry did register it);
- a large document streamed in and out with bounded server memory.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.xds_repository.conftest import Doc, StandInRegistry, new_oid, provide_and_register_parts
from tests.xds_repository.servers import Server, manage, start_server
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.messages import DocumentRequest
from xds_core.ebxml.parse import parse_adhoc_query_response, parse_retrieve_document_set_response
from xds_core.ebxml.responses import parse_registry_response
from xds_core.errors import ErrorCode
from xds_core.soap.client import SoapClient, TransportError
from xds_core.soap.mtom import OutgoingPart
from xds_core.vocabulary import Action, ResponseStatus, ReturnType, StoredQuery

REPOSITORY_ID = "1.3.6.1.4.1.21367.13.70.201"


def rows(server: Server) -> list[tuple[str, str, str]]:
    with sqlite3.connect(server.db_path) as db:
        return db.execute("SELECT unique_id, state, storage_name FROM xds_repository_storeddocument").fetchall()


def files(server: Server) -> list[Path]:
    """The stored documents (not the hidden in-flight markers of requests under way)."""
    root = server.document_dir
    return [p for p in root.rglob("*") if p.is_file() and not p.relative_to(root).parts[0].startswith(".")
            ] if root.exists() else []


def provide(url: str, docs: list[Doc], *, patient_id: str | None = None, timeout: float = 60) -> tuple[str, list]:  # type: ignore[type-arg]
    kwargs = {"patient_id": patient_id} if patient_id else {}
    body, parts, _ = provide_and_register_parts(docs, **kwargs)
    result = SoapClient(url + "/xds/repository", timeout=timeout).call(
        Action.ProvideAndRegisterDocumentSet, body, parts=parts, mtom=True)
    assert result.fault is None, result.fault
    return parse_registry_response(result.body)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def test_repository_and_registry_in_separate_processes_over_http(tmp_path: Path, servers: list[Server]) -> None:
    registry = start_server(tmp_path / "registry")
    servers.append(registry)
    patient = f"P{uuid.uuid4().hex[:10]}^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
    # The patient identity feed of the registry (ITI-8's effect), in the registry's own process/database.
    manage(registry.env, "shell", "-c",
           f"from xds_registry.patient_identity_feed.patients import add_or_update_patient; "
           f"add_or_update_patient({patient!r})")
    repository = start_server(tmp_path / "repository", XDS_REGISTRY_URL=registry.url + "/xds/registry",
                              XDS_REPOSITORY_UNIQUE_ID=REPOSITORY_ID)
    servers.append(repository)

    doc = Doc(content=b"over the wire " * 10_000)
    assert provide(repository.url, [doc], patient_id=patient) == (ResponseStatus.SUCCESS, [])
    assert rows(repository)[0][:2] == (doc.unique_id, "registered")
    assert rows(registry) == []  # the registry process stores metadata, not documents

    # The registry learnt hash, size and repositoryUniqueId from the repository (ITI-18 GetDocuments).
    query = ebxml_serialize.adhoc_query_request(StoredQuery.GetDocuments, [
        ("$XDSDocumentEntryUniqueId", [f"('{doc.unique_id}')"])], return_type=ReturnType.LeafClass)
    found = parse_adhoc_query_response(
        SoapClient(registry.url + "/xds/registry").call(Action.RegistryStoredQuery, query).body).objects
    assert [(e.hash, e.size, e.repository_unique_id) for e in found] == [
        (hashlib.sha1(doc.content).hexdigest(), str(len(doc.content)), REPOSITORY_ID)]

    # The registry's refusal comes back through the repository, and nothing stays.
    stranger = f"UNKNOWN{uuid.uuid4().hex[:6]}^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
    status, errors = provide(repository.url, [Doc(content=b"not for an unknown patient")], patient_id=stranger)
    assert status == ResponseStatus.FAILURE
    assert ErrorCode.XDSUnknownPatientId in [e.error_code for e in errors]
    assert len(rows(repository)) == 1 and len(files(repository)) == 1

    request = ebxml_serialize.retrieve_document_set_request([DocumentRequest(REPOSITORY_ID, doc.unique_id)])
    result = SoapClient(repository.url + "/xds/repository").call(Action.RetrieveDocumentSet, request)
    status, errors, documents = parse_retrieve_document_set_response(result.body)
    assert (status, errors) == (ResponseStatus.SUCCESS, [])
    assert result.binary(documents[0].element).read_bytes() == doc.content
    result.close()


@pytest.mark.parametrize("registry_registered_it", [False, True])
def test_crash_between_store_and_register_is_settled_by_reconcile(
        tmp_path: Path, servers: list[Server], stand_in_registry: StandInRegistry,
        registry_registered_it: bool) -> None:
    stand_in_registry.mode = "record-then-hang" if registry_registered_it else "hang"
    repository = start_server(tmp_path / "repository", XDS_REGISTRY_URL=stand_in_registry.url,
                              XDS_REPOSITORY_UNIQUE_ID=REPOSITORY_ID)
    servers.append(repository)
    doc = Doc(content=b"caught in a crash " * 20_000)
    outcome: list[object] = []

    def submit() -> None:
        try:
            outcome.append(provide(repository.url, [doc], timeout=30))
        except TransportError as exc:
            outcome.append(exc)

    client = threading.Thread(target=submit)
    client.start()
    assert stand_in_registry.got_register.wait(30), "the repository never sent ITI-42"
    # The document is stored and pending: ITI-42 is on its way and unanswered.
    assert [(uid, state) for uid, state, _ in rows(repository)] == [(doc.unique_id, "pending")]
    assert [p.read_bytes() for p in files(repository)] == [doc.content]

    repository.kill()
    stand_in_registry.mode = "accept"
    stand_in_registry.release.set()
    client.join(30)
    assert outcome and isinstance(outcome[0], TransportError)

    # What `make run` does at start-up: the default grace period (900 s) does not delay it, because
    # the process that wrote the pending row is known to be dead.
    result = manage(repository.env, "xds_repository_reconcile")
    assert Action.RegistryStoredQuery in stand_in_registry.received
    if registry_registered_it:
        assert "confirmed registered: 1; removed: 0" in result.stdout
        assert [(uid, state) for uid, state, _ in rows(repository)] == [(doc.unique_id, "registered")]
        assert [p.read_bytes() for p in files(repository)] == [doc.content]
    else:
        assert "confirmed registered: 0; removed: 1" in result.stdout
        assert rows(repository) == []
        assert files(repository) == []


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing for {pid}")


@pytest.mark.slow
def test_large_document_streams_in_and_out_with_bounded_server_memory(
        tmp_path: Path, servers: list[Server], stand_in_registry: StandInRegistry) -> None:
    size = 300 * 1024 * 1024
    block = hashlib.sha512(b"large").digest() * (1 << 14)  # 1 MiB, generated on the fly, never held whole

    def chunks() -> Iterator[bytes]:
        for index in range(size // len(block)):
            yield index.to_bytes(8, "big") + block[8:]

    expected = hashlib.sha1()
    for chunk in chunks():
        expected.update(chunk)
    repository = start_server(tmp_path / "repository", XDS_REGISTRY_URL=stand_in_registry.url,
                              XDS_REPOSITORY_UNIQUE_ID=REPOSITORY_ID)
    servers.append(repository)
    [worker] = repository.worker_pids()
    Path(f"/proc/{worker}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    baseline = _status_kb(worker, "VmRSS")

    unique_id = new_oid()
    doc = Doc(content=b"", unique_id=unique_id, mime_type="application/octet-stream")
    body, _, entries = provide_and_register_parts([doc])
    cid = [d for d in body.iter() if d.tag.endswith("Include")][0].get("href")[4:]
    part = OutgoingPart(cid, "application/octet-stream", chunks, size=size)
    result = SoapClient(repository.url + "/xds/repository", timeout=300).call(
        Action.ProvideAndRegisterDocumentSet, body, parts=[part], mtom=True)
    assert parse_registry_response(result.body) == (ResponseStatus.SUCCESS, [])
    assert stand_in_registry.entries[unique_id].hash == expected.hexdigest()
    assert stand_in_registry.entries[unique_id].size == str(size)

    request = ebxml_serialize.retrieve_document_set_request([DocumentRequest(REPOSITORY_ID, unique_id)])
    result = SoapClient(repository.url + "/xds/repository", timeout=300).call(Action.RetrieveDocumentSet, request)
    status, _, documents = parse_retrieve_document_set_response(result.body)
    attachment = result.binary(documents[0].element)
    assert status == ResponseStatus.SUCCESS
    assert (attachment.size, attachment.sha1) == (size, expected.hexdigest())
    assert attachment.path is not None  # the client spilled it to disk too
    result.close()

    growth_mb = (_status_kb(worker, "VmHWM") - baseline) / 1024
    assert growth_mb < 100, f"server worker grew by {growth_mb:.0f} MB for a {size >> 20} MB document"


def test_benchmark_command_measures_a_running_server(
        tmp_path: Path, servers: list[Server], stand_in_registry: StandInRegistry) -> None:
    repository = start_server(tmp_path / "repository", XDS_REGISTRY_URL=stand_in_registry.url,
                              XDS_REPOSITORY_UNIQUE_ID=REPOSITORY_ID)
    servers.append(repository)
    output = tmp_path / "repository.json"
    result = manage(repository.env, "xds_bench_repository", "--url", repository.url, "--no-feed",
                    "--repository-id", REPOSITORY_ID, "--small-count", "40", "--clients", "4",
                    "--large-size", str(5 * 1024 * 1024), "--output", str(output))
    figures = json.loads(output.read_text())
    assert figures["small"]["failures"] == 0 and figures["small"]["per_second"] > 0
    assert figures["large"]["in_mb_per_second"] > 0 and figures["large"]["out_mb_per_second"] > 0
    assert figures["server_pids"] == sorted([repository.process.pid, *repository.worker_pids()])
    assert figures["large"]["in_rss_growth_mb"] is not None
    assert figures["file_copy"]["mb_per_second"] > 0
    assert "ITI-43" in result.stdout
