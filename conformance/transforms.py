"""Request preparation as the NIST toolkit does it (conformance README §2).

Order (``BasicTransaction.prepareMetadata``): placeholder substitution ->
patient id assignment -> uniqueId allocation -> sourceId -> UUID assignment ->
ebRIM 2.1 -> 3.0 re-serialisation.  Every function works on an lxml tree in
place and returns the id maps the step exports (``AssignedUids``,
``AssignedUuids``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping

from lxml import etree

from conformance.xmlutil import children, descendants, local
from xds_core import ns
from xds_core.soap.mtom import cid_href
from xds_core.vocabulary import AssociationType, AvailabilityStatus, IdentificationScheme, ObjectType

PATIENT_ID_SCHEMES = frozenset({
    IdentificationScheme.DocumentEntry_patientId.value,
    IdentificationScheme.SubmissionSet_patientId.value,
    IdentificationScheme.Folder_patientId.value,
})
UNIQUE_ID_SCHEMES = frozenset({
    IdentificationScheme.DocumentEntry_uniqueId.value,
    IdentificationScheme.SubmissionSet_uniqueId.value,
    IdentificationScheme.Folder_uniqueId.value,
})
SOURCE_ID_SCHEME = IdentificationScheme.SubmissionSet_sourceId.value
REFERENCE_ATTRIBUTES = ("classifiedObject", "sourceObject", "targetObject", "registryObject")

#: rim 3.0 RegistryObjectType child order (ebRIM 3.0 rim.xsd); anything else follows.
_CHILD_RANK = {"Slot": 0, "Name": 1, "Description": 2, "VersionInfo": 3, "Classification": 4,
               "ExternalIdentifier": 5}
_STATUS = {s.value.rsplit(":", 1)[-1]: s.value for s in AvailabilityStatus}
_ASSOCIATION_TYPE = {t.name: t.value for t in AssociationType}
_OBJECT_TYPE = {
    "RegistryPackage": ObjectType.REGISTRY_PACKAGE.value,
    "Association": ObjectType.ASSOCIATION.value,
    "Classification": ObjectType.CLASSIFICATION.value,
    "ExternalIdentifier": ObjectType.EXTERNAL_IDENTIFIER.value,
}


class TransformError(ValueError):
    """The request file cannot be turned into a request (unknown shape)."""


# --- placeholders -------------------------------------------------------------------

def _replacer(mapping: Mapping[str, str]) -> Callable[[str], str]:
    keys = sorted((k for k in mapping if k), key=len, reverse=True)
    if not keys:
        return lambda text: text
    pattern = re.compile("|".join(re.escape(k) for k in keys))
    return lambda text: pattern.sub(lambda m: mapping[m.group(0)], text) if text else text


def substitute_string(text: str, mapping: Mapping[str, str]) -> str:
    """Replace every key of ``mapping`` in ``text``, longest key first, in one pass.

    One alternation sorted longest-first means ``$doc1sub`` is never eaten by
    ``$doc1`` and a replacement value is never substituted again (README §7).
    """
    return _replacer(mapping)(text)


def substitute_tree(root: etree._Element, mapping: Mapping[str, str]) -> None:
    """Plain text replacement in element text and attribute values (README §2 'Substitution')."""
    replace = _replacer(mapping)
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        if element.text:
            element.text = replace(element.text)
        for name, value in element.attrib.items():
            new_value = replace(value)
            if new_value != value:
                element.set(name, new_value)


# --- id assignment -------------------------------------------------------------------

def _external_identifiers(root: etree._Element) -> list[etree._Element]:
    return list(descendants(root, "ExternalIdentifier"))


def _owner_id(identifier: etree._Element) -> str:
    parent = identifier.getparent()
    if parent is not None and local(parent) in ("ExtrinsicObject", "RegistryPackage"):
        return parent.get("id", "")
    return identifier.get("registryObject", "")


def assign_patient(root: etree._Element, patient_id: str) -> int:
    """Overwrite every patientId ExternalIdentifier value (README §2 step 3); returns the count."""
    count = 0
    for identifier in _external_identifiers(root):
        if identifier.get("identificationScheme") in PATIENT_ID_SCHEMES:
            identifier.set("value", patient_id)
            count += 1
    return count


def patient_ids(root: etree._Element) -> list[str]:
    """The patientId ExternalIdentifier values of a submission, in document order, unique."""
    seen: list[str] = []
    for identifier in _external_identifiers(root):
        value = identifier.get("value", "")
        if identifier.get("identificationScheme") in PATIENT_ID_SCHEMES and value and value not in seen:
            seen.append(value)
    return seen


def allocate_unique_ids(root: etree._Element, new_oid: Callable[[], str], *,
                        exclude_objects: Iterable[str] = (), exclude_schemes: Iterable[str] = ()) -> dict[str, str]:
    """Give every DocumentEntry/SubmissionSet/Folder uniqueId a fresh OID (README §2 step 5).

    Excluded objects/schemes keep their value (``NoAssignUids``, ``AssignUuids/Exclude``)
    but still appear in the returned map, so ``uid.<objectId>`` always resolves.
    """
    keep_objects = set(exclude_objects)
    keep_schemes = set(exclude_schemes)
    assigned: dict[str, str] = {}
    for identifier in _external_identifiers(root):
        scheme = identifier.get("identificationScheme")
        if scheme not in UNIQUE_ID_SCHEMES:
            continue
        owner = _owner_id(identifier)
        if owner not in keep_objects and scheme not in keep_schemes:
            identifier.set("value", new_oid())
        assigned[owner] = identifier.get("value", "")
    return assigned


def set_source_id(root: etree._Element, source_id: str) -> None:
    """XDSSubmissionSet.sourceId := the tester's source OID (README §2 step 6)."""
    for identifier in _external_identifiers(root):
        if identifier.get("identificationScheme") == SOURCE_ID_SCHEME:
            identifier.set("value", source_id)


def assign_uuids(root: etree._Element, document_ids: list[str] | None = None) -> dict[str, str]:
    """Replace every symbolic ``id`` by a fresh ``urn:uuid:`` and follow every reference (README §2 step 7).

    ``document_ids`` (attachment ``Document/@id`` values) is rewritten in place.
    """
    mapping: dict[str, str] = {}
    for element in root.iter():
        if not isinstance(element.tag, str) or local(element) == "ObjectRef":
            continue
        value = element.get("id")
        if value and not value.startswith("urn:uuid:") and value not in mapping:
            mapping[value] = f"urn:uuid:{uuid.uuid4()}"
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        for name in ("id", *REFERENCE_ATTRIBUTES):
            value = element.get(name)
            if value in mapping:
                element.set(name, mapping[value])
    if document_ids is not None:
        document_ids[:] = [mapping.get(d, d) for d in document_ids]
    return mapping


# --- ebRIM 2.1 -> 3.0 ----------------------------------------------------------------

def _convert(element: etree._Element) -> etree._Element:
    name = local(element)
    out = etree.Element(ns.q(ns.RIM, name), nsmap={"rim": ns.RIM})
    for attr, value in element.attrib.items():
        attr_name = etree.QName(attr).localname if attr.startswith("{") and not attr.startswith(
            "{" + ns.XML) else attr
        if attr_name in ("majorVersion", "minorVersion"):
            continue
        if attr_name == "lang":
            out.set(ns.q(ns.XML, "lang"), value)
            continue
        if attr_name == "status" and value in _STATUS:
            value = _STATUS[value]
        elif attr_name == "associationType" and value in _ASSOCIATION_TYPE:
            value = _ASSOCIATION_TYPE[value]
        out.set(attr_name, value)
    if name in _OBJECT_TYPE:
        out.set("objectType", _OBJECT_TYPE[name])
    if element.text and element.text.strip():
        out.text = element.text
    converted = [_convert(child) for child in children(element)]
    converted.sort(key=lambda c: _CHILD_RANK.get(local(c), 6))  # stable: same-rank order kept
    out.extend(converted)
    return out


def registry_objects(root: etree._Element) -> list[etree._Element]:
    """The registry objects of any accepted submission shape, ObjectRefs dropped.

    Accepted roots: ebRIM 2.1 ``rs:SubmitObjectsRequest/LeafRegistryObjectList``, lcm 3.0
    ``SubmitObjectsRequest/RegistryObjectList``, the non-standard ``registry:xsd:3.0``
    wrapper, and an ``xdsb:ProvideAndRegisterDocumentSetRequest`` around any of them.
    """
    node = root
    if local(node) == "ProvideAndRegisterDocumentSetRequest":
        inner = children(node, "SubmitObjectsRequest")
        if not inner:
            raise TransformError("ProvideAndRegisterDocumentSetRequest without SubmitObjectsRequest")
        node = inner[0]
    if local(node) != "SubmitObjectsRequest":
        raise TransformError(f"expected a SubmitObjectsRequest, found {local(node) or node.tag!r}")
    lists = children(node, "LeafRegistryObjectList") + children(node, "RegistryObjectList")
    if not lists:
        raise TransformError("SubmitObjectsRequest without a RegistryObjectList")
    return [c for c in children(lists[0]) if local(c) != "ObjectRef"]


def to_rim30(root: etree._Element) -> etree._Element:
    """Re-serialise a submission as ``lcm:SubmitObjectsRequest/rim:RegistryObjectList`` (README §2 step 9).

    Namespace, child order, status/associationType/objectType URIs, ``xml:lang``;
    ids and ``registryObject`` are completed by :func:`complete_ids`.
    """
    request = etree.Element(ns.q(ns.LCM, "SubmitObjectsRequest"), nsmap={"lcm": ns.LCM, "rim": ns.RIM})
    object_list = etree.SubElement(request, ns.q(ns.RIM, "RegistryObjectList"))
    for obj in registry_objects(root):
        object_list.append(_convert(obj))
    return request


def complete_ids(request: etree._Element) -> None:
    """Association/Classification/ExternalIdentifier get ``id_<n>`` when they have none;
    nested ExternalIdentifiers get ``registryObject`` and nested Classifications
    ``classifiedObject`` = their parent's id (README §2 step 9)."""
    used = {e.get("id") for e in request.iter() if isinstance(e.tag, str) and e.get("id")}
    counter = 0
    for element in request.iter():
        if not isinstance(element.tag, str):
            continue
        name = local(element)
        if name not in ("Association", "Classification", "ExternalIdentifier"):
            continue
        if not element.get("id"):
            counter += 1
            while f"id_{counter}" in used:
                counter += 1
            element.set("id", f"id_{counter}")
            used.add(f"id_{counter}")
        parent = element.getparent()
        parent_id = parent.get("id") if parent is not None and local(parent) != "RegistryObjectList" else None
        if parent_id:
            if name == "ExternalIdentifier":
                element.set("registryObject", parent_id)
            elif name == "Classification" and not element.get("classifiedObject"):
                element.set("classifiedObject", parent_id)
    _reorder_attributes(request)


def _reorder_attributes(request: etree._Element) -> None:
    """Keep ``id`` first on every element: purely cosmetic, eases reading the request log."""
    for element in request.iter():
        if isinstance(element.tag, str) and "id" in element.attrib and next(iter(element.attrib)) != "id":
            items = list(element.attrib.items())
            element.attrib.clear()
            element.set("id", dict(items)["id"])
            for key, value in items:
                if key != "id":
                    element.set(key, value)


def provide_and_register(request: etree._Element, documents: list[tuple[str, str]]) -> etree._Element:
    """``xdsb:ProvideAndRegisterDocumentSetRequest`` = the SubmitObjectsRequest + one
    ``xdsb:Document id=...`` per attachment, each an ``xop:Include`` of its MIME part (ITI TF-2b 3.41.4.1.2)."""
    pnr = etree.Element(ns.q(ns.XDSB, "ProvideAndRegisterDocumentSetRequest"),
                        nsmap={"xdsb": ns.XDSB, "lcm": ns.LCM, "rim": ns.RIM, "xop": ns.XOP})
    pnr.append(request)
    for document_id, content_id in documents:
        document = etree.SubElement(pnr, ns.q(ns.XDSB, "Document"), id=document_id)
        etree.SubElement(document, ns.q(ns.XOP, "Include"), href=cid_href(content_id))
    return pnr
