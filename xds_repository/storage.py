"""Document storage: content-addressed, atomic, hash-checked on read.

The default backend, :class:`ContentAddressedStorage`, keeps each document as
``<root>/<sha1[0:2]>/<sha1>``.  Writes are atomic and durable: a temporary
file in the target directory (or a hard link to the MTOM spill file),
``fdatasync``, ``rename``, ``fsync`` of the directory, so a crash leaves either
the whole document or nothing under its final name.  One fan-out level of 256
directories, created once (each creation also fsyncs the parent), keeps a new
document at two syncs.  Because the name *is* the SHA-1, a second write of the
same content is a no-op and every read can be checked against the name.

The backend is an ordinary Django :class:`~django.core.files.storage.Storage`
and is looked up through ``settings.STORAGES["xds_documents"]``, so any other
Django storage (an object store, say) can replace it; the module-level helpers
below (:func:`put`, :func:`verify`, :func:`chunks`, :func:`remove`) work with
any backend and take the fast paths (hard link / ``sendfile``) only when the
backend is ours.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage
from django.utils.deconstruct import deconstructible

#: Read/write granularity: large enough for throughput, small enough for memory.
CHUNK_SIZE = 1 << 20


class StorageError(Exception):
    """The storage could not keep or give back a document."""


class OutOfSpace(StorageError):
    """The storage device is full (ENOSPC / EDQUOT)."""


class CorruptDocument(StorageError):
    """Stored bytes no longer match their SHA-1 or size: never served."""


#: Temporary files of a write in progress: ``.tmp-<pid>-<random>`` next to their final name.  The pid
#: lets the sweep (:mod:`xds_repository.sweep`) tell the leftovers of a killed writer from a live write.
TEMPORARY_PREFIX = ".tmp-"


def temporary_prefix() -> str:
    return f"{TEMPORARY_PREFIX}{os.getpid()}-"


def content_name(sha1: str) -> str:
    """Storage name of a content: SHA-1 fan-out ``ab/abcd...``."""
    sha1 = sha1.lower()
    if len(sha1) != 40 or any(c not in "0123456789abcdef" for c in sha1):
        raise ValueError(f'"sha1" must be 40 lowercase hex digits, got "{sha1}".')
    return f"{sha1[0:2]}/{sha1}"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(directory: Path, root: Path) -> None:
    """``mkdir -p`` that also fsyncs the parent of every directory it creates (a new
    directory entry is durable only once its parent is synced)."""
    missing = []
    current = directory
    while not current.exists() and current != root.parent:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        _fsync_dir(path.parent)


def _raise_storage_error(exc: OSError, what: str) -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise OutOfSpace(f"{what}: {exc.strerror}") from exc
    raise StorageError(f"{what}: {exc}") from exc


@deconstructible
class ContentAddressedStorage(Storage):
    """Local files named by SHA-1, written atomically (temp file, fsync, rename, fsync dir)."""

    def __init__(self, location: str | os.PathLike[str], *, fsync: bool = True) -> None:
        # ``location`` comes from STORAGES["xds_documents"]["OPTIONS"] (config/settings.py).
        self.location = Path(location)
        self.fsync = fsync

    # --- Django Storage API ------------------------------------------------------
    def path(self, name: str) -> str:
        target = (self.location / name).resolve()
        root = self.location.resolve()
        if root not in target.parents:
            raise StorageError(f"name {name!r} escapes the storage root")
        return str(target)

    def _open(self, name: str, mode: str = "rb") -> File:
        if any(flag in mode for flag in "wa+"):
            raise StorageError("stored documents are immutable; open them read-only")
        return File(open(self.path(name), "rb"), name=name)

    def _save(self, name: str, content: File) -> str:
        target = Path(self.path(name))
        if self._holds(target, content.size):
            return name  # content-addressed: the same name holds the same bytes
        self._atomic_write(target, lambda out: self._copy_chunks(content, out))
        return name

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        # Never rename: an existing file of this name already holds this content.
        return name

    def delete(self, name: str) -> None:
        target = Path(self.path(name))
        try:
            target.unlink()
        except FileNotFoundError:
            return
        if self.fsync:
            _fsync_dir(target.parent)

    def exists(self, name: str) -> bool:
        return Path(self.path(name)).exists()

    def size(self, name: str) -> int:
        return Path(self.path(name)).stat().st_size

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        directory = Path(self.path(path)) if path else self.location
        dirs, files = [], []
        for entry in os.scandir(directory):
            (dirs if entry.is_dir() else files).append(entry.name)
        return dirs, files

    def temporary_files(self) -> Iterator[Path]:
        """The ``.tmp-*`` files of writes in progress (or of writers that died) in the fan-out directories."""
        try:
            fan_out = [entry for entry in os.scandir(self.location) if entry.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return
        for directory in fan_out:
            try:
                entries = list(os.scandir(directory.path))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name.startswith(TEMPORARY_PREFIX) and entry.is_file(follow_symlinks=False):
                    yield Path(entry.path)

    # --- fast path for files already on disk (MTOM spill files) ------------------
    def save_path(self, name: str, source: Path) -> str:
        """Store the file at ``source`` under ``name`` without reading it into memory.

        Same file system: a hard link (no copy).  Otherwise an in-kernel copy
        (``sendfile``) into a temporary file that is then renamed.  Either way
        the content is fsynced before it becomes visible under ``name``.
        """
        target = Path(self.path(name))
        if self._holds(target, source.stat().st_size):
            return name
        temporary = target.parent / f"{temporary_prefix()}{uuid.uuid4().hex}"
        try:
            self._ensure_dir(target.parent)
            if self.fsync:
                with open(source, "rb") as fh:
                    os.fdatasync(fh.fileno())
            os.link(source, temporary)
            os.replace(temporary, target)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                _raise_storage_error(exc, f"storing {name}")
            self._atomic_write(target, lambda out: self._sendfile(source, out))
            return name
        if self.fsync:
            _fsync_dir(target.parent)
        return name

    @staticmethod
    def _holds(target: Path, size: int) -> bool:
        """True when ``target`` already holds this content (same SHA-1 name, same size).

        A file of another size under the name is damaged and gets replaced.
        """
        try:
            return target.stat().st_size == size
        except FileNotFoundError:
            return False

    # --- internals -----------------------------------------------------------------
    def _ensure_dir(self, directory: Path) -> None:
        if self.fsync:
            _make_dirs(directory, self.location)
        else:
            directory.mkdir(parents=True, exist_ok=True)

    def _atomic_write(self, target: Path, write: Any) -> None:
        try:
            self._ensure_dir(target.parent)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=temporary_prefix())
        except OSError as exc:
            _raise_storage_error(exc, f"creating {target.name}")
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
                out.flush()
                if self.fsync:
                    os.fdatasync(out.fileno())  # data + size; the name is made durable by the dir fsync
            os.replace(tmp, target)
            if self.fsync:
                _fsync_dir(target.parent)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            _raise_storage_error(exc, f"writing {target.name}")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @staticmethod
    def _copy_chunks(content: File, out: IO[bytes]) -> None:
        if hasattr(content, "seek"):
            try:
                content.seek(0)
            except (OSError, ValueError):
                pass
        for chunk in content.chunks(CHUNK_SIZE):
            out.write(chunk)

    @staticmethod
    def _sendfile(source: Path, out: IO[bytes]) -> None:
        with open(source, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            offset = 0
            while offset < size:
                sent = os.sendfile(out.fileno(), src.fileno(), offset, min(size - offset, 1 << 30))
                if sent == 0:
                    break
                offset += sent


# --- helpers used by the transactions (any Storage backend) --------------------------

def put(storage: Storage, *, sha1: str, size: int, path: Path | None, open_stream: Any) -> str:
    """Store one document content; returns its storage name.

    ``path`` is a file already on disk holding the content (an MTOM spill
    file) or None; ``open_stream()`` returns a binary stream of it otherwise.
    """
    name = content_name(sha1)
    try:
        if isinstance(storage, ContentAddressedStorage) and path is not None:
            return storage.save_path(name, path)
        if storage.exists(name) and storage.size(name) == size:
            return name  # identical content already stored (content-addressed)
        stream: BinaryIO = open_stream()
        try:
            return storage.save(name, File(stream, name=name))
        finally:
            stream.close()
    except StorageError:
        raise
    except OSError as exc:
        _raise_storage_error(exc, f"storing {name}")
        raise  # unreachable; keeps type checkers honest


def chunks(storage: Storage, name: str, *, sha1: str | None = None, size: int | None = None,
           chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield a stored content in chunks.

    With ``sha1``/``size`` the bytes are hashed while they go out and a
    mismatch raises :class:`CorruptDocument` before the last chunk is
    yielded, which aborts a streamed response instead of completing it with
    wrong bytes.
    """
    digest = hashlib.sha1() if sha1 else None
    count = 0
    try:
        fh = storage.open(name, "rb")
    except OSError as exc:
        raise CorruptDocument(f"{name} cannot be opened: {exc}") from exc
    with fh:
        pending: bytes | None = None
        while True:
            chunk = fh.read(chunk_size)
            if not chunk:
                break
            if pending is not None:
                yield pending
            if digest is not None:
                digest.update(chunk)
            count += len(chunk)
            pending = chunk
        if size is not None and count != size:
            raise CorruptDocument(f"{name}: {count} bytes stored, {size} expected")
        if digest is not None and digest.hexdigest() != sha1:
            raise CorruptDocument(f"{name}: SHA-1 {digest.hexdigest()} does not match {sha1}")
        if pending is not None:
            yield pending


def verify(storage: Storage, name: str, *, sha1: str, size: int) -> None:
    """Read a stored content through and check it; raises :class:`CorruptDocument`."""
    for _ in chunks(storage, name, sha1=sha1, size=size):
        pass


def local_path(storage: Storage, name: str) -> Path | None:
    """The file behind ``name`` when the backend keeps local files (for streaming by path).

    Decided by type, not by ``path()``: some non-file backends (InMemoryStorage)
    answer ``path()`` with a name that holds nothing.
    """
    if isinstance(storage, ContentAddressedStorage | FileSystemStorage):
        return Path(storage.path(name))
    return None


def filesystem_root(storage: Storage) -> Path | None:
    """The directory a local backend writes under (for its free space), None for other backends."""
    if isinstance(storage, ContentAddressedStorage):
        return storage.location
    if isinstance(storage, FileSystemStorage):
        return Path(storage.location)
    return None


def inflight_dir(storage: Storage) -> Path | None:
    """Where running ITI-41 keep their in-flight markers (:class:`xds_repository.records.InFlight`): next to
    the documents, on this host's file system; None for a backend without local files."""
    root = filesystem_root(storage)
    return root / ".inflight" if root is not None else None


def remove(storage: Storage, name: str) -> None:
    storage.delete(name)
