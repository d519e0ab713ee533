"""Format checks of XDS value types that :mod:`xds_core.metadata.values` does not cover.

Each function returns a list of human-readable problems ([] = valid); validators turn them
into RegistryErrors with their location.
"""

from __future__ import annotations

import re

# Identifiers (OIDs, uniqueIds, sourceId) are checked by xds_core.identifiers.  The patterns below are
# matched whole (fullmatch: ``$`` would let a trailing newline through).
HASH_RE = re.compile(r"[0-9a-fA-F]{40}")
# Digits only; leading zeros are tolerated (the NIST testkit RPLC sample sends size "061224").
SIZE_RE = re.compile(r"[0-9]{1,19}")
# RFC 5646 language tag, loosely (ITI TF-3 4.2.3.2.13 languageCode "en-us").
LANGUAGE_RE = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*")
MIME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(\s*;.*)?")
_SOURCE_PATIENT_INFO_FIELD = re.compile(r"PID-[0-9]+")


def hash_problems(value: str) -> list[str]:
    return [] if HASH_RE.fullmatch(value) else [f"hash {value!r} is not 40 hexadecimal digits (SHA-1)"]


def size_problems(value: str) -> list[str]:
    return [] if SIZE_RE.fullmatch(value) else [f"size {value!r} is not a non-negative integer"]


def language_problems(value: str) -> list[str]:
    return [] if LANGUAGE_RE.fullmatch(value) else [f"languageCode {value!r} is not an RFC 5646 language tag"]


def mime_problems(value: str) -> list[str]:
    return [] if MIME_RE.fullmatch(value) else [f"mimeType {value!r} is not a MIME type"]


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
    if not sep or not _SOURCE_PATIENT_INFO_FIELD.fullmatch(head):
        return [f"sourcePatientInfo value {value!r} is not 'PID-<n>|<value>'"]
    return []
