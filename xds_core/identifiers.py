"""Identifier rules of the affinity domain: one named function per rule, after its spec section.

* :func:`is_dicom_uid` -- DICOM PS3.5 §9.1 (UID encoding rules);
* :func:`is_iso_oid` / :func:`iso_oid_problems` -- ISO/IEC 8824-1 / ITU-T X.660 (root arc 0, 1 or 2),
  at most 64 characters (ITI TF-3 Table 4.2.3.1.7-2 "OID");
* :func:`is_any_root_oid` -- the same syntax without the root arc check, for SubmissionSet.sourceId only;
* :func:`xds_unique_id_problems` -- ITI TF-3 4.2.3.2.26 (DocumentEntry), 4.2.3.3.12 (SubmissionSet),
  4.2.3.4.7 (Folder);
* :func:`iso_assigning_authority_problems` -- the HD ``[namespace]&OID&ISO`` of CX.4, XCN.9 and XON.6
  (ITI TF-3 Table 4.2.3.1.7-2);
* :func:`is_urn_uuid` -- RFC 4122 §3 (UUID URN), as ebRIM 3.0 entryUUIDs are written.

Every check is a full match on ASCII digits: ``[0-9]`` (never ``\\d``, which matches '١' and other
Unicode digits) and ``fullmatch`` (``$`` would accept a trailing newline).  Nothing here strips:
callers decide whether padding (DICOM's trailing NUL, XML whitespace) is theirs to remove.

The CX / XCN / XON types that use these rules live in :mod:`xds_core.metadata.values`.
"""

from __future__ import annotations

import re

#: ITI TF-3 Table 4.2.3.1.7-2 ("OID") and DICOM PS3.5 §9.1: at most 64 characters.
MAX_OID_LENGTH = 64
MAX_DICOM_UID_LENGTH = 64
#: ITI TF-3 4.2.3.2.26: a DocumentEntry uniqueId is at most 128 characters; its ``^extension`` at most 16.
MAX_UNIQUE_ID_LENGTH = 128
MAX_UNIQUE_ID_EXTENSION_LENGTH = 16

# One component: "0", or digits without a leading zero (PS3.5 §9.1; X.660 primary integer values).
_COMPONENT = r"(?:0|[1-9][0-9]*)"
#: PS3.5 §9.1: at least two components separated by ".".
_DOTTED = re.compile(rf"{_COMPONENT}(?:\.{_COMPONENT})+")
#: X.660 §A.2 / ISO/IEC 8824-1: the root arc is 0 (itu-t), 1 (iso) or 2 (joint-iso-itu-t).  A root arc
#: alone ("1") names a node of the OID tree and is accepted (X.660 3.5.11; pinned by the XDS value tests).
#: Not checked: the X.660 limit of 0..39 for the second arc under 0 and 1 -- the NIST XDS-I.b test
#: data (ids_4801/4802) submits uniqueIds 1.42.x.
_ISO_OID = re.compile(rf"[0-2](?:\.{_COMPONENT})*")
_ANY_ROOT_OID = re.compile(rf"{_COMPONENT}(?:\.{_COMPONENT})*")
#: RFC 4122 §3: ``urn:uuid:`` + 8-4-4-4-12 hexadecimal digits (case-insensitive on input).
_URN_UUID = re.compile(r"urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# --- DICOM ----------------------------------------------------------------------------------------

def is_dicom_uid(value: str) -> bool:
    """DICOM PS3.5 §9.1: numeric components separated by ".", no leading zero in a component (except a
    lone "0"), at least two components, at most 64 characters.  The root arc is not restricted
    (PS3.5 §9.1 wants an ISO-registered root, which a receiver cannot check)."""
    return len(value) <= MAX_DICOM_UID_LENGTH and _DOTTED.fullmatch(value) is not None


# --- ISO OIDs ------------------------------------------------------------------------------------

def is_iso_oid(value: str) -> bool:
    """ISO OID (X.660 / ISO/IEC 8824-1): root arc 0-2, components without leading zeros, at most 64
    characters (ITI TF-3 Table 4.2.3.1.7-2)."""
    return len(value) <= MAX_OID_LENGTH and _ISO_OID.fullmatch(value) is not None


def iso_oid_problems(value: str, what: str = "OID") -> list[str]:
    """:func:`is_iso_oid` with its reasons, each starting with ``what`` ([] = valid)."""
    if not value:
        return [f"{what} is empty"]
    out: list[str] = []
    if _ISO_OID.fullmatch(value) is None:
        out.append(f"{what} {value!r} is not an OID (digits separated by dots, no leading zeros, "
                   "first arc 0, 1 or 2)")
    if len(value) > MAX_OID_LENGTH:
        out.append(f"{what} is {len(value)} characters long; at most {MAX_OID_LENGTH} allowed")
    return out


def is_any_root_oid(value: str) -> bool:
    """ITI TF-3 Table 4.2.3.1.7-2 "OID" syntax (digits and dots, no leading zeros, <= 64 characters)
    with any root arc.

    Only for SubmissionSet.sourceId (ITI TF-3 4.2.3.3.9): the NIST testkit submits sourceId
    ``129.6.58.92.1.1`` in its registry and repository tests, and a registry that refused it could
    not pass them; nothing is derived from a sourceId.  Every other OID is checked by :func:`is_iso_oid`.
    """
    return len(value) <= MAX_OID_LENGTH and _ANY_ROOT_OID.fullmatch(value) is not None


def any_root_oid_problems(value: str, what: str = "OID") -> list[str]:
    """:func:`is_any_root_oid` with its reason ([] = valid)."""
    if is_any_root_oid(value):
        return []
    return [f"{what} {value!r} is not an OID (dotted decimal numbers without leading zeros, "
            f"at most {MAX_OID_LENGTH} characters)"]


# --- XDS uniqueId --------------------------------------------------------------------------------

def xds_unique_id_problems(value: str, *, allow_extension: bool = True) -> list[str]:
    """An XDS uniqueId ([] = valid).

    DocumentEntry.uniqueId (ITI TF-3 4.2.3.2.26, ``allow_extension``): ``OID`` or ``OID^extension``,
    OID <= 64 characters, extension 1..16 characters, whole value <= 128.  SubmissionSet.uniqueId
    (4.2.3.3.12) and Folder.uniqueId (4.2.3.4.7) are plain OIDs (``allow_extension=False``).
    The OID part is an ISO OID (:func:`is_iso_oid`).
    """
    if not value:
        return ["uniqueId is empty"]
    out: list[str] = []
    if len(value) > MAX_UNIQUE_ID_LENGTH:
        out.append(f"uniqueId is longer than {MAX_UNIQUE_ID_LENGTH} characters ({len(value)}; "
                   f"at most {MAX_UNIQUE_ID_LENGTH} allowed)")
    root, caret, extension = value.partition("^")
    if caret and not allow_extension:
        out.append("uniqueId must be a plain OID (no ^extension)")
    out += iso_oid_problems(root, "uniqueId root")
    if caret and allow_extension:
        if not extension:
            out.append("uniqueId has an empty extension after '^'")
        elif "^" in extension:
            out.append("uniqueId has more than one '^'")
        elif len(extension) > MAX_UNIQUE_ID_EXTENSION_LENGTH:
            out.append(f"uniqueId extension is {len(extension)} characters long; "
                       f"at most {MAX_UNIQUE_ID_EXTENSION_LENGTH} allowed")
    return out


# --- HL7 v2 data types of XDS ---------------------------------------------------------------------

def iso_assigning_authority_problems(value: str, component: str, *, namespace_allowed: bool = True) -> list[str]:
    """An HD assigning authority ``[namespace]&OID&ISO`` (ITI TF-3 Table 4.2.3.1.7-2).

    HD.2 is an ISO OID and HD.3 the literal ``ISO``.  The CX.4 of an XDS patientId must leave HD.1
    (namespace) empty (``namespace_allowed=False``, ITI TF-3 4.2.3.1.7); XCN.9 / XON.6 may value it.
    """
    sub = value.split("&")
    if len(sub) != 3 or sub[2] != "ISO" or not is_iso_oid(sub[1]) or (sub[0] and not namespace_allowed):
        form = "<namespace>&<OID>&ISO" if namespace_allowed else "&<OID>&ISO"
        return [f"{component} must be {form}, got {value!r}"]
    return []


# --- ebRIM ------------------------------------------------------------------------------------------

def is_urn_uuid(value: str) -> bool:
    """RFC 4122 §3 UUID URN ``urn:uuid:xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`` (ebRIM 3.0 entryUUIDs)."""
    return _URN_UUID.fullmatch(value) is not None
