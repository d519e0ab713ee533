"""Pending/registered bookkeeping: process identity of pending rows, shared content on discard."""

from __future__ import annotations

import hashlib
import io
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from xds_repository import records
from xds_repository import storage as store
from xds_repository.models import StoredDocument
from xds_repository.storage import ContentAddressedStorage


def test_this_process_is_alive_and_an_exited_one_is_dead() -> None:
    assert not records.owner_is_dead(records.process_identity())
    child = subprocess.run([sys.executable, "manage.py", "shell", "-c",
                            "from xds_repository.records import process_identity; print(process_identity())"],
                           capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    assert records.owner_is_dead(child.stdout.strip().splitlines()[-1])


def test_processes_of_other_hosts_and_unknown_owners_are_never_presumed_dead() -> None:
    host, boot, pid, ticks = records.process_identity().split("/")
    assert not records.owner_is_dead(f"elsewhere-{host}/{boot}/{pid}/{ticks}x")
    assert not records.owner_is_dead("")
    assert records.owner_is_dead(f"{socket.gethostname()}/another-boot/{pid}/{ticks}")


@pytest.mark.django_db
def test_discard_keeps_content_another_row_still_uses(tmp_path: Path) -> None:
    storage = ContentAddressedStorage(tmp_path)
    content = b"shared"
    sha1 = hashlib.sha1(content).hexdigest()
    first, second = records.record_pending(
        [records.NewDocument("1.1", "text/plain", sha1, len(content)),
         records.NewDocument("1.2", "text/plain", sha1, len(content))], storage_alias="xds_documents")
    name = store.put(storage, sha1=sha1, size=len(content), path=None, open_stream=lambda: io.BytesIO(content))
    records.discard([first], storage)
    assert storage.exists(name)
    assert list(StoredDocument.objects.values_list("unique_id", flat=True)) == ["1.2"]
    records.discard([second], storage)
    assert not storage.exists(name)
    assert not StoredDocument.objects.exists()
