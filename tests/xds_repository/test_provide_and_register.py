"""ITI-41 / RAD-68 through the repository's SOAP endpoint (real SOAP bytes, in process),
forwarding ITI-42 over HTTP to a stand-in registry on loopback."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.xds_repository.conftest import (
    REPOSITORY_ID,
    Doc,
    StandInRegistry,
    assert_nothing_stored,
    codes,
    kos_bytes,
    kos_doc,
    new_oid,
    provide_and_register_parts,
    send,
    stored_files,
)
from xds_core import disk, ns
from xds_core.errors import ErrorCode
from xds_core.vocabulary import ObjectType, ResponseStatus
from xds_repository import records
from xds_repository import storage as store
from xds_repository.conf import repository_config
from xds_repository.models import StoredDocument
from xds_repository.reconcile import reconcile
from xds_repository.storage import ContentAddressedStorage

pytestmark = pytest.mark.django_db

# --- happy paths ---------------------------------------------------------------------------

def test_mtom_document_is_stored_and_registered_with_hash_size_and_repository_id(
        doc_dir: Path, stand_in_registry: StandInRegistry) -> None:
    content = b"hello XDS " * 5000
    doc = Doc(content=content)
    status, errors = send(*provide_and_register_parts([doc])[:2])
    assert (status, errors) == (ResponseStatus.SUCCESS, [])
    row = StoredDocument.objects.get()
    assert (row.unique_id, row.state, row.size, row.hash, row.mime_type) == (
        doc.unique_id, StoredDocument.State.REGISTERED, len(content), hashlib.sha1(content).hexdigest(), "text/plain")
    assert [p.read_bytes() for p in stored_files(doc_dir)] == [content]
    registered = stand_in_registry.entries[doc.unique_id]
    assert registered.hash == hashlib.sha1(content).hexdigest()
    assert registered.size == str(len(content))
    assert registered.repository_unique_id == REPOSITORY_ID


def test_inline_base64_document_inside_mtom_is_accepted(doc_dir: Path) -> None:
    doc = Doc(content=b"inline content")
    body, parts, _ = provide_and_register_parts([doc], inline=True)
    assert send(body, parts, mtom=True) == (ResponseStatus.SUCCESS, [])
    assert StoredDocument.objects.get().hash == hashlib.sha1(b"inline content").hexdigest()


def test_inline_base64_document_in_plain_soap_is_accepted(doc_dir: Path) -> None:
    doc = Doc(content=b"plain soap")
    body, parts, _ = provide_and_register_parts([doc], inline=True)
    assert send(body, parts, mtom=False) == (ResponseStatus.SUCCESS, [])
    assert [p.read_bytes() for p in stored_files(doc_dir)] == [b"plain soap"]


def test_several_documents_in_one_submission(doc_dir: Path) -> None:
    docs = [Doc(content=f"document {i}".encode() * 1000) for i in range(3)]
    assert send(*provide_and_register_parts(docs)[:2]) == (ResponseStatus.SUCCESS, [])
    assert sorted(StoredDocument.objects.values_list("unique_id", flat=True)) == sorted(d.unique_id for d in docs)


def test_matching_submitted_hash_and_size_are_accepted(doc_dir: Path) -> None:
    content = b"checked"
    doc = Doc(content=content, hash=hashlib.sha1(content).hexdigest().upper(), size=len(content))
    assert send(*provide_and_register_parts([doc])[:2]) == (ResponseStatus.SUCCESS, [])


# --- metadata errors (nothing stored, registry not asked) ------------------------------------

def test_entry_without_document_is_xds_missing_document(doc_dir: Path, stand_in_registry: StandInRegistry) -> None:
    body, parts, entries = provide_and_register_parts([Doc(content=b"a"), Doc(content=b"b")])
    second = [d for d in body.iter(f"{{{ns.XDSB}}}Document") if d.get("id") == entries[1].id][0]
    body.remove(second)
    status, errors = send(body, parts[:1])
    assert status == ResponseStatus.FAILURE
    assert codes(errors) == [ErrorCode.XDSMissingDocument]
    assert entries[1].id in errors[0].code_context
    assert_nothing_stored(doc_dir)
    assert stand_in_registry.received == []


def test_document_without_entry_is_xds_missing_document_metadata(doc_dir: Path) -> None:
    body, parts, _ = provide_and_register_parts([Doc(content=b"a")])
    extra = etree.SubElement(body, f"{{{ns.XDSB}}}Document", id="urn:uuid:0f0e0d0c-0000-4000-8000-000000000000")
    extra.text = base64.b64encode(b"orphan").decode()
    status, errors = send(body, parts)
    assert status == ResponseStatus.FAILURE
    assert codes(errors) == [ErrorCode.XDSMissingDocumentMetadata]
    assert_nothing_stored(doc_dir)


def test_xop_include_naming_no_part_is_xds_missing_document(doc_dir: Path) -> None:
    body, parts, _ = provide_and_register_parts([Doc(content=b"a"), Doc(content=b"b")])
    status, errors = send(body, parts[:1])  # the second part is not sent
    assert status == ResponseStatus.FAILURE
    assert codes(errors) == [ErrorCode.XDSMissingDocument]
    assert_nothing_stored(doc_dir)


@pytest.mark.parametrize("field", ["hash", "size"])
def test_submitted_hash_or_size_differing_from_content_is_repository_metadata_error(
        doc_dir: Path, stand_in_registry: StandInRegistry, field: str) -> None:
    content = b"the real content"
    doc = Doc(content=content, hash=hashlib.sha1(b"other").hexdigest()) if field == "hash" else \
        Doc(content=content, size=len(content) + 1)
    status, errors = send(*provide_and_register_parts([doc])[:2])
    assert status == ResponseStatus.FAILURE
    assert codes(errors) == [ErrorCode.XDSRepositoryMetadataError]
    assert f"submitted {field}" in errors[0].code_context
    assert_nothing_stored(doc_dir)
    assert stand_in_registry.received == []


def test_duplicate_unique_ids_in_one_message(doc_dir: Path) -> None:
    uid = new_oid()
    status, errors = send(*provide_and_register_parts([Doc(content=b"1", unique_id=uid),
                                                       Doc(content=b"2", unique_id=uid)])[:2])
    assert status == ResponseStatus.FAILURE
    assert codes(errors) == [ErrorCode.XDSRepositoryDuplicateUniqueIdInMessage]
    assert_nothing_stored(doc_dir)


def test_document_above_the_size_limit_is_refused_cleanly(doc_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_MAX_DOCUMENT_SIZE = 1000
    status, errors = send(*provide_and_register_parts([Doc(content=b"x" * 1001)])[:2])
    assert status == ResponseStatus.FAILURE
    assert codes(errors) == [ErrorCode.XDSRepositoryOutOfResources]
    assert "1001 bytes" in errors[0].code_context
    assert_nothing_stored(doc_dir)


def test_on_demand_entry_is_refused(doc_dir: Path) -> None:
    body, parts, entries = provide_and_register_parts([Doc(content=b"a")])
    for extrinsic in body.iter(f"{{{ns.RIM}}}ExtrinsicObject"):
        extrinsic.set("objectType", ObjectType.ON_DEMAND_DOCUMENT_ENTRY)
    status, errors = send(body, parts)
    assert status == ResponseStatus.FAILURE
    assert ErrorCode.XDSRepositoryMetadataError in codes(errors)
    assert_nothing_stored(doc_dir)


# --- RAD-68 imaging manifests ----------------------------------------------------------------

def test_kos_manifest_is_accepted(doc_dir: Path) -> None:
    doc = kos_doc()
    assert send(*provide_and_register_parts([doc])[:2]) == (ResponseStatus.SUCCESS, [])
    assert StoredDocument.objects.get().mime_type == "application/dicom"


def test_manifest_that_is_not_dicom_is_refused(doc_dir: Path) -> None:
    doc = kos_doc(content=b"not a DICOM file at all" * 20)
    status, errors = send(*provide_and_register_parts([doc])[:2])
    assert status == ResponseStatus.FAILURE
    assert codes(errors) == [ErrorCode.XDSRepositoryMetadataError]
    assert "not a parseable DICOM" in errors[0].code_context
    assert_nothing_stored(doc_dir)


def test_manifest_of_another_sop_class_is_refused(doc_dir: Path) -> None:
    uid = new_oid()
    doc = kos_doc(uid, content=kos_bytes(uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.2"))
    status, errors = send(*provide_and_register_parts([doc])[:2])
    assert codes(errors) == [ErrorCode.XDSRepositoryMetadataError]
    assert "not Key Object Selection" in errors[0].code_context
    assert_nothing_stored(doc_dir)


def test_manifest_whose_sop_instance_uid_differs_from_unique_id_is_refused(doc_dir: Path) -> None:
    doc = kos_doc(new_oid(), content=kos_bytes(new_oid()))
    status, errors = send(*provide_and_register_parts([doc])[:2])
    assert codes(errors) == [ErrorCode.XDSRepositoryMetadataError]
    assert "differs from the KOS SOP Instance UID" in errors[0].code_context
    assert_nothing_stored(doc_dir)


def test_manifest_with_a_mime_type_other_than_application_dicom_is_refused(doc_dir: Path) -> None:
    doc = kos_doc(mime_type="application/octet-stream")
    status, errors = send(*provide_and_register_parts([doc])[:2])
    assert codes(errors) == [ErrorCode.XDSRepositoryMetadataError]
    assert "must have mimeType application/dicom" in errors[0].code_context
    assert_nothing_stored(doc_dir)


# --- registry trouble: nothing left behind ---------------------------------------------------

def test_registry_down_is_xds_registry_not_available_and_nothing_stays(doc_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.XDS_REGISTRY_URL = f"http://127.0.0.1:{port}/xds/registry"  # nobody listens there
    status, errors = send(*provide_and_register_parts([Doc(content=b"z" * 500_000)])[:2])
    assert status == ResponseStatus.FAILURE
    assert codes(errors) == [ErrorCode.XDSRegistryNotAvailable]
    assert_nothing_stored(doc_dir)


def test_registry_rejection_returns_its_errors_and_nothing_stays(
        doc_dir: Path, stand_in_registry: StandInRegistry) -> None:
    stand_in_registry.mode = "reject"
    status, errors = send(*provide_and_register_parts([Doc(content=b"y" * 500_000), kos_doc()])[:2])
    assert status == ResponseStatus.FAILURE
    assert codes(errors) == [ErrorCode.XDSPatientIdDoesNotMatch]
    assert errors[0].code_context == "stand-in registry says no"
    assert_nothing_stored(doc_dir)


def _reconcile_now(registry: StandInRegistry) -> Any:
    """What the periodic job does once the grace period is over (the writer here is alive: grace 0)."""
    return reconcile(repository_unique_id=REPOSITORY_ID, registry_url=registry.url,
                     storage=repository_config().storage, grace=timedelta(0), registry_timeout=10)


def test_registry_answering_no_soap_leaves_the_document_pending_until_reconcile_removes_it(
        doc_dir: Path, stand_in_registry: StandInRegistry) -> None:
    """An answer that is not a RegistryResponse says nothing about what the registry did: the document
    stays (pending) until reconcile asks the registry, which does not know it."""
    stand_in_registry.mode = "garbage"
    doc = Doc(content=b"w")
    status, errors = send(*provide_and_register_parts([doc])[:2])
    assert codes(errors) == [ErrorCode.XDSRegistryNotAvailable]
    assert [(r.unique_id, r.state) for r in StoredDocument.objects.all()] == [(doc.unique_id, "pending")]
    assert [p.read_bytes() for p in stored_files(doc_dir)] == [b"w"]
    report = _reconcile_now(stand_in_registry)
    assert (report.examined, report.registered, report.removed) == (1, [], [doc.unique_id])
    assert_nothing_stored(doc_dir)


@pytest.mark.parametrize("registry_registered_it", [True, False])
def test_a_registry_timing_out_after_receiving_iti42_leaves_rows_pending_and_content_for_reconcile(
        doc_dir: Path, stand_in_registry: StandInRegistry, settings, registry_registered_it: bool) -> None:  # type: ignore[no-untyped-def]
    """The registry (a real HTTP server thread) reads the ITI-42 and then sleeps past the repository's
    timeout.  The source hears XDSRegistryNotAvailable, but nothing is deleted: the registry may hold
    the documents.  Reconcile then settles them by what the registry says."""
    settings.XDS_REGISTRY_TIMEOUT = 1
    stand_in_registry.mode = "record-then-hang" if registry_registered_it else "hang"
    docs = [Doc(content=b"timed out " * 100_000), kos_doc()]  # one spilled MTOM part, one manifest
    status, errors = send(*provide_and_register_parts(docs)[:2])
    assert stand_in_registry.got_register.is_set()
    assert status == ResponseStatus.FAILURE and codes(errors) == [ErrorCode.XDSRegistryNotAvailable]
    assert sorted((r.unique_id, r.state) for r in StoredDocument.objects.all()) == sorted(
        (d.unique_id, "pending") for d in docs)
    assert len(stored_files(doc_dir)) == 2
    [owner] = {r.owner for r in StoredDocument.objects.all()}
    assert owner.count("/") == 4  # process and request: the request's in-flight marker is gone with it
    assert records.request_is_over(owner, store.inflight_dir(repository_config().storage))
    # A remote registry that timed out may still be working on the ITI-42: not settled before the grace period.
    assert reconcile(repository_unique_id=REPOSITORY_ID, registry_url=stand_in_registry.url,
                     storage=repository_config().storage, grace=timedelta(hours=1)).examined == 0
    stand_in_registry.release.set()  # the registry's thread finishes; its "answer" went nowhere

    report = _reconcile_now(stand_in_registry)
    assert report.error is None and report.examined == 2
    if registry_registered_it:
        assert sorted(report.registered) == sorted(d.unique_id for d in docs) and report.removed == []
        assert {r.state for r in StoredDocument.objects.all()} == {"registered"}
        assert len(stored_files(doc_dir)) == 2
    else:
        assert sorted(report.removed) == sorted(d.unique_id for d in docs) and report.registered == []
        assert_nothing_stored(doc_dir)


def test_a_connection_reset_after_iti42_was_sent_keeps_the_document(doc_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    """A registry that reads the request and closes the connection without a word (a crash, a proxy
    reset): the request went out, so the outcome is unknown and the document stays pending."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received: list[int] = []

    def read_then_close() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(10)
            data = b""
            while b"</" not in data[-4096:] or len(data) < 200:  # the head and some of the body
                chunk = connection.recv(65536)
                if not chunk:
                    break
                data += chunk
            received.append(len(data))
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST

    server = threading.Thread(target=read_then_close, daemon=True)
    server.start()
    settings.XDS_REGISTRY_URL = f"http://127.0.0.1:{listener.getsockname()[1]}/xds/registry"
    try:
        status, errors = send(*provide_and_register_parts([Doc(content=b"reset " * 1000)])[:2])
    finally:
        server.join(10)
        listener.close()
    assert received and received[0] > 0
    assert codes(errors) == [ErrorCode.XDSRegistryNotAvailable]
    assert [r.state for r in StoredDocument.objects.all()] == ["pending"]
    assert len(stored_files(doc_dir)) == 1


def test_rejected_resubmission_keeps_the_content_of_a_registered_document(
        doc_dir: Path, stand_in_registry: StandInRegistry) -> None:
    content = b"shared content" * 1000
    first = Doc(content=content)
    assert send(*provide_and_register_parts([first])[:2])[0] == ResponseStatus.SUCCESS
    stand_in_registry.mode = "reject"
    assert send(*provide_and_register_parts([Doc(content=content)])[:2])[0] == ResponseStatus.FAILURE
    row = StoredDocument.objects.get()
    assert row.unique_id == first.unique_id
    assert [p.read_bytes() for p in stored_files(doc_dir)] == [content]


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs) to fill up."""
    mount_point = tmp_path / "small-fs"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.parametrize("size", [100_000, 3_000_000])  # in memory / spilled to a file by the SOAP layer
def test_full_disk_is_xds_repository_out_of_resources_and_leaves_nothing(
        doc_dir: Path, settings, small_filesystem: Path, size: int) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_MIN_FREE_SPACE = 0  # the device's own ENOSPC, not the watermark
    settings.STORAGES = {**settings.STORAGES, "xds_documents": {
        "BACKEND": "xds_repository.storage.ContentAddressedStorage", "OPTIONS": {"location": str(small_filesystem)}}}
    (small_filesystem / "filler").write_bytes(b"\0" * 1_000_000)  # ~48 kB left
    status, errors = send(*provide_and_register_parts([Doc(content=os.urandom(size))])[:2])
    assert status == ResponseStatus.FAILURE
    assert codes(errors) == [ErrorCode.XDSRepositoryOutOfResources]
    assert StoredDocument.objects.count() == 0
    assert [p.name for p in small_filesystem.rglob("*") if p.is_file()] == ["filler"]


class FillsUpStorage(ContentAddressedStorage):
    """The real storage on a device that fills up mid-write: half of each copy lands, then ENOSPC."""

    @staticmethod
    def _full(out: Any, data: bytes) -> None:
        out.write(data[: len(data) // 2])
        out.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    @classmethod
    def _copy_chunks(cls, content: Any, out: Any) -> None:
        content.seek(0)
        cls._full(out, content.read())

    @classmethod
    def _sendfile(cls, source: Path, out: Any) -> None:
        cls._full(out, source.read_bytes())


@pytest.mark.parametrize("size", [100_000, 3_000_000])  # in memory / spilled to a file by the SOAP layer
def test_a_device_filling_up_mid_write_is_out_of_resources_and_leaves_no_partial_file(
        doc_dir: Path, settings, monkeypatch, size: int) -> None:  # type: ignore[no-untyped-def]
    """Runs everywhere (no tmpfs needed): the full-disk branch of the real storage code."""
    settings.XDS_MIN_FREE_SPACE = 0
    settings.STORAGES = {**settings.STORAGES, "xds_documents": {
        "BACKEND": f"{__name__}.FillsUpStorage", "OPTIONS": {"location": str(doc_dir)}}}

    def cross_device(*_args: object) -> None:  # the spill file and the store on different devices: a copy
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    status, errors = send(*provide_and_register_parts([Doc(content=os.urandom(size))])[:2])
    assert status == ResponseStatus.FAILURE
    assert codes(errors) == [ErrorCode.XDSRepositoryOutOfResources]
    assert StoredDocument.objects.count() == 0
    assert [p for p in doc_dir.rglob("*") if p.is_file()] == []


# --- the free-space watermark -------------------------------------------------------------------

def test_a_store_below_the_watermark_refuses_before_writing_anything(doc_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    """Watermark above the real free space: refused with XDSRepositoryOutOfResources, no row, no file."""
    settings.XDS_MIN_FREE_SPACE = disk.free_bytes(doc_dir) + (1 << 40)
    status, errors = send(*provide_and_register_parts([Doc(content=b"v" * 300_000), kos_doc()])[:2])
    assert status == ResponseStatus.FAILURE
    assert codes(errors) == [ErrorCode.XDSRepositoryOutOfResources]
    assert "low on disk space" in errors[0].code_context
    assert_nothing_stored(doc_dir)


def test_the_watermark_counts_the_incoming_documents_on_a_real_small_filesystem(
        doc_dir: Path, settings, small_filesystem: Path, stand_in_registry: StandInRegistry) -> None:  # type: ignore[no-untyped-def]
    """A 1 MiB tmpfs, a 256 KiB watermark: a 300 kB document fits above it, a 700 kB one would not."""
    settings.STORAGES = {**settings.STORAGES, "xds_documents": {
        "BACKEND": "xds_repository.storage.ContentAddressedStorage", "OPTIONS": {"location": str(small_filesystem)}}}
    settings.XDS_MIN_FREE_SPACE = 256 * 1024
    fits = Doc(content=os.urandom(300_000))
    assert send(*provide_and_register_parts([fits])[:2]) == (ResponseStatus.SUCCESS, [])
    free_before = disk.free_bytes(small_filesystem)
    status, errors = send(*provide_and_register_parts([Doc(content=os.urandom(700_000))])[:2])
    assert codes(errors) == [ErrorCode.XDSRepositoryOutOfResources]
    assert [r.unique_id for r in StoredDocument.objects.all()] == [fits.unique_id]
    assert [p.read_bytes() for p in small_filesystem.rglob("*") if p.is_file()] == [fits.content]
    assert disk.free_bytes(small_filesystem) == free_before
