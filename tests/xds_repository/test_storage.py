"""Content-addressed storage: atomic writes, hash-checked reads, any Django storage."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from django.core.files.storage import InMemoryStorage

from xds_repository import storage as store
from xds_repository.storage import ContentAddressedStorage, CorruptDocument, content_name


def _put(storage, data: bytes, path: Path | None = None) -> str:  # type: ignore[no-untyped-def]
    return store.put(storage, sha1=hashlib.sha1(data).hexdigest(), size=len(data), path=path,
                     open_stream=lambda: io.BytesIO(data))


def test_content_name_fans_out_by_sha1() -> None:
    sha1 = hashlib.sha1(b"x").hexdigest()
    assert content_name(sha1) == f"{sha1[:2]}/{sha1}"
    with pytest.raises(ValueError):
        content_name("../../etc/passwd")


def test_stream_is_stored_under_its_sha1_and_read_back(tmp_path: Path) -> None:
    storage = ContentAddressedStorage(tmp_path)
    data = os.urandom(3 * store.CHUNK_SIZE + 17)
    name = _put(storage, data)
    assert (tmp_path / name).read_bytes() == data
    assert b"".join(store.chunks(storage, name, sha1=hashlib.sha1(data).hexdigest(), size=len(data))) == data
    assert not [p for p in tmp_path.rglob(".tmp-*")], "no temporary file may remain"


def test_spill_file_is_hard_linked_not_copied(tmp_path: Path) -> None:
    storage = ContentAddressedStorage(tmp_path / "docs")
    spill = tmp_path / "spill.bin"
    data = os.urandom(100_000)
    spill.write_bytes(data)
    name = _put(storage, data, path=spill)
    stored = tmp_path / "docs" / name
    assert stored.read_bytes() == data
    assert stored.stat().st_ino == spill.stat().st_ino
    spill.unlink()  # what Attachment.close() does: the stored document stays
    assert stored.read_bytes() == data


def test_same_content_twice_is_one_file(tmp_path: Path) -> None:
    storage = ContentAddressedStorage(tmp_path)
    assert _put(storage, b"same") == _put(storage, b"same")
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 1


def test_corrupted_file_is_an_error_not_wrong_bytes(tmp_path: Path) -> None:
    storage = ContentAddressedStorage(tmp_path)
    data = b"original content " * 1000
    name = _put(storage, data)
    target = tmp_path / name
    target.chmod(0o600)
    target.write_bytes(data.replace(b"original", b"tampered"))
    sha1 = hashlib.sha1(data).hexdigest()
    with pytest.raises(CorruptDocument):
        store.verify(storage, name, sha1=sha1, size=len(data))
    with pytest.raises(CorruptDocument):
        list(store.chunks(storage, name, sha1=sha1, size=len(data)))


def test_truncated_and_missing_files_are_errors(tmp_path: Path) -> None:
    storage = ContentAddressedStorage(tmp_path)
    data = b"abc" * 1000
    name = _put(storage, data)
    (tmp_path / name).write_bytes(data[:-1])
    with pytest.raises(CorruptDocument):
        store.verify(storage, name, sha1=hashlib.sha1(data).hexdigest(), size=len(data))
    (tmp_path / name).unlink()
    with pytest.raises(CorruptDocument):
        store.verify(storage, name, sha1=hashlib.sha1(data).hexdigest(), size=len(data))


def test_names_cannot_escape_the_root(tmp_path: Path) -> None:
    storage = ContentAddressedStorage(tmp_path / "root")
    with pytest.raises(store.StorageError):
        storage.path("../outside")


def test_any_django_storage_can_hold_documents() -> None:
    storage = InMemoryStorage()
    data = os.urandom(50_000)
    name = _put(storage, data)
    sha1 = hashlib.sha1(data).hexdigest()
    assert b"".join(store.chunks(storage, name, sha1=sha1, size=len(data))) == data
    store.remove(storage, name)
    assert not storage.exists(name)


def test_configured_backend_is_the_content_addressed_storage(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from django.core.files.storage import storages

    settings.STORAGES = {**settings.STORAGES, "xds_documents": {
        "BACKEND": "xds_repository.storage.ContentAddressedStorage", "OPTIONS": {"location": str(tmp_path)}}}
    backend = storages["xds_documents"]
    assert isinstance(backend, ContentAddressedStorage)
    assert backend.location == tmp_path


def test_damaged_file_under_a_content_name_is_replaced_when_stored_again(tmp_path: Path) -> None:
    storage = ContentAddressedStorage(tmp_path)
    data = os.urandom(10_000)
    name = _put(storage, data)
    (tmp_path / name).write_bytes(data[:100])
    spill = tmp_path / "spill"
    spill.write_bytes(data)
    assert _put(storage, data, path=spill) == name
    assert (tmp_path / name).read_bytes() == data
