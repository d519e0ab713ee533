"""Identifiers in operational log lines: a pseudonymous reference in place of the value (issue 13).

Operational logs (stdout of the services, gunicorn's access log) leave the node's protection: they are shipped,
kept, read by people who may not see patient data.  So no patient id, name, accession number or DICOM / XDS
UID appears in them; the audit trail (``atna``) is where who-touched-which-patient is recorded.  A log line
that must still say *which* study or document it is about shows :func:`log_ref` of the identifier: the same
identifier gives the same reference, so lines correlate, and an operator who holds a UID finds its lines by
computing its reference (``python -c 'from xds_core.log_ref import log_ref; print(log_ref("1.2.3"))'``).
"""

from __future__ import annotations

import hashlib

#: Hex digits of the SHA-256 kept: 48 bits, enough to tell a day's studies apart in a log.
REF_DIGITS = 12


def log_ref(value: str | None) -> str:
    """``ref:`` + the first :data:`REF_DIGITS` hex digits of SHA-256(value); ``-`` for none."""
    if not value:
        return "-"
    return "ref:" + hashlib.sha256(str(value).encode("utf-8", "replace")).hexdigest()[:REF_DIGITS]
