"""XDS value types: Code, Author and the HL7 v2 data types XDS borrows.

Formats: ITI TF-3 Table 4.2.3.1.7-2 (CX, XCN, XON, XTN, DTM).  Each type parses
from its wire string (``from_str``), renders back (``__str__``) and reports
format problems with ``problems()`` (validators collect them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

OID_RE = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))*$")
DTM_RE = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2})?)?)?)?)?$")


def is_oid(value: str) -> bool:
    return bool(OID_RE.match(value)) and len(value) <= 64


@dataclass(frozen=True)
class Code:
    code: str
    scheme: str
    display_name: str | None = None

    def __str__(self) -> str:  # the stored-query form code^^scheme
        return f"{self.code}^^{self.scheme}"


@dataclass(frozen=True)
class CX:
    """Patient identifier ``id^^^&OID&ISO`` (ITI TF-3 4.2.3.1.7)."""

    id: str
    assigning_authority_oid: str
    type_code: str | None = None

    @classmethod
    def from_str(cls, value: str) -> CX:
        parts = value.split("^")
        authority = parts[3].split("&") if len(parts) > 3 else []
        oid = authority[1] if len(authority) > 1 else ""
        type_code = parts[4] if len(parts) > 4 else None
        return cls(parts[0], oid, type_code)

    @staticmethod
    def problems(value: str) -> list[str]:
        """Format findings for an XDS patientId (CX with a universal id of type ISO)."""
        out: list[str] = []
        parts = value.split("^")
        if not parts[0]:
            out.append("CX.1 (id) is empty")
        if len(parts) < 4 or not parts[3]:
            out.append("CX.4 (assigning authority) is missing")
            return out
        if parts[1] or parts[2]:
            out.append("CX.2 and CX.3 must be empty")
        authority = parts[3].split("&")
        if len(authority) != 3 or authority[0] or authority[2] != "ISO" or not is_oid(authority[1]):
            out.append("CX.4 must be &<OID>&ISO")
        if len(parts) > 4 and any(parts[4:]):
            out.append("only CX.1 and CX.4 are allowed")
        return out

    def __str__(self) -> str:
        return f"{self.id}^^^&{self.assigning_authority_oid}&ISO"


@dataclass(frozen=True)
class XCN:
    """Person: ``id^family^given^...^^^^^&authority&ISO``."""

    raw: str

    @property
    def id(self) -> str:
        return self.raw.split("^")[0]

    @property
    def family_name(self) -> str:
        parts = self.raw.split("^")
        return parts[1] if len(parts) > 1 else ""

    @staticmethod
    def problems(value: str) -> list[str]:
        parts = value.split("^")
        if not parts[0] and not (len(parts) > 1 and parts[1]):
            return ["XCN needs an id (XCN.1) or a family name (XCN.2)"]
        return []


@dataclass(frozen=True)
class XON:
    """Organization: ``name^^^^^&authority&ISO^^^^id``."""

    raw: str

    @property
    def name(self) -> str:
        return self.raw.split("^")[0]

    @staticmethod
    def problems(value: str) -> list[str]:
        parts = value.split("^")
        if not parts[0]:
            return ["XON.1 (organization name) is required"]
        return []


@dataclass(frozen=True)
class XTN:
    raw: str

    @staticmethod
    def problems(value: str) -> list[str]:
        parts = value.split("^")
        if len(parts) < 3 or parts[2] not in ("Internet", "PH", "FX", "CP", "BP", "X.400", "MD", "TDD", "TTY"):
            return ["XTN.3 (telecommunication equipment type) is required, e.g. ^^Internet^user@host"]
        return []


class DTM:
    """HL7 DTM restricted by XDS: YYYY[MM[DD[hh[mm[ss]]]]], UTC, no zone."""

    @staticmethod
    def problems(value: str) -> list[str]:
        if not DTM_RE.match(value):
            return [f"{value!r} is not a DTM (YYYY[MM[DD[hh[mm[ss]]]]])"]
        return []

    @staticmethod
    def lower_bound(value: str) -> str:
        """Pad to 14 digits, earliest instant (for range comparison)."""
        return value + "00000101000000"[len(value):] if len(value) < 14 else value[:14]


@dataclass(frozen=True)
class Author:
    person: str | None = None
    institutions: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    specialties: list[str] = field(default_factory=list)
    telecommunications: list[str] = field(default_factory=list)

    @classmethod
    def from_slots(cls, slots: dict[str, list[str]]) -> Author:
        person = slots.get("authorPerson") or []
        return cls(person[0] if person else None, list(slots.get("authorInstitution", [])),
                   list(slots.get("authorRole", [])), list(slots.get("authorSpecialty", [])),
                   list(slots.get("authorTelecommunication", [])))
