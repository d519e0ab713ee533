"""Shared helpers of the ebXML tests: fixture loading and an independent semantic normal form.

The normal form is computed from the XML directly (not through our model), so a
round-trip comparison cannot hide a bug shared by parse and serialize.
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from xds_core import ns
from xds_core.safe_xml import parse_xml

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ebxml"

#: Fixtures that hold a ebRIM 3.0 SubmitObjectsRequest (directly or inside a PnR request).
SUBMISSION_FIXTURES = [
    "openxds_submit_document.xml",
    "openxds_add_document2_folder.xml",
    "openxds_document_replacement.xml",
    "openxds_submit_multiple_documents.xml",
    "nist_idc_metadata_IDCDEPT001.xml",
    "nist_repos1111_rplc_pnr.xml",
]


def load(name: str) -> etree._Element:
    return parse_xml((FIXTURES / name).read_bytes())


def submit_objects_request_of(root: etree._Element) -> etree._Element:
    if root.tag == ns.q(ns.XDSB, "ProvideAndRegisterDocumentSetRequest"):
        return root.find(ns.q(ns.LCM, "SubmitObjectsRequest"))
    return root


def _local(tag: str) -> str:
    return etree.QName(tag).localname


def _strings(el: etree._Element) -> tuple:
    return tuple((s.get(ns.q(ns.XML, "lang")), s.get("charset"), s.get("value"))
                 for s in el if s.tag == ns.q(ns.RIM, "LocalizedString"))


def _form(el: etree._Element, parent_id: str | None = None) -> dict:
    """Order-independent content of one rim object (nested ids ignored: the source may lack them)."""
    attrs = dict(el.attrib)
    if parent_id is not None:
        attrs.pop("id", None)
        if _local(el.tag) == "Classification":
            attrs.setdefault("classifiedObject", parent_id)
        if _local(el.tag) == "ExternalIdentifier":
            attrs.setdefault("registryObject", parent_id)
    own_id = el.get("id") or parent_id or ""
    form: dict = {"tag": _local(el.tag), "attrs": tuple(sorted(attrs.items())), "slots": [], "name": (),
                  "description": (), "version": None, "classifications": [], "external_ids": [], "other": []}
    for child in el:
        if not isinstance(child.tag, str):
            continue
        local = _local(child.tag)
        if local == "Slot":
            values = tuple(v.text or "" for v in child.iter(ns.q(ns.RIM, "Value")))
            form["slots"].append((child.get("name"), child.get("slotType"), values))
        elif local == "Name":
            form["name"] = _strings(child)
        elif local == "Description":
            form["description"] = _strings(child)
        elif local == "VersionInfo":
            form["version"] = tuple(sorted(child.attrib.items()))
        elif local == "Classification":
            form["classifications"].append(repr(_form(child, own_id)))
        elif local == "ExternalIdentifier":
            form["external_ids"].append(repr(_form(child, own_id)))
        else:
            form["other"].append(etree.tostring(child, method="c14n", exclusive=True))
    for key in ("slots", "classifications", "external_ids", "other"):
        form[key] = sorted(form[key])
    return form


def semantic(object_list: etree._Element) -> dict[str, dict]:
    """{object id: normal form} of a RegistryObjectList; top-level Classifications/ExternalIdentifiers
    are folded into the object they point at, as ebRIM means them."""
    objects: dict[str, dict] = {}
    loose: list[etree._Element] = []
    for child in object_list:
        if not isinstance(child.tag, str):
            continue
        if _local(child.tag) in ("Classification", "ExternalIdentifier"):
            loose.append(child)
        else:
            objects[child.get("id")] = _form(child)
    for child in loose:
        target = child.get("classifiedObject") or child.get("registryObject")
        key = "classifications" if _local(child.tag) == "Classification" else "external_ids"
        if target in objects:
            objects[target][key] = sorted([*objects[target][key], repr(_form(child, target))])
        else:
            objects[child.get("id")] = _form(child)
    return objects
