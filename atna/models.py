"""The node identity table (ITI TF-2a 3.19.6.1: authorization is the deployment's, by an explicit list).

A peer that authenticated (TLS) or presented itself (a DICOM calling AE title at an address) is mapped to a
named identity, with the roles and sourceIds it may use, only through a row of this table -- never by "any
certificate from CA X" (3.19.6.1.3 strongly discourages it).  A row matches by exactly one of: the SHA-256
fingerprint of a certificate, the exact subject of a certificate, or a calling AE title (optionally at one
address).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from xds_core.identity import Identity, Role, normalize_fingerprint


def _validate_roles(value: str) -> None:
    try:
        Role.parse_list(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class NodeIdentity(models.Model):
    """One entry of the node identity table."""

    name = models.SlugField(max_length=64, unique=True, help_text="The identity's name (audit records, logs).")
    description = models.CharField(max_length=200, blank=True)
    cert_sha256 = models.CharField(
        "certificate SHA-256", max_length=64, blank=True, db_index=True,
        help_text="Fingerprint of the peer's certificate (64 hex digits; colons allowed when typed).")
    cert_subject = models.CharField(
        "certificate subject", max_length=512, blank=True, db_index=True,
        help_text="The exact subject of the peer's certificate, RFC 4514 (e.g. CN=consumer,OU=consumer,O=Hospital B).")
    ae_title = models.CharField("DICOM calling AE title", max_length=16, blank=True, db_index=True)
    address = models.CharField(
        "network address", max_length=255, blank=True,
        help_text="With an AE title: the IP address it must call from (empty: any).")
    roles = models.CharField(max_length=200, validators=[_validate_roles],
                             help_text="Comma-separated: " + ", ".join(r.value for r in Role))
    source_ids = models.TextField("sourceIds", blank=True,
                                  help_text="OIDs this identity may submit under, one per line or comma-separated.")
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "node identity"
        verbose_name_plural = "node identities"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        matchers = [bool(self.cert_sha256), bool(self.cert_subject), bool(self.ae_title)]
        if sum(matchers) != 1:
            raise ValidationError("Give exactly one of: certificate SHA-256, certificate subject, DICOM AE title.")
        if self.cert_sha256:
            try:
                self.cert_sha256 = normalize_fingerprint(self.cert_sha256)
            except ValueError as exc:
                raise ValidationError({"cert_sha256": str(exc)}) from None
        if self.address and not self.ae_title:
            raise ValidationError({"address": "An address narrows an AE title match only."})

    def identity(self) -> Identity:
        ids = tuple(x.strip() for x in self.source_ids.replace(",", "\n").splitlines() if x.strip())
        return Identity(self.name, Role.parse_list(self.roles), ids)


# ---------------------------------------------------------------------------------- the audit trail
# (atna/trail.py writes the records, atna/chain.py chains, anchors and verifies them, atna/syslog_jobs.py ships
# them to the Audit Record Repository; ITI TF-2a 3.20.)


class AuditRecord(models.Model):
    """One DICOM PS3.15 A.5 audit message, as stored at the moment its event was recorded.

    One patient per message (ITI TF-2a 3.20.7.1): an event naming several patients is several rows.  The
    columns besides ``message`` are what the trail is searched by; all of them (and ``message``) are covered by
    the HMAC chain, so an edit of any of them is found by ``xds_audit verify``.  ``chain_seq`` is given by the
    chainer (atna/chain.py), in its own order, never by the writer: a row committed late is chained later.
    """

    recorded_at = models.DateTimeField(help_text="When the row was written (UTC).")
    event_time = models.DateTimeField(help_text="EventDateTime of the message (UTC).")
    event_id = models.CharField("EventID", max_length=16, help_text="PS3.16 CID 400 code, e.g. 110112 Query.")
    action = models.CharField("EventActionCode", max_length=1)
    outcome = models.PositiveSmallIntegerField("EventOutcomeIndicator")
    transaction = models.CharField("IHE transaction", max_length=16, blank=True,
                                   help_text="The EventTypeCode of the IHE transaction (ITI-18 ...), if any.")
    patient_id = models.CharField(max_length=255, blank=True, help_text="The message's one patient (CX), if any.")
    user_id = models.CharField("requestor UserID", max_length=255, blank=True)
    user_name = models.CharField("requestor UserName", max_length=255, blank=True,
                                 help_text="The human user's name or the node identity of the requestor.")
    message = models.TextField(help_text="The audit message (UTF-8 XML).")
    chain_seq = models.BigIntegerField(null=True, blank=True, unique=True,
                                       help_text="Position in the HMAC chain (null until chained).")
    chain_hmac = models.CharField(max_length=64, blank=True, help_text="HMAC-SHA256 of the chain up to this row.")

    class Meta:
        verbose_name = "audit record"
        ordering = ["-id"]
        # One btree per searched column, declared here rather than with db_index, which on PostgreSQL adds a
        # second (LIKE) index to every CharField: each index is written by every INSERT and by the chainer's
        # UPDATE, per audited transaction.  Searches are exact (a patient's CX, a user) or by time.
        indexes = [models.Index(fields=["patient_id", "event_time"], name="atna_audit_patient_idx"),
                   models.Index(fields=["user_id"], name="atna_audit_user_id_idx"),
                   models.Index(fields=["user_name"], name="atna_audit_user_name_idx"),
                   models.Index(fields=["event_time"], name="atna_audit_time_idx")]

    def __str__(self) -> str:
        return f"audit record #{self.pk} ({self.event_id} {self.event_time:%Y-%m-%d %H:%M:%S})"


class AuditChainState(models.Model):
    """The chain's head, one row (pk 1): the chainer's lock (select_for_update) and compare-and-swap target."""

    head_seq = models.BigIntegerField(default=0, help_text="Last chained seq (0: nothing chained).")
    head_hmac = models.CharField(max_length=64, blank=True)
    #: Identifies the HMAC key the chain was made with (an HMAC of a fixed label), so that a wrong key file is
    #: reported as such instead of as "every record was altered".
    key_id = models.CharField(max_length=16, blank=True)
    #: Where the kept chain starts after retention pruned older records (1: nothing pruned), and the HMAC
    #: the first kept record chains from.
    start_seq = models.BigIntegerField(default=1)
    start_prev_hmac = models.CharField(max_length=64, blank=True)
    last_anchor_seq = models.BigIntegerField(default=0)
    last_anchor_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "audit chain state"


class AuditAnchor(models.Model):
    """A copy of what was appended to the anchor file: the chain head at a time, or where a pruned chain starts."""

    class Kind(models.TextChoices):
        HEAD = "head", "chain head"
        PRUNE = "prune", "prune (the kept chain starts after this seq)"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    seq = models.BigIntegerField()
    hmac = models.CharField(max_length=64)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]


class SyslogCursor(models.Model):
    """How far the trail was shipped to one Audit Record Repository (ITI-20: stored, sent when it is back)."""

    destination = models.CharField(max_length=255, unique=True)
    last_seq = models.BigIntegerField(default=0, help_text="Last chain seq the collector accepted.")
    last_anchor_id = models.BigIntegerField(default=0, help_text="Last anchor sent.")
    failing_since = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    sent = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
