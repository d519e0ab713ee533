"""What the endpoints serve over ``?xsd=``: substitution groups spelled out as choices.

XML Schema 1.0 Part 1 §3.3.6: ``<element ref="H"/>`` also admits every element declared with
``substitutionGroup="H"`` (transitively).  SOAP stacks without substitution groups (zeep 4.3.3,
python-zeep #321) could not read ebRIM's ``rim:RegistryObjectList``; the served rim.xsd turns
each reference to a head into an ``xsd:choice`` of the head and its members.  These tests check
that rewrite against the published file, which stays untouched on disk.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from django.test import Client
from lxml import etree

from xds_core import ns
from xds_core.http.endpoint import SCHEMA_DIR, _expand_substitution_groups
from xds_core.ns import q
from xds_core.safe_xml import parse_xml

RIM_FILE = SCHEMA_DIR / "ebRS" / "rim.xsd"
XSD = ns.XSD


def _heads_and_members(schema: etree._Element) -> dict[str, set[str]]:
    """head local name -> every element (transitively) in its substitution group, from the schema text."""
    direct: dict[str, set[str]] = {}
    for element in schema.iterchildren(q(XSD, "element")):
        if head := element.get("substitutionGroup"):
            direct.setdefault(head.rpartition(":")[2], set()).add(element.get("name"))
    closed: dict[str, set[str]] = {}
    for head in direct:
        todo, seen = [head], set()
        while todo:
            for member in direct.get(todo.pop(), ()):
                if member not in seen:
                    seen.add(member)
                    todo.append(member)
        closed[head] = seen
    return closed


def test_served_rim_spells_out_the_identifiable_group_as_a_choice(client: Client) -> None:
    response = client.get("/xds/registry?xsd=ebRS/rim.xsd")
    assert response.status_code == 200
    served = parse_xml(response.content)
    groups = _heads_and_members(parse_xml(RIM_FILE.read_bytes()))
    assert {"ObjectRef", "ExtrinsicObject", "RegistryPackage", "Association", "Classification",
            "AdhocQuery"} <= groups["Identifiable"]  # AdhocQuery via rim:RegistryObject

    list_type = served.find(f"{q(XSD, 'complexType')}[@name='RegistryObjectListType']")
    [choice] = list_type.findall(f"{q(XSD, 'sequence')}/{q(XSD, 'choice')}")
    assert (choice.get("minOccurs"), choice.get("maxOccurs")) == ("0", "unbounded")
    refs = [element.get("ref") for element in choice]
    assert refs[0] == "tns:Identifiable"
    assert sorted(refs[1:]) == sorted(f"tns:{name}" for name in groups["Identifiable"])
    # No reference to a head is left anywhere in the served document.
    left = [e.get("ref") for e in served.iter(q(XSD, "element"))
            if e.get("ref") and e.getparent().tag != q(XSD, "choice")
            and e.get("ref").rpartition(":")[2] in groups]
    assert left == []


def _compiled(schema: etree._Element, tmp_path: Path, name: str) -> etree.XMLSchema:
    """The rim schema with its xml.xsd import pointing at the file on disk (nothing fetched)."""
    schema = copy.deepcopy(schema)
    for imported in schema.iter(q(XSD, "import")):
        imported.set("schemaLocation", (RIM_FILE.parent / imported.get("schemaLocation")).resolve().as_uri())
    path = tmp_path / name
    path.write_bytes(etree.tostring(schema))
    return etree.XMLSchema(etree.parse(str(path)))


RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"


def _object_list(*children: str) -> etree._Element:
    return etree.fromstring(f'<rim:RegistryObjectList xmlns:rim="{RIM}">{"".join(children)}</rim:RegistryObjectList>')


@pytest.mark.parametrize(("children", "valid"), [
    (['<rim:ExtrinsicObject id="urn:uuid:1" objectType="urn:x"/>', '<rim:ObjectRef id="urn:uuid:2"/>',
      '<rim:RegistryPackage id="urn:uuid:3"/>', '<rim:AdhocQuery id="urn:uuid:4"/>',
      '<rim:Identifiable id="urn:uuid:5"/>'], True),
    (['<rim:Slot name="x"><rim:ValueList/></rim:Slot>'], False),  # not in the group
    (['<rim:NotifyAction notificationOption="urn:x"/>'], False),  # another group's member
    (['<rim:ObjectRef/>'], False),  # a member, but without its required id
])
def test_expanded_rim_accepts_and_refuses_what_the_published_one_does(tmp_path: Path, children: list[str],
                                                                       valid: bool) -> None:
    published = parse_xml(RIM_FILE.read_bytes())
    expanded = copy.deepcopy(published)
    _expand_substitution_groups(expanded)
    assert etree.tostring(expanded) != etree.tostring(published)
    instance = _object_list(*children)
    for name, schema in (("published.xsd", published), ("expanded.xsd", expanded)):
        assert _compiled(schema, tmp_path, name).validate(instance) is valid, name
