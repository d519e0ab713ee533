"""The typed model -> ebXML RegRep 3.0 / XDS.b / XDS-I.b elements.

Children are written in XSD order (rim.xsd RegistryObjectType: Slot*, Name?,
Description?, VersionInfo?, Classification*, ExternalIdentifier*, then the type's
own extension elements), so that what we emit validates against the schemas
(:func:`xds_core.ebxml.schema.validate`).  Roots carry the conventional
prefixes (rim, lcm, query, rs, xdsb, xdsi).

A nested Classification / ExternalIdentifier without an id gets a fresh
``urn:uuid:`` (``id`` is required by rim.xsd); one without a
classifiedObject / registryObject points at its parent.
"""

from __future__ import annotations

from collections.abc import Iterable

from lxml import etree

from xds_core import ns, xml_text
from xds_core.ebxml.messages import DocumentRequest, RetrieveImagingDocumentSetRequest
from xds_core.metadata.objects import (
    Association,
    Classification,
    DocumentEntry,
    ExternalIdentifier,
    InternationalString,
    ObjectRef,
    OpaqueElement,
    RegistryObject,
    RegistryPackage,
    Slot,
    Submission,
    new_id,
)
from xds_core.safe_xml import parse_xml
from xds_core.soap.mtom import cid_href
from xds_core.vocabulary import ReturnType

__all__ = [
    "adhoc_query_request",
    "object_ref",
    "provide_and_register_request",
    "registry_object",
    "retrieve_document_set_request",
    "retrieve_imaging_document_set_request",
    "slot",
    "submit_objects_request",
]

_q = ns.q
_RIM_NSMAP = {"rim": ns.RIM}
_SUBMIT_NSMAP = {"lcm": ns.LCM, "rim": ns.RIM, "rs": ns.RS}
_PNR_NSMAP = {"xdsb": ns.XDSB, "lcm": ns.LCM, "rim": ns.RIM, "rs": ns.RS, "xop": ns.XOP}
_QUERY_NSMAP = {"query": ns.QUERY, "rim": ns.RIM, "rs": ns.RS}
_XDSB_NSMAP = {"xdsb": ns.XDSB}
_XDSI_NSMAP = {"xdsi": ns.XDSI, "xdsb": ns.XDSB}

R_SLOT = _q(ns.RIM, "Slot")
R_VALUE_LIST = _q(ns.RIM, "ValueList")
R_VALUE = _q(ns.RIM, "Value")
R_LOCALIZED_STRING = _q(ns.RIM, "LocalizedString")
XML_LANG = _q(ns.XML, "lang")

_SubElement = etree.SubElement


def _set(el: etree._Element, name: str, value: str | None) -> None:
    if value is not None:
        el.set(name, value)


def _append_slot(parent: etree._Element, s: Slot) -> None:
    el = _SubElement(parent, R_SLOT, name=s.name)
    if s.slot_type is not None:
        el.set("slotType", s.slot_type)
    value_list = _SubElement(el, R_VALUE_LIST)
    for value in s.values:
        _SubElement(value_list, R_VALUE).text = value


def slot(s: Slot) -> etree._Element:
    """A standalone ``rim:Slot``."""
    el = etree.Element(R_SLOT, nsmap=_RIM_NSMAP)
    el.set("name", s.name)
    if s.slot_type is not None:
        el.set("slotType", s.slot_type)
    value_list = _SubElement(el, R_VALUE_LIST)
    for value in s.values:
        _SubElement(value_list, R_VALUE).text = value
    return el


def _append_international(parent: etree._Element, local: str, text: InternationalString) -> None:
    el = _SubElement(parent, _q(ns.RIM, local))
    for string in text.strings:
        localized = _SubElement(el, R_LOCALIZED_STRING)
        # rim.xsd LocalizedStringType: xml:lang, charset, value (attribute order as declared).
        if string.lang is not None:
            localized.set(XML_LANG, string.lang)
        if string.charset is not None:
            localized.set("charset", string.charset)
        localized.set("value", string.value)


def _append_opaque(parent: etree._Element, opaque: OpaqueElement) -> None:
    # The bytes were produced by our own serializer from an element that already
    # passed the hardened parser; they still go through it (rule 3: one parser).
    parent.append(parse_xml(opaque.xml))


def _write_registry_object(el: etree._Element, obj: RegistryObject) -> None:
    """Attributes id/home/lid/objectType/status + extra, then RegistryObjectType children in XSD order."""
    if isinstance(obj, (Classification, ExternalIdentifier)) and not obj.id:
        obj_id = new_id()
    else:
        obj_id = obj.id
    el.set("id", obj_id)
    _set(el, "home", obj.home)
    _set(el, "lid", obj.lid)
    _set(el, "objectType", obj.object_type)
    _set(el, "status", obj.status)
    for key, value in obj.extra_attributes.items():
        el.set(key, value)
    for s in obj.slots:
        _append_slot(el, s)
    if obj.name.strings:
        _append_international(el, "Name", obj.name)
    if obj.description.strings:
        _append_international(el, "Description", obj.description)
    if obj.version_name is not None or obj.version_comment is not None:
        version = _SubElement(el, _q(ns.RIM, "VersionInfo"))
        _set(version, "versionName", obj.version_name)
        _set(version, "comment", obj.version_comment)
    for classification in obj.classifications:
        _write_classification(_SubElement(el, _q(ns.RIM, "Classification")), classification, obj_id)
    for identifier in obj.external_identifiers:
        _write_external_identifier(_SubElement(el, _q(ns.RIM, "ExternalIdentifier")), identifier, obj_id)


def _write_classification(el: etree._Element, c: Classification, parent_id: str | None) -> None:
    _set(el, "classificationScheme", c.classification_scheme)
    el.set("classifiedObject", c.classified_object or parent_id or "")
    _set(el, "classificationNode", c.classification_node)
    _set(el, "nodeRepresentation", c.node_representation)
    _write_registry_object(el, c)
    _append_extra_elements(el, c)


def _write_external_identifier(el: etree._Element, e: ExternalIdentifier, parent_id: str | None) -> None:
    el.set("registryObject", e.registry_object or parent_id or "")
    el.set("identificationScheme", e.identification_scheme)
    el.set("value", e.value)
    _write_registry_object(el, e)
    _append_extra_elements(el, e)


def _append_extra_elements(el: etree._Element, obj: RegistryObject | ObjectRef) -> None:
    for opaque in obj.extra_elements:
        _append_opaque(el, opaque)


def _fill(el: etree._Element, obj: RegistryObject) -> etree._Element:
    if isinstance(obj, DocumentEntry):
        if obj.mime_type:
            el.set("mimeType", obj.mime_type)
        _set(el, "isOpaque", obj.is_opaque)
    elif isinstance(obj, Association):
        el.set("associationType", obj.association_type)
        el.set("sourceObject", obj.source_object)
        el.set("targetObject", obj.target_object)
    if isinstance(obj, Classification):
        _write_classification(el, obj, None)
        return el
    if isinstance(obj, ExternalIdentifier):
        _write_external_identifier(el, obj, None)
        return el
    _write_registry_object(el, obj)
    _append_extra_elements(el, obj)
    return el


def _tag_of(obj: RegistryObject) -> str:
    if isinstance(obj, DocumentEntry):
        return _q(ns.RIM, "ExtrinsicObject")
    if isinstance(obj, RegistryPackage):
        return _q(ns.RIM, "RegistryPackage")
    if isinstance(obj, Association):
        return _q(ns.RIM, "Association")
    if isinstance(obj, Classification):
        return _q(ns.RIM, "Classification")
    if isinstance(obj, ExternalIdentifier):
        return _q(ns.RIM, "ExternalIdentifier")
    raise TypeError(f"cannot serialize {type(obj).__name__} as an ebRIM object")


def registry_object(obj: RegistryObject) -> etree._Element:
    """``rim:ExtrinsicObject`` / ``rim:RegistryPackage`` / ``rim:Association`` / ``rim:Classification`` /
    ``rim:ExternalIdentifier`` for ``obj`` (rim 3.0, children in schema order)."""
    return _fill(etree.Element(_tag_of(obj), nsmap=_RIM_NSMAP), obj)


def _append_object(parent: etree._Element, obj: RegistryObject) -> None:
    _fill(_SubElement(parent, _tag_of(obj)), obj)


def _append_object_ref(parent: etree._Element, ref: ObjectRef) -> None:
    el = _SubElement(parent, _q(ns.RIM, "ObjectRef"), id=ref.id)
    _set(el, "home", ref.home)
    for key, value in ref.extra_attributes.items():
        el.set(key, value)
    for s in ref.slots:
        _append_slot(el, s)
    _append_extra_elements(el, ref)


def object_ref(id: str, home: str | None = None) -> etree._Element:
    """``rim:ObjectRef@id[@home]`` (ObjectRef query results; references to objects not in a message)."""
    el = etree.Element(_q(ns.RIM, "ObjectRef"), nsmap=_RIM_NSMAP)
    el.set("id", id)
    _set(el, "home", home)
    return el


def registry_object_list(objects: Iterable[RegistryObject], refs: Iterable[ObjectRef] = ()) -> etree._Element:
    """A ``rim:RegistryObjectList`` holding ``refs`` then ``objects``."""
    el = etree.Element(_q(ns.RIM, "RegistryObjectList"), nsmap=_RIM_NSMAP)
    for ref in refs:
        _append_object_ref(el, ref)
    for obj in objects:
        _append_object(el, obj)
    return el


def _fill_submission(request: etree._Element, submission: Submission) -> None:
    for key, value in submission.request_attributes.items():
        request.set(key, value)
    if submission.request_slots:
        slot_list = _SubElement(request, _q(ns.RS, "RequestSlotList"))
        for s in submission.request_slots:
            _append_slot(slot_list, s)
    object_list = _SubElement(request, _q(ns.RIM, "RegistryObjectList"))
    for ref in submission.object_refs:
        _append_object_ref(object_list, ref)
    for obj in submission.all_objects():
        _append_object(object_list, obj)
    for obj in (*submission.classifications, *submission.external_identifiers):
        _append_object(object_list, obj)
    for opaque in submission.unknown_objects:
        _append_opaque(object_list, opaque)


def submit_objects_request(submission: Submission) -> etree._Element:
    """``lcm:SubmitObjectsRequest`` (ITI-42 / ITI-57 body; inside ITI-41).

    Order in the RegistryObjectList: ObjectRefs, SubmissionSet(s), DocumentEntries,
    Folders, Associations, unattached Classifications/ExternalIdentifiers, unknown objects.
    """
    request = etree.Element(_q(ns.LCM, "SubmitObjectsRequest"), nsmap=_SUBMIT_NSMAP)
    _fill_submission(request, submission)
    return request


def provide_and_register_request(submission: Submission, documents: list[tuple[str, str]]) -> etree._Element:
    """``xdsb:ProvideAndRegisterDocumentSetRequest`` (ITI-41 / RAD-68) for MTOM.

    ``documents`` are ``(DocumentEntry id, Content-ID)`` pairs; each becomes
    ``<xdsb:Document id="..."><xop:Include href="cid:<Content-ID>"/></xdsb:Document>``
    (the Content-ID as in the MIME header; angle brackets are dropped, the rest is
    percent-encoded by :func:`xds_core.soap.mtom.cid_href`, RFC 2392).
    """
    root = etree.Element(_q(ns.XDSB, "ProvideAndRegisterDocumentSetRequest"), nsmap=_PNR_NSMAP)
    _fill_submission(_SubElement(root, _q(ns.LCM, "SubmitObjectsRequest")), submission)
    for document_id, content_id in documents:
        document = _SubElement(root, _q(ns.XDSB, "Document"), id=document_id)
        content_id = content_id.strip().removeprefix("<").removesuffix(">")
        _SubElement(document, _q(ns.XOP, "Include"), href=cid_href(content_id))
    return root


def adhoc_query_request(query_id: str, parameters: list[tuple[str, list[str]]], *,
                        return_type: str = ReturnType.LeafClass, home_community_id: str | None = None,
                        return_composed_objects: bool = True) -> etree._Element:
    """``query:AdhocQueryRequest`` (ITI-18 / ITI-51).

    ``parameters`` are written one ``rim:Slot`` each, in order, values exactly as
    given -- the caller quotes them (``"'ID^^^&1.2&ISO'"``, ``"('a','b')"``,
    ``"20200101"``; ITI TF-2a 3.18.4.1.2.3.5).
    """
    root = etree.Element(_q(ns.QUERY, "AdhocQueryRequest"), nsmap=_QUERY_NSMAP)
    _SubElement(root, _q(ns.QUERY, "ResponseOption"), returnType=str(return_type),
                returnComposedObjects="true" if return_composed_objects else "false")
    query = _SubElement(root, _q(ns.RIM, "AdhocQuery"), id=query_id)
    _set(query, "home", home_community_id)
    for name, values in parameters:
        _append_slot(query, Slot(name, list(values)))
    return root


def _append_document_request(parent: etree._Element, request: DocumentRequest) -> None:
    el = _SubElement(parent, _q(ns.XDSB, "DocumentRequest"))
    if request.home_community_id:
        _SubElement(el, _q(ns.XDSB, "HomeCommunityId")).text = request.home_community_id
    _SubElement(el, _q(ns.XDSB, "RepositoryUniqueId")).text = request.repository_unique_id
    _SubElement(el, _q(ns.XDSB, "DocumentUniqueId")).text = request.document_unique_id


def retrieve_document_set_request(requests: list[DocumentRequest]) -> etree._Element:
    """``xdsb:RetrieveDocumentSetRequest`` (ITI-43)."""
    root = etree.Element(_q(ns.XDSB, "RetrieveDocumentSetRequest"), nsmap=_XDSB_NSMAP)
    for request in requests:
        _append_document_request(root, request)
    return root


def retrieve_imaging_document_set_request(request: RetrieveImagingDocumentSetRequest) -> etree._Element:
    """``iherad:RetrieveImagingDocumentSetRequest`` (RAD-69): StudyRequest/SeriesRequest/
    TransferSyntaxUIDList in ``urn:ihe:rad:xdsi-b:2009``, DocumentRequest in xdsb (RAD TF-3 4.69)."""
    root = etree.Element(_q(ns.XDSI, "RetrieveImagingDocumentSetRequest"), nsmap=_XDSI_NSMAP)
    for study in request.studies:
        study_el = _SubElement(root, _q(ns.XDSI, "StudyRequest"), studyInstanceUID=study.study_instance_uid)
        for series in study.series:
            series_el = _SubElement(study_el, _q(ns.XDSI, "SeriesRequest"),
                                    seriesInstanceUID=series.series_instance_uid)
            for document in series.documents:
                _append_document_request(series_el, document)
    syntaxes = _SubElement(root, _q(ns.XDSI, "TransferSyntaxUIDList"))
    for uid in request.transfer_syntax_uids:
        _SubElement(syntaxes, _q(ns.XDSI, "TransferSyntaxUID")).text = uid
    return root


# --- the stored fragment as text (registration hot path) ------------------------------------------

_RIM_DECL = f' xmlns:rim="{ns.RIM}"'
#: The one-scan checks of :mod:`xds_core.xml_text`, bound here: the common case (nothing to escape) costs
#: one regex scan and no further call.
_attr_special = xml_text.ATTRIBUTE_SPECIAL.search
_text_special = xml_text.TEXT_SPECIAL.search


class _NeedsLxml(Exception):
    """The object has parts the text writer does not handle; use the lxml serializer."""


def _attr(value: str) -> str:
    # libxml2's attribute escaping (what lxml writes), xml_text.escape_attribute.
    if not isinstance(value, str):
        raise _NeedsLxml
    if type(value) is not str:  # a vocabulary StrEnum member: its plain value
        value = str.__str__(value)
    if _attr_special(value) is None:
        return value
    try:
        return xml_text.escape_attribute(value)
    except xml_text.NotXmlCharacter:  # the lxml path raises for it, as registry_object() would
        raise _NeedsLxml from None


def _text(value: str) -> str:
    # libxml2's text escaping, xml_text.escape_text.
    if not isinstance(value, str):
        raise _NeedsLxml
    if type(value) is not str:
        value = str.__str__(value)
    if _text_special(value) is None:
        return value
    try:
        return xml_text.escape_text(value)
    except xml_text.NotXmlCharacter:
        raise _NeedsLxml from None


def _attrs_text(pairs: list[tuple[str, str | None]]) -> str:
    return "".join(f' {k}="{_attr(v)}"' for k, v in pairs if v is not None)


def _required(*values: str | None) -> None:
    # lxml refuses a None attribute value: let it raise exactly as registry_object() would.
    if any(v is None for v in values):
        raise _NeedsLxml


def _slots_text(slots: list[Slot]) -> str:
    out = []
    for s in slots:
        head = f'<rim:Slot name="{_attr(s.name)}"' + (f' slotType="{_attr(s.slot_type)}"' if s.slot_type is not None
                                                     else "")
        if s.values:
            values = "".join("<rim:Value/>" if v is None else f"<rim:Value>{_text(v)}</rim:Value>"
                             for v in s.values)
            out.append(f"{head}><rim:ValueList>{values}</rim:ValueList></rim:Slot>")
        else:
            out.append(f"{head}><rim:ValueList/></rim:Slot>")
    return "".join(out)


def _international_text(local: str, text: InternationalString) -> str:
    strings = "".join(
        "<rim:LocalizedString" + (f' xml:lang="{_attr(s.lang)}"' if s.lang is not None else "")
        + (f' charset="{_attr(s.charset)}"' if s.charset is not None else "") + f' value="{_attr(s.value)}"/>'
        for s in text.strings)
    return f"<rim:{local}>{strings}</rim:{local}>"


def _object_text(tag: str, decl: str, own: list[tuple[str, str | None]], obj: RegistryObject, obj_id: str) -> str:
    """Same bytes as ``_write_registry_object`` + lxml's serializer (checked by the tests)."""
    if obj.extra_attributes or obj.extra_elements:
        raise _NeedsLxml
    attributes = _attrs_text([*own, ("id", obj_id), ("home", obj.home), ("lid", obj.lid),
                              ("objectType", obj.object_type), ("status", obj.status)])
    children = [_slots_text(obj.slots)]
    if obj.name.strings:
        children.append(_international_text("Name", obj.name))
    if obj.description.strings:
        children.append(_international_text("Description", obj.description))
    if obj.version_name is not None or obj.version_comment is not None:
        children.append("<rim:VersionInfo" + _attrs_text([("versionName", obj.version_name),
                                                          ("comment", obj.version_comment)]) + "/>")
    for c in obj.classifications:
        c_id = c.id or new_id()
        children.append(_object_text("Classification", "", [
            ("classificationScheme", c.classification_scheme), ("classifiedObject", c.classified_object or obj_id),
            ("classificationNode", c.classification_node), ("nodeRepresentation", c.node_representation)], c, c_id))
    for e in obj.external_identifiers:
        _required(e.identification_scheme, e.value)
        e_id = e.id or new_id()
        children.append(_object_text("ExternalIdentifier", "", [
            ("registryObject", e.registry_object or obj_id), ("identificationScheme", e.identification_scheme),
            ("value", e.value)], e, e_id))
    body = "".join(children)
    if not body:
        return f"<rim:{tag}{decl}{attributes}/>"
    return f"<rim:{tag}{decl}{attributes}>{body}</rim:{tag}>"


def registry_object_xml(obj: RegistryObject) -> str:
    """``to_bytes(registry_object(obj), xml_declaration=False)`` as text, written without lxml.

    The registry stores this fragment for every object it registers; building an lxml tree only to
    serialize it again cost more than the rest of the registration's Python work.  Objects with
    unmodelled content (extra attributes / elements) or characters XML forbids go through lxml.
    """
    try:
        if isinstance(obj, DocumentEntry):
            own = [("mimeType", obj.mime_type or None), ("isOpaque", obj.is_opaque)]
            return _object_text("ExtrinsicObject", _RIM_DECL, own, obj, obj.id)
        if isinstance(obj, RegistryPackage):
            return _object_text("RegistryPackage", _RIM_DECL, [], obj, obj.id)
        if isinstance(obj, Association):
            _required(obj.association_type, obj.source_object, obj.target_object)
            own = [("associationType", obj.association_type), ("sourceObject", obj.source_object),
                   ("targetObject", obj.target_object)]
            return _object_text("Association", _RIM_DECL, own, obj, obj.id)
    except _NeedsLxml:
        pass
    from xds_core.safe_xml import to_bytes

    return to_bytes(registry_object(obj), xml_declaration=False).decode("utf-8")
