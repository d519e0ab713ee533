"""Text-level XML escaping (xds_core.xml_text) writes what lxml writes, and refuses what XML cannot carry."""

from __future__ import annotations

import pytest
from lxml import etree

from xds_core.xml_text import NotXmlCharacter, escape_attribute, escape_text

TRICKY = [
    "", "plain 1.2.3", "a&b", "<tag>", "x > y", 'say "hi"', "it's", "]]>", "&amp; already escaped",
    "line\nbreak", "cr\rlf\r\n", "tab\there", "  spaced  ", "caf\u00e9 \u00fcml", "\u2028\u0085 unicode breaks",
    "emoji \U0001f600", "P1^^^&1.2.3&ISO", "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1",
]
FORBIDDEN = ["\x00", "a\x01b", "\x08", "\x0b", "\x0c", "\x1f", "\ufffe", "\uffff", "x\ud800y"]


@pytest.mark.parametrize("value", TRICKY)
def test_escaping_matches_lxml_for_attributes_and_text(value: str) -> None:
    element = etree.Element("e", a=value)
    element.text = value
    assert f'<e a="{escape_attribute(value)}">{escape_text(value)}</e>'.encode() == etree.tostring(
        element, encoding="utf-8").removeprefix(b"<?xml version='1.0' encoding='utf-8'?>\n")


@pytest.mark.parametrize("value", TRICKY)
def test_escaped_values_parse_back_to_the_original(value: str) -> None:
    parsed = etree.fromstring(f'<e a="{escape_attribute(value)}">{escape_text(value)}</e>'.encode())
    assert parsed.get("a") == value
    assert (parsed.text or "") == value


@pytest.mark.parametrize("value", FORBIDDEN)
def test_characters_xml_cannot_carry_are_refused_not_written(value: str) -> None:
    with pytest.raises(NotXmlCharacter):
        escape_attribute(value)
    with pytest.raises(NotXmlCharacter):
        escape_text(value)


def test_a_value_with_nothing_to_escape_is_returned_as_is() -> None:
    value = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
    assert escape_attribute(value) is value and escape_text(value) is value
