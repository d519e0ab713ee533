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
