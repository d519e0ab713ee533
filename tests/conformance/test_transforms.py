"""Request preparation: placeholders, id assignment, ebRIM 2.1 -> 3.0 (conformance README §2)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from lxml import etree

from conformance import transforms
from conformance.manifest import load_manifest
from conformance.xmlutil import descendants, local, parse
from xds_core import ns
from xds_core.ebxml.schema import validate
from xds_core.vocabulary import AssociationType, AvailabilityStatus, IdentificationScheme, ObjectType

PLACEHOLDER = re.compile(r"\$[A-Za-z_][A-Za-z0-9_.]*\$?")

RIM21_SUBMISSION = b"""<rs:SubmitObjectsRequest xmlns:rs="urn:oasis:names:tc:ebxml-regrep:registry:xsd:2.1">
 <rim:LeafRegistryObjectList xmlns:rim="urn:oasis:names:tc:ebxml-regrep:rim:xsd:2.1">
  <rim:ObjectRef id="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b518fff"/>
  <rim:ExtrinsicObject id="Document01" mimeType="text/plain" majorVersion="1"
        objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">
   <rim:Name><rim:LocalizedString lang="en-us" value="Doc"/></rim:Name>
   <rim:Slot name="creationTime"><rim:ValueList><rim:Value>20041224</rim:Value></rim:ValueList></rim:Slot>
   <rim:ExternalIdentifier value="$patientid$" identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427">
    <rim:Name><rim:LocalizedString value="XDSDocumentEntry.patientId"/></rim:Name>
   </rim:ExternalIdentifier>
   <rim:ExternalIdentifier value="Document01" identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"/>
   <rim:Classification classifiedObject="Document01" nodeRepresentation="N"
        classificationScheme="urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f">
    <rim:Slot name="codingScheme">
     <rim:ValueList><rim:Value>2.16.840.1.113883.5.25</rim:Value></rim:ValueList></rim:Slot>
   </rim:Classification>
  </rim:ExtrinsicObject>
  <rim:RegistryPackage id="SubmissionSet01" status="Approved">
   <rim:Slot name="submissionTime"><rim:ValueList><rim:Value>20041225235050</rim:Value></rim:ValueList></rim:Slot>
   <rim:ExternalIdentifier value="SubmissionSet01"
        identificationScheme="urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"/>
   <rim:ExternalIdentifier value="1.1.1" identificationScheme="urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"/>
   <rim:ExternalIdentifier value="$patientid$" identificationScheme="urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"/>
  </rim:RegistryPackage>
  <rim:Classification classifiedObject="SubmissionSet01"
        classificationNode="urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"/>
  <rim:Association sourceObject="SubmissionSet01" targetObject="Document01" associationType="HasMember"/>
  <rim:Association sourceObject="Document01" targetObject="$old$" associationType="RPLC"/>
 </rim:LeafRegistryObjectList>
</rs:SubmitObjectsRequest>"""


def _prepared(uuids: bool = False) -> tuple[etree._Element, dict[str, str], dict[str, str]]:
    root = parse(RIM21_SUBMISSION)
    transforms.substitute_tree(root, {"$patientid$": "ignored",
                                      "$old$": "urn:uuid:11111111-2222-3333-4444-555555555555"})
    request = transforms.to_rim30(root)
    transforms.assign_patient(request, "PX^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO")
    counter = itertools.count(1)
    uids = transforms.allocate_unique_ids(request, lambda: f"1.2.3.{next(counter)}")
    transforms.set_source_id(request, "1.9.9")
    uuid_map = transforms.assign_uuids(request) if uuids else {}
    transforms.complete_ids(request)
    return request, uids, uuid_map


def test_longest_placeholder_is_replaced_first_and_never_twice() -> None:
    mapping = {"$doc1": "urn:uuid:a", "$doc1sub": "urn:uuid:b", "$x": "$doc1"}
    assert transforms.substitute_string("$doc1sub $doc1 $x", mapping) == "urn:uuid:b urn:uuid:a $doc1"


def test_substitution_reaches_text_and_attributes_but_not_tags() -> None:
    root = parse(b"<a v='$p$' w='x$q$y'><b>'$p$'</b></a>")
    transforms.substitute_tree(root, {"$p$": "P", "$q$": "Q"})
    assert root.get("v") == "P" and root.get("w") == "xQy" and root[0].text == "'P'"


def test_ebrim21_becomes_a_schema_valid_lcm_request() -> None:
    request, _uids, _uuids = _prepared()
    assert request.tag == ns.q(ns.LCM, "SubmitObjectsRequest")
    assert validate(request) == []
    objects = list(request[0])
    assert [local(o) for o in objects] == ["ExtrinsicObject", "RegistryPackage", "Classification",
                                           "Association", "Association"]  # ObjectRef dropped
    assert all(o.tag.startswith("{" + ns.RIM + "}") for o in request[0].iter())
    document = objects[0]
    assert [local(c) for c in document] == ["Slot", "Name", "Classification", "ExternalIdentifier",
                                            "ExternalIdentifier"]
    assert document.get("majorVersion") is None
    localized = next(descendants(document, "LocalizedString"))
    assert localized.get(ns.q(ns.XML, "lang")) == "en-us"
    assert objects[1].get("status") == AvailabilityStatus.APPROVED
    assert objects[1].get("objectType") == ObjectType.REGISTRY_PACKAGE
    assert objects[3].get("associationType") == AssociationType.HasMember
    assert objects[4].get("associationType") == AssociationType.RPLC
    assert objects[3].get("objectType") == ObjectType.ASSOCIATION


def test_ids_and_registry_object_are_completed() -> None:
    request, _uids, _uuids = _prepared()
    for element in request.iter():
        if local(element) in ("Association", "Classification", "ExternalIdentifier"):
            assert element.get("id"), etree.tostring(element)
    ids = [e.get("id") for e in request.iter() if e.get("id")]
    assert len(ids) == len(set(ids))
    for identifier in descendants(request, "ExternalIdentifier"):
        assert identifier.get("registryObject") == identifier.getparent().get("id")


def test_patient_unique_id_and_source_id_assignment() -> None:
    request, uids, _uuids = _prepared()
    values = {e.get("identificationScheme"): e.get("value") for e in descendants(request, "ExternalIdentifier")}
    assert values[IdentificationScheme.DocumentEntry_patientId] == "PX^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
    assert values[IdentificationScheme.SubmissionSet_patientId] == "PX^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
    assert values[IdentificationScheme.SubmissionSet_sourceId] == "1.9.9"
    assert uids == {"Document01": values[IdentificationScheme.DocumentEntry_uniqueId],
                    "SubmissionSet01": values[IdentificationScheme.SubmissionSet_uniqueId]}
    assert set(uids.values()) == {"1.2.3.1", "1.2.3.2"}


def test_unique_id_exclusions_keep_the_file_value() -> None:
    root = transforms.to_rim30(parse(RIM21_SUBMISSION))
    uids = transforms.allocate_unique_ids(root, lambda: "9.9", exclude_objects=["Document01"])
    assert uids == {"Document01": "Document01", "SubmissionSet01": "9.9"}
    root = transforms.to_rim30(parse(RIM21_SUBMISSION))
    uids = transforms.allocate_unique_ids(root, lambda: "9.9",
                                          exclude_schemes=[IdentificationScheme.DocumentEntry_uniqueId.value])
    assert uids["Document01"] == "Document01"


def test_assign_uuids_rewrites_every_reference_and_attachment_id() -> None:
    root = transforms.to_rim30(parse(RIM21_SUBMISSION))
    documents = ["Document01"]
    mapping = transforms.assign_uuids(root, documents)
    assert set(mapping) == {"Document01", "SubmissionSet01"}
    assert all(v.startswith("urn:uuid:") for v in mapping.values())
    assert documents == [mapping["Document01"]]
    referenced = {e.get(a) for e in root.iter() for a in transforms.REFERENCE_ATTRIBUTES if e.get(a)}
    assert "Document01" not in referenced and "SubmissionSet01" not in referenced
    assert mapping["Document01"] in referenced and mapping["SubmissionSet01"] in referenced
    assert "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1" not in mapping  # already a urn:uuid: kept


def test_provide_and_register_appends_xop_documents() -> None:
    request, _uids, uuid_map = _prepared(uuids=True)
    pnr = transforms.provide_and_register(request, [(uuid_map["Document01"], "doc1@runner")])
    document = pnr[-1]
    assert document.tag == ns.q(ns.XDSB, "Document") and document.get("id") == uuid_map["Document01"]
    assert document[0].tag == ns.q(ns.XOP, "Include") and document[0].get("href") == "cid:doc1@runner"


def test_unknown_root_is_refused() -> None:
    with pytest.raises(transforms.TransformError):
        transforms.to_rim30(parse(b"<html><body/></html>"))


def _submission_steps(corpus_dir: Path):
    manifest = load_manifest(corpus_dir / "manifest.yaml")
    return manifest, [s for s in manifest.steps.values() if s.transaction in ("ITI-42", "ITI-41", "RAD-68")]


def test_every_corpus_submission_converts_to_a_schema_valid_request(corpus_dir: Path) -> None:
    manifest, steps = _submission_steps(corpus_dir)
    assert len(steps) > 90
    counter = itertools.count(1)
    for step in steps:
        text = manifest.file(step.request["body"]).read_text(encoding="utf-8")
        root = parse(text.encode("utf-8"))
        transforms.substitute_tree(root, {p: "urn:uuid:00000000-0000-4000-8000-000000000000"
                                          for p in PLACEHOLDER.findall(text)})
        request = transforms.to_rim30(root)
        transforms.assign_patient(request, "P1^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO")
        transforms.allocate_unique_ids(request, lambda: f"1.2.42.{next(counter)}")
        if step.assign.get("uuids"):
            transforms.assign_uuids(request)
        transforms.complete_ids(request)
        assert validate(request) == [], step.id
