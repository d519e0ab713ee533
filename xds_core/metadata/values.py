"""XDS value types: Code, Author and the HL7 v2 data types XDS borrows.

Formats: ITI TF-3 Table 4.2.3.1.7-2 (CX, XCN, XON, XTN, DTM).  Each type parses
from its wire string (``from_str``), renders back (``__str__``) and reports
format problems with ``problems()`` (validators collect them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from xds_core.identifiers import is_iso_oid, iso_assigning_authority_problems

#: YYYY[MM[DD[hh[mm[ss]]]]] in ASCII digits, matched whole (``\d`` would take Unicode digits, ``$`` a newline).
DTM_RE = re.compile(r"[0-9]{4}(?:[0-9]{2}){0,5}")


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
        out += iso_assigning_authority_problems(parts[3], "CX.4", namespace_allowed=False)
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
        """ITI TF-3 Table 4.2.3.1.7-2: XCN.1 (id) and/or XCN.2.1 (family name) present; an assigning
        authority (XCN.9), when present, is ``&OID&ISO``."""
        parts = value.split("^")
        family = parts[1].split("&")[0] if len(parts) > 1 else ""
        if not parts[0] and not family:
            return ["XCN needs an id (XCN.1) or a family name (XCN.2)"]
        if len(parts) > 8 and parts[8]:
            return iso_assigning_authority_problems(parts[8], "XCN.9 (assigning authority)")
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
        """ITI TF-3 Table 4.2.3.1.7-2: XON.1 required; only XON.1, XON.6 and XON.10 may be valued;
        if XON.10 is valued and is not an OID, XON.6 must be ``&OID&ISO``."""
        parts = value.split("^")
        out: list[str] = []
        if not parts[0]:
            out.append("XON.1 (organization name) is required")
        if any(p for i, p in enumerate(parts) if i not in (0, 5, 9)):
            out.append("only XON.1, XON.6 and XON.10 may be valued")
        identifier = parts[9] if len(parts) > 9 else ""
        authority = parts[5] if len(parts) > 5 else ""
        if identifier and not is_iso_oid(identifier):
            if not authority:
                out.append("XON.10 is not an OID, so XON.6 (assigning authority &OID&ISO) is required")
            else:
                out += iso_assigning_authority_problems(authority, "XON.6 (assigning authority)")
        elif authority:
            out += iso_assigning_authority_problems(authority, "XON.6 (assigning authority)")
        return out


@dataclass(frozen=True)
class XTN:
    raw: str

    @staticmethod
    def problems(value: str) -> list[str]:
        """ITI TF-3 Table 4.2.3.1.7-2: XTN.3 (equipment type) required; an ``Internet`` address in XTN.4;
        a telephone number in XTN.6/XTN.7 or XTN.12."""
        parts = value.split("^")
        if len(parts) < 3 or parts[2] not in ("Internet", "PH", "FX", "CP", "BP", "X.400", "MD", "TDD", "TTY"):
            return ["XTN.3 (telecommunication equipment type) is required, e.g. ^^Internet^user@host"]
        if parts[2] in ("Internet", "X.400"):
            if len(parts) < 4 or not parts[3]:
                return [f"XTN.4 (communication address) is required for equipment type {parts[2]}"]
            return []
        number = any(len(parts) > i and parts[i] for i in (5, 6, 11))
        if not number:
            return [f"a telephone number (XTN.6/XTN.7 or XTN.12) is required for equipment type {parts[2]}"]
        return []


def cx_problems(value: str) -> list[str]:
    """Problems of an XDS patient id (CX ``id^^^&OID&ISO``); see :meth:`CX.problems`."""
    return CX.problems(value)


def xcn_problems(value: str) -> list[str]:
    return XCN.problems(value)


def xon_problems(value: str) -> list[str]:
    return XON.problems(value)


def xtn_problems(value: str) -> list[str]:
    return XTN.problems(value)


def dtm_problems(value: str) -> list[str]:
    return DTM.problems(value)


class DTM:
    """HL7 DTM restricted by XDS: YYYY[MM[DD[hh[mm[ss]]]]], UTC, no zone."""

    @staticmethod
    def problems(value: str) -> list[str]:
        """Format and calendar check (ITI TF-3 Table 4.2.3.1.7-2: DTM in UTC, precision year..second)."""
        if DTM_RE.fullmatch(value) is None:
            return [f"{value!r} is not a DTM (YYYY[MM[DD[hh[mm[ss]]]]])"]
        fields_ = [int(value[i:i + 2]) for i in range(4, len(value), 2)]
        year = int(value[:4])
        limits = ((1, 12, "month"), (1, 31, "day"), (0, 23, "hour"), (0, 59, "minute"), (0, 59, "second"))
        for number, (low, high, what) in zip(fields_, limits, strict=False):
            if not low <= number <= high:
                return [f"{value!r} is not a DTM: {what} {number:02d} out of range"]
        if len(fields_) >= 2:
            month, day = fields_[0], fields_[1]
            leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
            days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
            if day > days:
                return [f"{value!r} is not a DTM: day {day:02d} does not exist in month {month:02d}"]
        return []

    @staticmethod
    def lower_bound(value: str) -> str:
        """Pad to 14 digits, earliest instant (for range comparison)."""
        return value + "00000101000000"[len(value):] if len(value) < 14 else value[:14]


@dataclass
class Slot:
    """An ebRIM Slot: a named list of string values (ebRIM 3.0 2.8.2)."""

    name: str
    values: list[str] = field(default_factory=list)
    slot_type: str | None = None


@dataclass(frozen=True)
class Author:
    person: str | None = None
    institutions: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    specialties: list[str] = field(default_factory=list)
    telecommunications: list[str] = field(default_factory=list)

    def to_slots(self) -> list[Slot]:
        """The author Classification's slots, in the order ITI TF-3 4.2.3.1.4 lists them."""
        out: list[Slot] = []
        if self.person:
            out.append(Slot("authorPerson", [self.person]))
        for name, values in (("authorInstitution", self.institutions), ("authorRole", self.roles),
                             ("authorSpecialty", self.specialties),
                             ("authorTelecommunication", self.telecommunications)):
            if values:
                out.append(Slot(name, list(values)))
        return out

    @classmethod
    def from_slots(cls, slots: dict[str, list[str]]) -> Author:
        person = slots.get("authorPerson") or []
        return cls(person[0] if person else None, list(slots.get("authorInstitution", [])),
                   list(slots.get("authorRole", [])), list(slots.get("authorSpecialty", [])),
                   list(slots.get("authorTelecommunication", [])))
