"""Affinity-domain configuration: the value sets and patient-id authorities a registry accepts.

The file format is the NIST toolkit's ``codes.xml`` (docs: conformance/affinity-domain/README.md)::

    <Codes>
      <CodeType name="classCode" classScheme="urn:uuid:41a5887f-...">
        <Code code="REPORTS" display="Reports" codingScheme="1.3.6.1.4.1.19376.1.2.6.1"/>
      </CodeType>
      <CodeType name="mimeType"><Code code="text/plain"/></CodeType>
      <AssigningAuthority id="&amp;1.3.6.1.4.1.21367.2005.13.20.1000&amp;ISO"/>
    </Codes>

Rules (ITI TF-1 10.2 "affinity domain policy"; ITI TF-3 4.2.3.1.7 codes are "from a value set
agreed in the affinity domain"):

* A ``CodeType`` with at least one ``Code`` constrains its attribute: a submitted (code, scheme)
  outside it is an XDSRegistryMetadataError.  An empty ``CodeType`` (the toolkit file ships
  ``folderCodeList`` empty) or an absent one leaves the attribute unconstrained.
* ``AssigningAuthority`` elements, when present, are the only accepted patient-id authorities.
* No file configured -> :data:`None` affinity domain: any well-formed code / authority is accepted.

``deprecated`` / ``system`` attributes are toolkit annotations: a registry accepts every listed
entry regardless of them (as the toolkit's own does); ``deprecated`` is kept on each entry for
readers that prefer current codes (the conformance runner's code rewrite).  This module is the one
reader of codes.xml.

Domain code receives an :class:`AffinityDomain` (or ``None``) as an argument; only the view /
command layer calls :func:`load_affinity_domain` with the path from settings.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from xds_core.metadata.values import CX

#: The attributes a codes.xml may constrain (CodeType/@name).
CODE_TYPES = (
    "classCode", "typeCode", "formatCode", "practiceSettingCode", "healthcareFacilityTypeCode",
    "confidentialityCode", "eventCodeList", "contentTypeCode", "folderCodeList", "mimeType",
    "associationDocumentation",
)


class AffinityDomainConfigError(ValueError):
    """The configured codes file is missing or malformed."""


@dataclass(frozen=True)
class CodeEntry:
    code: str
    scheme: str
    display: str = ""
    deprecated: bool = False

    def __str__(self) -> str:
        return f"{self.code}^^{self.scheme}"


@dataclass(frozen=True)
class AffinityDomain:
    """Parsed codes.xml: value sets by attribute name and accepted assigning-authority OIDs."""

    source: str
    value_sets: dict[str, tuple[CodeEntry, ...]] = field(default_factory=dict)
    assigning_authorities: frozenset[str] = frozenset()
    #: CodeType/@name -> its @classScheme (the classification scheme UUID of the coded attribute), when given.
    class_schemes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {
            name: frozenset((c.code, c.scheme) for c in entries) for name, entries in self.value_sets.items()
        })

    def constrains(self, attribute: str) -> bool:
        return bool(self.value_sets.get(attribute))

    def accepts_code(self, attribute: str, code: str, scheme: str = "") -> bool:
        """True when (code, scheme) is allowed for ``attribute`` (always, if unconstrained).

        mimeType entries have no scheme; they match on the code alone.
        """
        entries = self.value_sets.get(attribute)
        if not entries:
            return True
        if attribute == "mimeType":
            return any(e.code == code for e in entries)
        return (code, scheme) in self._index[attribute]  # type: ignore[attr-defined]

    def accepts_patient_id(self, patient_id: str) -> bool:
        if not self.assigning_authorities:
            return True
        return CX.from_str(patient_id).assigning_authority_oid in self.assigning_authorities


def parse_affinity_domain(data: bytes, source: str = "<bytes>") -> AffinityDomain:
    """Parse a codes.xml document (through the one hardened XML parser)."""
    from xds_core.safe_xml import parse_xml

    try:
        root = parse_xml(data)
    except ValueError as exc:
        raise AffinityDomainConfigError(f"{source}: not well-formed XML: {exc}") from exc
    if _local(root.tag) != "Codes":
        raise AffinityDomainConfigError(f"{source}: root element must be <Codes>, found <{_local(root.tag)}>")
    value_sets: dict[str, list[CodeEntry]] = {}
    class_schemes: dict[str, str] = {}
    authorities: set[str] = set()
    for child in root:
        if not isinstance(child.tag, str):
            continue  # comments, processing instructions
        tag = _local(child.tag)
        if tag == "CodeType":
            name = child.get("name", "")
            if not name:
                raise AffinityDomainConfigError(f"{source}: CodeType without a name (line {child.sourceline})")
            entries = value_sets.setdefault(name, [])
            if child.get("classScheme"):
                class_schemes[name] = child.get("classScheme", "")
            for code in child:
                if isinstance(code.tag, str) and _local(code.tag) == "Code" and code.get("code"):
                    entries.append(CodeEntry(code.get("code", ""), code.get("codingScheme", ""),
                                             code.get("display", ""), code.get("deprecated", "").lower() == "yes"))
        elif tag == "AssigningAuthority":
            # id is "&OID&ISO" (CX.4 form).
            parts = child.get("id", "").split("&")
            oid = parts[1] if len(parts) > 1 else parts[0]
            if not oid:
                raise AffinityDomainConfigError(f"{source}: AssigningAuthority without an id (line {child.sourceline})")
            authorities.add(oid)
    return AffinityDomain(source=source, value_sets={k: tuple(v) for k, v in value_sets.items()},
                          assigning_authorities=frozenset(authorities), class_schemes=class_schemes)


_cache: dict[str, tuple[float, int, AffinityDomain]] = {}
_cache_lock = threading.Lock()


def load_affinity_domain(path: str | os.PathLike[str] | None) -> AffinityDomain | None:
    """The affinity domain configured by ``path`` (``XDS_AFFINITY_DOMAIN_CODES``), or None if unset.

    Parsed once and cached; re-read when the file's mtime or size changes.
    """
    if not path:
        return None
    file = Path(path)
    try:
        stat = file.stat()
    except OSError as exc:
        raise AffinityDomainConfigError(f"XDS_AFFINITY_DOMAIN_CODES={path}: {exc.strerror}") from exc
    key = str(file.resolve())
    with _cache_lock:
        cached = _cache.get(key)
        if cached and cached[0] == stat.st_mtime and cached[1] == stat.st_size:
            return cached[2]
    domain = parse_affinity_domain(file.read_bytes(), source=key)
    with _cache_lock:
        _cache[key] = (stat.st_mtime, stat.st_size, domain)
    return domain


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
