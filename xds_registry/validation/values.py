"""Format checks of XDS value types that :mod:`xds_core.metadata.values` does not cover.

Each function returns a list of human-readable problems ([] = valid); validators turn them
into RegistryErrors with their location.
"""

from __future__ import annotations

import re

HASH_RE = re.compile(r"^[0-9a-fA-F]{40}$")
# Digits only; leading zeros are tolerated (the NIST testkit RPLC sample sends size "061224").
SIZE_RE = re.compile(r"^[0-9]{1,19}$")
# RFC 5646 language tag, loosely (ITI TF-3 4.2.3.2.13 languageCode "en-us").
LANGUAGE_RE = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$")
MIME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(\s*;.*)?$")

#: ITI TF-3 4.2.3.2.26: uniqueId is at most 128 characters; an OID part at most 64.
MAX_UNIQUE_ID = 128


#: Dotted decimal arcs without leading zeros, at most 64 characters (ITI TF-3 Table 4.2.3.1.7-2 "OID").
#: The first arc is deliberately not restricted to 0-2: widely deployed sources (and the NIST
#: testkit's sourceId 129.6.58.92.1.1) use such ids, and refusing them buys no safety.
OID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
MAX_OID = 64


def oid_problems(value: str, what: str) -> list[str]:
    if not OID_RE.match(value) or len(value) > MAX_OID:
        return [f"{what} {value!r} is not an OID (dotted decimal numbers without leading zeros, "
                f"at most {MAX_OID} characters)"]
    return []


def document_unique_id_problems(value: str) -> list[str]:
    """DocumentEntry.uniqueId: ``OID`` or ``OID^extension`` (ITI TF-3 4.2.3.2.26), <= 128 chars."""
    if len(value) > MAX_UNIQUE_ID:
        return [f"uniqueId is longer than {MAX_UNIQUE_ID} characters"]
    root, _, extension = value.partition("^")
    problems = oid_problems(root, "uniqueId root")
    if "^" in value and not extension:
        problems.append("uniqueId has an empty extension after '^'")
    return problems


def hash_problems(value: str) -> list[str]:
    return [] if HASH_RE.match(value) else [f"hash {value!r} is not 40 hexadecimal digits (SHA-1)"]


def size_problems(value: str) -> list[str]:
    return [] if SIZE_RE.match(value) else [f"size {value!r} is not a non-negative integer"]


def language_problems(value: str) -> list[str]:
    return [] if LANGUAGE_RE.match(value) else [f"languageCode {value!r} is not an RFC 5646 language tag"]


def mime_problems(value: str) -> list[str]:
    return [] if MIME_RE.match(value) else [f"mimeType {value!r} is not a MIME type"]


def cxi_problems(value: str) -> list[str]:
    """referenceIdList value: CXi with CX.1 (id) and CX.5 (identifier type) (ITI TF-3 Table 4.2.3.1.7-2)."""
    parts = value.split("^")
    problems = []
    if not parts[0]:
        problems.append(f"referenceIdList value {value!r}: CXi.1 (id) is empty")
    if len(parts) < 5 or not parts[4]:
        problems.append(f"referenceIdList value {value!r}: CXi.5 (identifier type code) is required")
    return problems


def source_patient_info_problems(value: str) -> list[str]:
    """sourcePatientInfo values are ``PID-<n>|<value>`` (ITI TF-3 4.2.3.2.24)."""
    head, sep, _ = value.partition("|")
    if not sep or not re.match(r"^PID-\d+$", head):
        return [f"sourcePatientInfo value {value!r} is not 'PID-<n>|<value>'"]
    return []
