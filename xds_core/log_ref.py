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
import logging
import re
from typing import Any

#: Hex digits of the SHA-256 kept: 48 bits, enough to tell a day's studies apart in a log.
REF_DIGITS = 12


def log_ref(value: str | None) -> str:
    """``ref:`` + the first :data:`REF_DIGITS` hex digits of SHA-256(value); ``-`` for none."""
    if not value:
        return "-"
    return "ref:" + hashlib.sha256(str(value).encode("utf-8", "replace")).hexdigest()[:REF_DIGITS]


#: A dotted-decimal identifier of three arcs or more (a DICOM UID or an OID, PS3.5 9.1) standing alone.
_UID = re.compile(r"(?<![\w.])[0-9]+(?:\.[0-9]+){2,}(?![\w.])")
#: An IPv4 address: kept, the network address of a peer is operational information.
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
#: An HL7 CX patient identifier (``id^^^&oid&ISO``), whatever the id looks like.
_CX = re.compile(r"[^\s'\"^]*\^\^\^[^\s'\",)]*")
#: A URL's query string (QIDO and WADO parameters carry PatientID, StudyInstanceUID ...).
_QUERY = re.compile(r"\?[^\s'\"<>)]*")


def redact(text: object) -> str:
    """``text`` (an exception's message, a peer's answer) with what may identify a patient replaced: query
    strings by ``?<query>``, CX patient ids and UIDs by their :func:`log_ref`.  For log lines that must show
    a message this code did not write."""
    def uid(match: re.Match[str]) -> str:
        found = match.group(0)
        return found if _IPV4.fullmatch(found) else log_ref(found)

    out = _QUERY.sub("?<query>", str(text))
    out = _CX.sub(lambda match: log_ref(match.group(0)), out)
    return _UID.sub(uid, out)


class RedactingFormatter(logging.Formatter):
    """The services' log formatter (``LOGGING`` in config/settings.py): a logged traceback's exception
    messages -- a URL with a query, a UID in a library's error text -- go through :func:`redact`."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return redact(super().formatException(ei))
