"""The tamper-evident audit trail: HMAC chain, anchors, verification, retention.

* **Chain** (:func:`chain_pending`): one chainer at a time (the job ``atna.chain``) gives the unchained rows,
  in id order, the next sequence numbers and ``hmac_i = HMAC-SHA256(key, hmac_{i-1} || canonical(row_i))``
  (:func:`canonical`: the seq, both times, the codes, patient, user and the message, length-prefixed).  The
  seq is the chainer's, never the writer's: a row whose INSERT committed late is chained later, so the chain
  has no gap.  One chainer at a time: the state row is locked (``select_for_update``, PostgreSQL) and updated
  by compare-and-swap on its head (SQLite serialises writers; a second chainer's CAS fails and it rolls back);
  ``chain_seq`` is unique besides.
* **Key**: outside the database, in a file (:func:`load_key`), created 0600 by the first chaining; the chain
  state keeps a key id (an HMAC of a fixed label), so a wrong or replaced key is reported as such.  A missing
  key file once the chain has records is an error (a new key would make every later check fail), never
  silently replaced.
* **Anchors** (:func:`anchor_if_due`): the head (seq, hmac, time) is appended to a file outside the database
  (``anchors.log``, one line each, fsynced) and copied to :class:`~atna.models.AuditAnchor` (shipped to syslog
  by :mod:`atna.syslog_jobs`).  Deleting the last records is found by comparing with the file.
* **Verify** (:func:`verify`): walks the chain in seq order; the first record whose HMAC does not match (an
  edit, a swap), the first gap (a deletion), records missing after the last row (truncation, against the
  anchor file and the chain state), a prune start the anchor file does not know, records left unchained past a
  grace time -- each named by seq and id.
* **Retention** (:func:`prune`): deletes a prefix of the chain older than the retention and records a prune
  anchor (the last pruned seq and its hmac, from which the kept chain continues) in the file and the database.

Domain code: paths, key and times are passed in (``atna.trail_jobs`` and the ``xds_audit`` command read the
settings).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from django.db import connection, transaction

from atna.models import AuditAnchor, AuditChainState, AuditRecord

logger = logging.getLogger(__name__)

GENESIS = bytes(32)  # the "previous HMAC" of the first record ever chained
KEY_BYTES = 32
DEFAULT_BATCH = 500
#: Longest anchor-file line read (bytes); a longer line is damage, not an anchor.
MAX_ANCHOR_LINE = 512
_KEY_ID_LABEL = b"xds-audit-chain key id"
_ANCHOR_LINE = re.compile(r"(\S+) (head|prune) seq=(\d{1,19}) hmac=([0-9a-f]{64})")


class AuditKeyError(Exception):
    """The HMAC key file is missing, unreadable, malformed, or not the key the chain was made with."""


class ChainRaced(Exception):
    """Another chainer moved the head while this one worked: this batch is rolled back (the other one did it)."""


class PruneError(Exception):
    """The chain cannot be pruned where asked (a record it needs is missing: run ``xds_audit verify``)."""


# ---------------------------------------------------------------------------------- the key


def load_key(path: Path, *, create: bool = False) -> bytes:
    """The HMAC key in ``path`` (64 hex digits).  ``create``: make one (0600, directories 0700) if the file does
    not exist.  Anything else -- unreadable, malformed -- raises :class:`AuditKeyError` naming the file."""
    path = Path(path)
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(KEY_BYTES) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            logger.warning("audit trail: created a new HMAC key file %s (back it up: verification needs it)", path)
    try:
        text = path.read_text(encoding="ascii").strip()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AuditKeyError(f"audit HMAC key file {path} does not exist (XDS_AUDIT_KEY_FILE)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditKeyError(f"audit HMAC key file {path} is unreadable: "
                            f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise AuditKeyError(f"audit HMAC key file {path} does not hold a key (64 hex digits)")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("audit trail: HMAC key file %s is readable by group or others (chmod 600 it)", path)
    return bytes.fromhex(text)


def key_id(key: bytes) -> str:
    """A short id of ``key`` (not the key): tells a wrong key file from tampered records."""
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]


# ---------------------------------------------------------------------------------- the chain


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Row(NamedTuple):
    """The columns of an :class:`~atna.models.AuditRecord` the chain covers, as read by the chainer and verify."""

    id: int
    recorded_at: datetime
    event_time: datetime
    event_id: str
    action: str
    outcome: int
    transaction: str
    patient_id: str
    user_id: str
    user_name: str
    message: str
    chain_seq: int | None
    chain_hmac: str


ROW_FIELDS = Row._fields


def canonical(row: Row | AuditRecord, seq: int) -> bytes:
    """The bytes of ``row`` the chain covers: every column but the id and the chain's own, length-prefixed
    (4-byte big-endian length + UTF-8), so that no two different rows give the same bytes."""
    fields = (str(seq), _time(row.recorded_at), _time(row.event_time), row.event_id, row.action, str(row.outcome),
              row.transaction, row.patient_id, row.user_id, row.user_name, row.message)
    out = bytearray()
    for value in fields:
        data = value.encode("utf-8")
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


def link(key: bytes, previous: bytes, row: Row | AuditRecord, seq: int) -> bytes:
    """``hmac_seq = HMAC-SHA256(key, hmac_{seq-1} || canonical(row, seq))``."""
    return hmac.new(key, previous + canonical(row, seq), hashlib.sha256).digest()


def state() -> AuditChainState:
    """The chain state row (created empty on first use)."""
    found, _ = AuditChainState.objects.get_or_create(pk=1)
    return found


@dataclass(frozen=True)
class ChainResult:
    chained: int
    head_seq: int


def chain_batch(key: bytes, *, batch: int = DEFAULT_BATCH) -> ChainResult:
    """Chain up to ``batch`` unchained rows (oldest id first) in one transaction."""
    state()
    with transaction.atomic():
        current = AuditChainState.objects.select_for_update().get(pk=1)
        kid = key_id(key)
        if current.key_id and current.key_id != kid:
            raise AuditKeyError("the audit HMAC key file does not hold the key this chain was made with")
        rows = [Row(*values) for values in AuditRecord.objects.filter(chain_seq__isnull=True).order_by("id")
                .values_list(*ROW_FIELDS)[:batch]]
        if not rows:
            return ChainResult(0, current.head_seq)
        seq = current.head_seq
        previous = bytes.fromhex(current.head_hmac) if current.head_hmac else GENESIS
        links: list[tuple[int, str, int]] = []
        for row in rows:
            seq += 1
            previous = link(key, previous, row, seq)
            links.append((seq, previous.hex(), row.id))
        # One statement, many parameter sets (pipelined by psycopg): the ORM's bulk_update builds a CASE per
        # column over the whole batch, which costs more than the chaining itself.
        table = connection.ops.quote_name(AuditRecord._meta.db_table)
        with connection.cursor() as cursor:
            cursor.executemany(f"UPDATE {table} SET chain_seq = %s, chain_hmac = %s "  # noqa: S608 - our table
                               "WHERE id = %s AND chain_seq IS NULL", links)
            if cursor.rowcount not in (-1, len(links)):
                raise ChainRaced("rows of this batch were chained by another chainer")
        moved = AuditChainState.objects.filter(pk=1, head_seq=current.head_seq).update(
            head_seq=seq, head_hmac=previous.hex(), key_id=kid, updated_at=datetime.now(UTC))
        if not moved:
            raise ChainRaced("another chainer moved the audit chain's head")
        return ChainResult(len(rows), seq)


def chain_pending(key: bytes, *, batch: int = DEFAULT_BATCH, limit: int | None = None) -> ChainResult:
    """Chain every unchained row (in batches), or up to ``limit`` rows."""
    total, head = 0, 0
    while limit is None or total < limit:
        result = chain_batch(key, batch=batch if limit is None else min(batch, limit - total))
        total, head = total + result.chained, result.head_seq
        if result.chained == 0:
            break
    return ChainResult(total, head)


# ---------------------------------------------------------------------------------- anchors


class AnchorKind(StrEnum):
    HEAD = AuditAnchor.Kind.HEAD.value
    PRUNE = AuditAnchor.Kind.PRUNE.value


@dataclass(frozen=True)
class Anchor:
    time: str
    kind: AnchorKind
    seq: int
    hmac: str

    def line(self) -> str:
        return f"{self.time} {self.kind.value} seq={self.seq} hmac={self.hmac}\n"


def append_anchor(path: Path, anchor: Anchor) -> None:
    """Append one line to the anchor file (O_APPEND, fsynced): the file outlives the database's tampering."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, anchor.line().encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_anchors(path: Path) -> tuple[list[Anchor], list[str]]:
    """The anchors of the file (oldest first) and a problem per malformed line (bounded reading)."""
    anchors: list[Anchor] = []
    problems: list[str] = []
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return [], []
    with fh:
        for number, raw in enumerate(iter(lambda: fh.readline(MAX_ANCHOR_LINE + 1), b""), start=1):
            match = _ANCHOR_LINE.fullmatch(raw.decode("ascii", "replace").strip())
            if match is None:
                problems.append(f"anchor file {path} line {number} is not an anchor")
                continue
            anchors.append(Anchor(match[1], AnchorKind(match[2]), int(match[3]), match[4]))
    return anchors, problems


def anchor_if_due(path: Path, interval: timedelta, *, now: datetime | None = None,
                  force: bool = False) -> Anchor | None:
    """Anchor the head if it moved since the last anchor and ``interval`` has passed (or ``force``)."""
    now = now or datetime.now(UTC)
    state()
    with transaction.atomic():
        current = AuditChainState.objects.select_for_update().get(pk=1)
        if current.head_seq == 0 or current.head_seq == current.last_anchor_seq:
            return None
        if not force and current.last_anchor_at is not None and now - current.last_anchor_at < interval:
            return None
        anchor = Anchor(_time(now), AnchorKind.HEAD, current.head_seq, current.head_hmac)
        append_anchor(path, anchor)
        AuditAnchor.objects.create(kind=AuditAnchor.Kind.HEAD, seq=anchor.seq, hmac=anchor.hmac, created_at=now)
        AuditChainState.objects.filter(pk=1).update(last_anchor_seq=anchor.seq, last_anchor_at=now)
        return anchor


# ---------------------------------------------------------------------------------- verification


@dataclass
class VerifyReport:
    """What :func:`verify` found: ``problems`` (the first one names the first bad record) and what it walked."""

    checked: int = 0
    first_seq: int = 0
    last_seq: int = 0
    unchained: int = 0
    problems: list[str] = field(default_factory=list)
    first_bad_seq: int | None = None
    first_bad_id: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def bad(self, problem: str, *, seq: int | None = None, record_id: int | None = None) -> None:
        if self.first_bad_seq is None and self.first_bad_id is None and (seq is not None or record_id is not None):
            self.first_bad_seq, self.first_bad_id = seq, record_id
        self.problems.append(problem)


def verify(key: bytes, anchor_file: Path, *, unchained_grace: timedelta, now: datetime | None = None,
           schema_errors: Callable[[bytes], list[str]] | None = None) -> VerifyReport:
    """Check the whole chain (see the module docstring); ``schema_errors``: also validate every message."""
    now = now or datetime.now(UTC)
    report = VerifyReport()
    current = AuditChainState.objects.filter(pk=1).first() or AuditChainState(pk=1)
    if current.key_id and current.key_id != key_id(key):
        report.bad("the audit HMAC key file does not hold the key this chain was made with (wrong key file?)")
        return report
    anchors, anchor_problems = read_anchors(anchor_file)
    for problem in anchor_problems:
        report.bad(problem)
    if current.last_anchor_seq and not anchors:
        report.bad(f"the anchor file {anchor_file} is missing or empty, but the chain was anchored up to seq "
                   f"{current.last_anchor_seq}")

    # Where the kept chain starts: 1, or after a prune anchor that the file must know.
    expected = current.start_seq
    previous = bytes.fromhex(current.start_prev_hmac) if current.start_prev_hmac else GENESIS
    if expected > 1 and not any(a.kind is AnchorKind.PRUNE and a.seq == expected - 1
                                and a.hmac == current.start_prev_hmac for a in anchors):
        report.bad(f"the chain starts at seq {expected}, but the anchor file records no prune up to seq "
                   f"{expected - 1}: records before it were removed", seq=expected)
        return report
    head_anchors: dict[int, Anchor] = {a.seq: a for a in anchors if a.kind is AnchorKind.HEAD}
    report.first_seq = expected

    rows: Iterable[tuple[object, ...]] = (AuditRecord.objects.filter(chain_seq__isnull=False)
                                          .order_by("chain_seq").values_list(*ROW_FIELDS).iterator(chunk_size=2000))
    broken = False
    for values in rows:
        row = Row(*values)  # type: ignore[arg-type]
        seq = int(row.chain_seq)  # type: ignore[arg-type]
        if seq < expected:
            report.bad(f"record seq {seq} (id {row.id}) lies before the chain's start (seq {expected})",
                       seq=seq, record_id=row.id)
            broken = True
            break
        if seq > expected:
            missing = f"seq {expected}" if seq == expected + 1 else f"seqs {expected}-{seq - 1}"
            report.bad(f"record {missing} missing: removed before record seq {seq} (id {row.id})",
                       seq=expected, record_id=row.id)
            broken = True
            break
        digest = link(key, previous, row, seq)
        if not hmac.compare_digest(digest.hex(), row.chain_hmac):
            report.bad(f"record seq {seq} (id {row.id}) was altered, reordered, or chained from a removed record",
                       seq=seq, record_id=row.id)
            broken = True
            break
        anchored = head_anchors.get(seq)
        if anchored is not None and anchored.hmac != row.chain_hmac:
            report.bad(f"record seq {seq} (id {row.id}) differs from its anchor of {anchored.time}: the chain was "
                       "rewritten", seq=seq, record_id=row.id)
            broken = True
            break
        if schema_errors is not None:
            errors = schema_errors(row.message.encode("utf-8"))
            if errors:
                report.bad(f"record seq {seq} (id {row.id}) is not a valid audit message: {errors[0]}",
                           seq=seq, record_id=row.id)
        previous = digest
        expected += 1
        report.checked += 1
    report.last_seq = expected - 1

    if not broken:
        last = report.last_seq
        if current.head_seq > last:
            report.bad(f"records after seq {last} are missing: the chain's head is seq {current.head_seq}",
                       seq=last + 1)
        elif current.head_seq and current.head_seq == last and current.head_hmac != previous.hex():
            report.bad(f"the chain's head (seq {last}) does not match its last record", seq=last)
        latest = max((a for a in anchors if a.kind is AnchorKind.HEAD), key=lambda a: a.seq, default=None)
        if latest is not None and latest.seq > last:
            report.bad(f"records after seq {last} are missing: the anchor of {latest.time} recorded the head at "
                       f"seq {latest.seq}", seq=last + 1)

    unchained = AuditRecord.objects.filter(chain_seq__isnull=True)
    report.unchained = unchained.count()
    stale = unchained.filter(recorded_at__lt=now - unchained_grace).order_by("id").first()
    if stale is not None:
        report.bad(f"record id {stale.pk} has been waiting to be chained since {_time(stale.recorded_at)} "
                   "(is the job worker running?)", record_id=stale.pk)
    return report


# ---------------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class PruneResult:
    deleted: int
    start_seq: int


def prune(anchor_file: Path, *, older_than: datetime, now: datetime | None = None) -> PruneResult:
    """Delete the chained records written before ``older_than`` -- a prefix of the chain, so that the rest stays
    verifiable -- and record the prune anchor (last pruned seq and its hmac) in the file and the database.

    A record written after ``older_than`` keeps every later seq (the chain is cut at the first young record);
    unchained records are never pruned (they are chained first).
    """
    now = now or datetime.now(UTC)
    state()
    with transaction.atomic():
        current = AuditChainState.objects.select_for_update().get(pk=1)
        young = (AuditRecord.objects.filter(chain_seq__isnull=False, recorded_at__gte=older_than)
                 .order_by("chain_seq").values_list("chain_seq", flat=True).first())
        keep_from = young if young is not None else current.head_seq + 1
        if keep_from <= current.start_seq:
            return PruneResult(0, current.start_seq)
        last_pruned = keep_from - 1
        if last_pruned == current.head_seq:
            last_hmac = current.head_hmac
        else:
            found = AuditRecord.objects.filter(chain_seq=last_pruned).values_list("chain_hmac", flat=True).first()
            if found is None:
                raise PruneError(f"record seq {last_pruned} is missing: the chain is broken (run xds_audit verify)")
            last_hmac = found
        deleted, _ = AuditRecord.objects.filter(chain_seq__lt=keep_from).delete()
        anchor = Anchor(_time(now), AnchorKind.PRUNE, last_pruned, last_hmac)
        AuditAnchor.objects.create(kind=AuditAnchor.Kind.PRUNE, seq=last_pruned, hmac=last_hmac, created_at=now)
        AuditChainState.objects.filter(pk=1).update(start_seq=keep_from, start_prev_hmac=last_hmac)
        # The file last, just before the commit: a prune the database rolled back leaves an extra line that
        # verification ignores (it looks for the database's start), never a start the file does not know.
        append_anchor(anchor_file, anchor)
        return PruneResult(deleted, keep_from)
