"""The hardened parser refuses DTDs, entities, oversized and over-deep input."""

from __future__ import annotations

import threading

import pytest
from lxml import etree

from xds_core.safe_xml import MAX_DEPTH, XmlParseError, markup_count, parse_xml, to_bytes


def test_parses_well_formed_xml_with_namespaces() -> None:
    root = parse_xml(b"<?xml version='1.0' encoding='UTF-8'?><a:x xmlns:a='urn:a'><a:y>v\xc3\xa9</a:y></a:x>")
    assert root.tag == "{urn:a}x"
    assert root[0].text == "vé"


def test_to_bytes_round_trips_utf8_with_declaration() -> None:
    root = parse_xml("<x>é</x>".encode())
    data = to_bytes(root)
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert "é".encode() in data
    assert to_bytes(root, xml_declaration=False) == "<x>é</x>".encode()
    assert parse_xml(data).text == "é"


@pytest.mark.parametrize("document", [
    b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>",
    b"<!DOCTYPE x SYSTEM 'http://127.0.0.1:9/evil.dtd'><x/>",
    b"<!DOCTYPE x [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
    b"<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'>]><x>&c;</x>",
    b"<!DOCTYPE x><x/>",
    b"<!DOCTYPE x [<!ENTITY % p SYSTEM 'http://127.0.0.1:9/p.dtd'> %p;]><x/>",
], ids=["xxe-file", "external-dtd", "billion-laughs", "bare-doctype", "parameter-entity"])
def test_refuses_any_doctype(document: bytes) -> None:
    with pytest.raises(XmlParseError):
        parse_xml(document)


def test_undeclared_entity_is_malformed() -> None:
    with pytest.raises(XmlParseError, match="malformed"):
        parse_xml(b"<x>&e;</x>")


def test_depth_limit() -> None:
    ok = MAX_DEPTH - 6
    assert parse_xml(b"<a>" * ok + b"</a>" * ok).tag == "a"
    deep = MAX_DEPTH + 1
    with pytest.raises(XmlParseError, match="depth"):
        parse_xml(b"<a>" * deep + b"</a>" * deep)


def test_size_limit() -> None:
    document = b"<x>" + b"a" * 1000 + b"</x>"
    assert parse_xml(document, max_size=len(document)).tag == "x"
    with pytest.raises(XmlParseError, match="exceeds"):
        parse_xml(document, max_size=len(document) - 1)


def test_invalid_utf8_is_refused() -> None:
    with pytest.raises(XmlParseError):
        parse_xml(b"<x>\xff\xfe\xc3</x>")


def test_empty_and_not_xml_are_refused() -> None:
    with pytest.raises(XmlParseError):
        parse_xml(b"")
    with pytest.raises(XmlParseError):
        parse_xml(b"{\"json\": true}")


def test_huge_text_node_is_refused() -> None:
    # huge_tree is off: a single text node above libxml2's 10 MB limit fails.
    with pytest.raises(XmlParseError):
        parse_xml(b"<x>" + b"a" * (11 * 1024 * 1024) + b"</x>", max_size=64 * 1024 * 1024)


def test_parsers_are_independent_between_threads() -> None:
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(200):
                assert parse_xml(f"<x n='{i}'/>".encode()).get("n") == str(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_result_is_an_lxml_element() -> None:
    assert isinstance(parse_xml(b"<x/>"), etree._Element)


# ----------------------------------------------------------------------------- markup limit (issue 15)


def test_markup_count_bounds_elements_and_attributes_from_above() -> None:
    document = b"<r xmlns='urn:r' a='1'><e b='2' c='3'/><e>text</e><!-- c --></r>"
    tree = parse_xml(document)
    elements = sum(1 for _ in tree.iter())
    attributes = sum(len(element.attrib) for element in tree.iter()) + 1  # + the namespace declaration
    assert markup_count(document) >= elements + attributes
    assert markup_count(b"<a/>" * 10) == 10
    assert markup_count(bytearray(b"<a x='1' y='2'/>")) == 3


def test_dense_markup_is_refused_before_any_tree_is_built() -> None:
    dense = b"<r>" + b"<a/>" * 100_000 + b"</r>"
    with pytest.raises(XmlParseError, match="more than 50000 elements and attributes"):
        parse_xml(dense, max_nodes=50_000)
    wide = b"<r " + b" ".join(f"a{i}=''".encode() for i in range(60_000)) + b"/>"
    with pytest.raises(XmlParseError, match="elements and attributes"):
        parse_xml(wide, max_nodes=50_000)
    assert len(parse_xml(dense, max_nodes=200_000)) == 100_000
    assert len(parse_xml(dense)) == 100_000  # not counted unless asked (trusted or already counted input)


def test_a_document_shorter_than_the_limit_is_not_counted_and_passes() -> None:
    assert parse_xml(b"<r><a/><b/></r>", max_nodes=16).tag == "r"
    with pytest.raises(XmlParseError):
        parse_xml(b"<r>" + b"<a/>" * 10 + b"</r>", max_nodes=9)
