"""XSD validation of the answers the runner judges, with the runner's own schema copy (``conformance/schemas``).

Deliberately independent of the actors' schema module: the harness must not share a bug (or a
relaxed schema) with the systems it judges.  One schema set, compiled once per process from
``IHE/XDSI.b_ImagingDocumentSource.xsd``, which imports rim/rs/lcm/query and the XDS.b schema by
relative path; libxml2 reads them from disk and never from the network.
"""

from __future__ import annotations

import threading
from pathlib import Path

from lxml import etree

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
ROOT_SCHEMA = SCHEMA_DIR / "IHE" / "XDSI.b_ImagingDocumentSource.xsd"
#: Findings reported per answer: a hostile answer can carry millions of schema errors.
MAX_FINDINGS = 20

_lock = threading.Lock()
_schema: etree.XMLSchema | None = None


def _compiled() -> etree.XMLSchema:
    global _schema
    if _schema is None:
        with _lock:
            if _schema is None:
                parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
                _schema = etree.XMLSchema(etree.parse(str(ROOT_SCHEMA), parser))
    return _schema


def validate(element: etree._Element) -> list[str]:
    """XSD findings for an rs/lcm/query/rim/XDS.b/XDS-I.b element (at most :data:`MAX_FINDINGS`); ``[]`` = valid."""
    schema = _compiled()
    with _lock:  # one XMLSchema keeps one error_log: never read another caller's findings
        if schema.validate(element):
            return []
        return [f"line {e.line}: {e.message}" for e in list(schema.error_log)[:MAX_FINDINGS]]
