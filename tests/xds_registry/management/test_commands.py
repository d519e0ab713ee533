"""Registry management commands: xds_patient add|list|merge, xds_bench_registry_load."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.xds_registry.registry_helpers import AUTHORITY, load_submission, new_patient_id
from xds_registry import models as m
from xds_registry.register_document_set import register_document_set

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_xds_patient_add_list_merge():
    a, b = new_patient_id(), new_patient_id()
    assert "added" in run("xds_patient", "add", a, b, "--family", "Doe")
    assert "updated" in run("xds_patient", "add", a, "--given", "Jane")
    assert m.Patient.objects.get(patient_id=a).given_name == "Jane"
    doc = register_document_set(load_submission("single_doc.xml", b)[0]).entry_uuids["Document01"]
    out = run("xds_patient", "merge", a, b)
    assert "re-pointed" in out
    assert m.DocumentEntry.objects.get(entry_uuid=doc).patient_id == a
    listing = run("xds_patient", "list")
    assert f"{b}\tmerged into {a}" in listing and f"{a}\tactive" in listing
    assert b not in run("xds_patient", "list", "--search", a.split("^")[0])


def test_xds_patient_refuses_malformed_ids_and_unknown_merge_sources():
    with pytest.raises(CommandError, match="CX.4"):
        run("xds_patient", "add", "not-a-cx")
    with pytest.raises(CommandError, match="not known"):
        run("xds_patient", "merge", new_patient_id(), new_patient_id())


def test_bench_loader_goes_through_registration(tmp_path: Path):
    summary = tmp_path / "load.json"
    out = run("xds_bench_registry_load", "--entries", "25", "--docs-per-patient", "10", "--per-submission", "4",
              "--run", "t1", "--summary", str(summary))
    assert "loaded 30 entries" in out  # 3 patients x 10
    data = json.loads(summary.read_text())
    assert data["entries"] == 30 and data["patients"] == 3
    assert m.Patient.objects.filter(patient_id__startswith="BENCH-t1-").count() == 3
    assert m.DocumentEntry.objects.count() == 30
    assert m.SubmissionSet.objects.count() == 9  # 4 + 4 + 2 per patient
    pid = data["sample_patient_ids"][0]
    assert pid.endswith(f"&{AUTHORITY}&ISO") and m.DocumentEntry.objects.filter(patient_id=pid).count() == 10
    # Same stored shape as any registration: XML fragment, code rows.
    de = m.DocumentEntry.objects.first()
    assert de.xml.startswith("<rim:ExtrinsicObject") and de.creation_time and len(de.creation_time) == 14
    assert m.RegistryCode.objects.filter(object_kind="DE", object_id=de.pk, attribute="confidentialityCode").exists()


def test_bench_loader_batches_whole_submissions_per_transaction(tmp_path: Path):
    # --batch 7 with 4-entry submissions: transactions of 2 submissions (8 entries), last one smaller.
    out = run("xds_bench_registry_load", "--entries", "20", "--docs-per-patient", "10", "--per-submission", "4",
              "--batch", "7", "--run", "t2")
    assert "loaded 20 entries" in out
    assert m.DocumentEntry.objects.count() == 20 and m.SubmissionSet.objects.count() == 6
    assert m.Association.objects.filter(source_kind="SS", target_kind="DE").count() == 20
    for de in m.DocumentEntry.objects.all():
        assert m.RegistryCode.objects.filter(object_kind="DE", object_id=de.pk, attribute="classCode",
                                             value=de.class_code).exists()
        assert de.xml.startswith("<rim:ExtrinsicObject") and f'id="{de.entry_uuid}"' in de.xml
    with pytest.raises(CommandError, match="--batch"):
        run("xds_bench_registry_load", "--entries", "5", "--batch", "0")


def test_bench_loader_keeps_each_transaction_under_the_lock_budget(monkeypatch):
    from xds_registry import register_document_set as registration
    from xds_registry.management.commands import xds_bench_registry_load as loader

    # Two 4-entry submissions (10 uniqueIds) at most; registration refuses a larger batch.
    monkeypatch.setattr(loader, "MAX_BATCH_UNIQUE_IDS", 12)
    monkeypatch.setattr(registration, "MAX_BATCH_UNIQUE_IDS", 12)
    out = run("xds_bench_registry_load", "--entries", "20", "--docs-per-patient", "10", "--per-submission", "4",
              "--batch", "1000", "--run", "t3")
    assert "loaded 20 entries" in out
    assert m.DocumentEntry.objects.count() == 20 and m.SubmissionSet.objects.count() == 6


def test_hl7_listener_command_answers_over_mllp(tmp_path: Path):
    """The real command in its own process, on an ephemeral port, with its own SQLite database."""
    import os
    import re
    import subprocess
    import sys

    from xds_registry.patient_identity_feed.hl7v2 import parse_message
    from xds_registry.patient_identity_feed.mllp import send

    base = Path(__file__).resolve().parents[3]
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'feed.sqlite3'}", "XDS_AFFINITY_DOMAIN_CODES": "",
           "PYTHONUNBUFFERED": "1"}
    manage = [sys.executable, str(base / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=base, timeout=120)
    proc = subprocess.Popen([*manage, "xds_hl7_listener", "--port", "0"], env=env, cwd=base,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # The start line, after any warning (XDS_TLS=off is one).
        line = next(text for text in iter(proc.stdout.readline, "") if "MLLP listener on" in text)
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        message = ("MSH|^~\\&|SRC|FAC|REG|AFF|20261127120000||ADT^A04^ADT_A01|L1|P|2.3.1\r"
                   f"PID|||L1^^^&{AUTHORITY}&ISO||Doe^John\r")
        ack = parse_message(send("127.0.0.1", port, message))
        assert (ack.field("MSA", 1), ack.field("MSA", 2)) == ("AA", "L1")
        listed = subprocess.run([*manage, "xds_patient", "list"], env=env, cwd=base, capture_output=True, text=True,
                                timeout=60, check=True).stdout
        assert f"L1^^^&{AUTHORITY}&ISO\tactive" in listed
    finally:
        proc.terminate()
        proc.wait(10)
