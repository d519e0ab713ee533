"""Offline XSD validation of ebXML RegRep 3.0 / XDS.b / XDS-I.b elements.

One schema set compiled once per process (thread-safe lazy init): a small
in-memory wrapper schema imports lcm, query, rs, rim, the IHE XDS.b repository
schema and the XDS-I.b imaging document source schema *by file path* from
``xds_core/ebxml/schemas`` -- nothing is fetched from the network.

Used by tests across the project to check what we emit, and by tools that want
to tell a sender "your message is not schema-valid".  Note (schemas/ORIGIN.md):
an ``xdsb:Document`` holding ``xop:Include`` is not valid base64Binary; validate
the request before MTOM packaging or with the binary inlined.
"""

from __future__ import annotations

import threading
from pathlib import Path

from lxml import etree

from xds_core import ns
from xds_core.safe_xml import parse_xml

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"

#: (namespace, file under SCHEMA_DIR) imported by the wrapper, in dependency order.
_IMPORTS: tuple[tuple[str, str], ...] = (
    (ns.RIM, "ebRS/rim.xsd"),
    (ns.RS, "ebRS/rs.xsd"),
    (ns.LCM, "ebRS/lcm.xsd"),
    (ns.QUERY, "ebRS/query.xsd"),
    (ns.XDSB, "IHE/XDS.b_DocumentRepository.xsd"),
    (ns.XDSI, "IHE/XDSI.b_ImagingDocumentSource.xsd"),
)

_lock = threading.Lock()
_schema: etree.XMLSchema | None = None


def _wrapper() -> bytes:
    imports = "".join(
        f'<xs:import namespace="{namespace}" schemaLocation="{(SCHEMA_DIR / path).as_uri()}"/>'
        for namespace, path in _IMPORTS)
    return (f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" '
            f'targetNamespace="urn:x-xds-suite:schema-wrapper" elementFormDefault="qualified">'
            f'{imports}</xs:schema>').encode()


def _compiled() -> etree.XMLSchema:
    global _schema
    if _schema is None:
        with _lock:
            if _schema is None:
                # The wrapper imports by absolute file: URI, so it needs no base URL; libxml2 then
                # loads the imported XSDs (and rim.xsd's relative xml.xsd import) from disk only.
                _schema = etree.XMLSchema(parse_xml(_wrapper()))
    return _schema


def validate(element: etree._Element) -> list[str]:
    """XSD findings for ``element`` (any root of rs/lcm/query/rim/XDS.b/XDS-I.b); ``[]`` = valid."""
    schema = _compiled()
    # One XMLSchema object keeps one error_log; serialize its use so concurrent callers
    # (threaded test runs, gthread workers) never read each other's findings.
    with _lock:
        valid = schema.validate(element)
        if valid:
            return []
        return [f"line {e.line}: {e.message}" for e in schema.error_log]
