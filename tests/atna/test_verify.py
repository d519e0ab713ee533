"""``manage.py xds_audit verify``: a whole chain passes; every kind of tampering fails naming the first bad record."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from lxml import etree

from atna import chain
from atna.models import AuditChainState, AuditRecord
from tests.atna.trail_helpers import Files, files, write  # noqa: F401
from xds_core import audit
from xds_core.audit_xml import schema_errors

pytestmark = pytest.mark.django_db


def verify(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("xds_audit", "verify", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def chained(files: Files, n: int = 10, *, anchor: bool = True) -> list[AuditRecord]:  # noqa: F811
    write(n)
    chain.chain_pending(files.key_bytes())
    if anchor:
        chain.anchor_if_due(files.anchors, timedelta(0), force=True)
    return list(AuditRecord.objects.order_by("chain_seq"))


def alerts() -> list[AuditRecord]:
    return list(AuditRecord.objects.filter(event_id=audit.EventId.SECURITY_ALERT.code))


def test_a_whole_chain_passes_and_records_no_alert(files: Files) -> None:  # noqa: F811
    chained(files)
    code, out, err = verify()
    assert (code, err) == (0, "")
    assert "OK audit chain whole: 10 records checked (seq 1..10), 0 waiting to be chained" in out
    assert alerts() == []


def test_an_empty_trail_passes(files: Files) -> None:  # noqa: F811
    files.key_bytes()
    assert verify()[0] == 0


def test_an_edited_message_fails_naming_its_seq_and_id_and_raises_a_security_alert(files: Files) -> None:  # noqa: F811
    rows = chained(files)
    victim = rows[3]
    AuditRecord.objects.filter(pk=victim.pk).update(message=victim.message.replace("ITI-42", "ITI-18"))

    code, _, err = verify()

    assert code == 1
    assert f"FAIL record seq 4 (id {victim.pk}) was altered" in err.splitlines()[0]
    [alert] = alerts()
    assert alert.outcome == audit.EventOutcome.MAJOR_FAILURE and alert.chain_seq is None  # chained next run
    described = etree.fromstring(alert.message.encode()).findtext("EventIdentification/EventOutcomeDescription")
    assert described.startswith("audit trail tampering found: record seq 4") and \
        described.endswith(f"(first bad record: seq 4 id {victim.pk})")
    assert schema_errors(alert.message.encode()) == []


@pytest.mark.parametrize("column,value", [("patient_id", "SOMEONE-ELSE"), ("user_name", "nobody"), ("outcome", 8),
                                          ("event_time", datetime(2020, 1, 1, tzinfo=UTC))])
def test_an_edited_search_column_fails_too(files: Files, column: str, value: object) -> None:  # noqa: F811
    rows = chained(files, 4)
    AuditRecord.objects.filter(pk=rows[1].pk).update(**{column: value})
    code, _, err = verify()
    assert code == 1 and f"record seq 2 (id {rows[1].pk})" in err


def test_a_deleted_middle_record_fails_naming_the_missing_seq(files: Files) -> None:  # noqa: F811
    rows = chained(files)
    AuditRecord.objects.filter(pk=rows[4].pk).delete()

    code, _, err = verify()

    assert code == 1
    assert f"FAIL record seq 5 missing: removed before record seq 6 (id {rows[5].pk})" in err


def test_two_swapped_records_fail_naming_the_first(files: Files) -> None:  # noqa: F811
    rows = chained(files)
    a, b = rows[2], rows[6]
    AuditRecord.objects.filter(pk=a.pk).update(chain_seq=-1)
    AuditRecord.objects.filter(pk=b.pk).update(chain_seq=3, chain_hmac=a.chain_hmac)
    AuditRecord.objects.filter(pk=a.pk).update(chain_seq=7, chain_hmac=b.chain_hmac)

    code, _, err = verify()

    assert code == 1 and f"FAIL record seq 3 (id {b.pk}) was altered, reordered" in err


def test_the_last_records_deleted_after_an_anchor_fail_against_the_anchor_file(files: Files) -> None:  # noqa: F811
    rows = chained(files)
    AuditRecord.objects.filter(pk__in=[r.pk for r in rows[-3:]]).delete()
    # The intruder also rewinds the chain state in the database: the anchor file outside it still knows.
    AuditChainState.objects.filter(pk=1).update(head_seq=7, head_hmac=rows[6].chain_hmac)

    code, _, err = verify()

    assert code == 1
    assert "FAIL records after seq 7 are missing: the anchor of" in err and "head at seq 10" in err


def test_the_last_records_deleted_before_any_anchor_fail_against_the_chain_state(files: Files) -> None:  # noqa: F811
    rows = chained(files, anchor=False)
    AuditRecord.objects.filter(pk__in=[r.pk for r in rows[-3:]]).delete()
    code, _, err = verify()
    assert code == 1 and "FAIL records after seq 7 are missing: the chain's head is seq 10" in err


def test_a_missing_key_file_exits_2_loudly_and_a_wrong_one_is_named(files: Files) -> None:  # noqa: F811
    chained(files, 3)
    original = files.key.read_text()
    files.key.unlink()
    code, _, err = verify()
    assert code == 2 and "does not exist" in err
    files.key.write_text("00" * 32 + "\n")
    code, _, err = verify()
    assert code == 1 and "does not hold the key this chain was made with" in err
    files.key.write_text(original)
    assert verify()[0] == 0


def test_records_left_unchained_long_past_the_interval_fail(files: Files) -> None:  # noqa: F811
    chained(files, 2)
    [late] = write(1)
    AuditRecord.objects.filter(pk=late.pk).update(recorded_at=datetime.now(UTC) - timedelta(hours=2))
    code, _, err = verify()
    assert code == 1 and f"record id {late.pk} has been waiting to be chained since" in err


def test_schema_validation_of_every_message(files: Files) -> None:  # noqa: F811
    chained(files, 3)
    code, out, _ = verify("--schema")
    assert code == 0 and "3 records checked" in out


def test_retention_pruning_keeps_the_chain_verifiable(files: Files) -> None:  # noqa: F811
    rows = chained(files, 8)
    old = datetime.now(UTC) - timedelta(days=3000)
    AuditRecord.objects.filter(pk__in=[r.pk for r in rows[:5]]).update(recorded_at=old)
    # The row times are covered by the HMAC: re-chain from scratch so that old rows are genuinely old.
    AuditRecord.objects.update(chain_seq=None, chain_hmac="")
    AuditChainState.objects.all().delete()
    files.anchors.unlink()
    chain.chain_pending(files.key_bytes())
    chain.anchor_if_due(files.anchors, timedelta(0), force=True)

    out = io.StringIO()
    call_command("xds_audit", "prune", stdout=out)

    assert "pruned 5 records; the chain starts at seq 6" in out.getvalue()
    assert sorted(AuditRecord.objects.values_list("chain_seq", flat=True)) == [6, 7, 8]
    assert "prune seq=5" in files.anchors.read_text()
    assert verify()[0] == 0
    write(2)
    chain.chain_pending(files.key_bytes())
    assert verify()[0] == 0


def test_the_oldest_records_removed_without_a_prune_anchor_fail(files: Files) -> None:  # noqa: F811
    rows = chained(files, 6)
    AuditRecord.objects.filter(pk__in=[r.pk for r in rows[:2]]).delete()
    code, _, err = verify()
    assert code == 1 and f"FAIL record seqs 1-2 missing: removed before record seq 3 (id {rows[2].pk})" in err
    # ... and a forged start in the database is not in the anchor file.
    AuditChainState.objects.filter(pk=1).update(start_seq=3, start_prev_hmac=rows[1].chain_hmac)
    code, _, err = verify()
    assert code == 1 and "the anchor file records no prune up to seq 2" in err
