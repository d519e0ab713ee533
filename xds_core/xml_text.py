"""Text-level XML writing: escaping element text and attribute values the way libxml2 (lxml) does.

The hot paths that write XML as text instead of building lxml trees -- stored ebRIM fragments
(:mod:`xds_core.ebxml.serialize`, ITI-42) and RAD-69 / ITI-43 DocumentResponses
(:mod:`xds_core.ebxml.responses`) -- escape through here, so their output is what lxml would write:

* XML 1.0 §2.4: ``&`` and ``<`` are escaped in character data, and ``>`` too (libxml2 does, and
  ``]]>`` then cannot occur); a CR is written ``&#13;`` so that end-of-line handling (§2.11) keeps it;
* XML 1.0 §3.3.3: in a (double-quoted) attribute value also ``"``, and TAB, LF, CR as character
  references, which attribute-value normalization would otherwise turn into spaces;
* XML 1.0 §2.2 (Char): C0 controls other than TAB/LF/CR, lone surrogates, U+FFFE and U+FFFF cannot
  be written at all: :class:`NotXmlCharacter`.

The common case -- nothing to escape -- costs one regex scan (``*_SPECIAL.search``); callers on a hot
path may run that scan themselves and call the escaping function only when it finds something.
"""

from __future__ import annotations

import re

#: Characters XML 1.0 §2.2 does not allow in a document (lxml refuses them).
FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
#: Characters that need attention in a double-quoted attribute value (special or forbidden).
ATTRIBUTE_SPECIAL = re.compile('[&<>"\n\r\t\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]')
#: Characters that need attention in element text (special or forbidden).
TEXT_SPECIAL = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class NotXmlCharacter(ValueError):
    """The value holds a character XML 1.0 cannot carry (§2.2)."""


def escape_attribute(value: str) -> str:
    """``value`` for a double-quoted attribute: ``& < > "`` and TAB, LF, CR escaped (libxml2's choice)."""
    if ATTRIBUTE_SPECIAL.search(value) is None:
        return value
    if FORBIDDEN.search(value):
        raise NotXmlCharacter(f"{value!r} holds a character XML 1.0 does not allow")
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
            .replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;"))


def escape_text(value: str) -> str:
    """``value`` as element text: ``& < >`` and CR escaped (libxml2's choice)."""
    if TEXT_SPECIAL.search(value) is None:
        return value
    if FORBIDDEN.search(value):
        raise NotXmlCharacter(f"{value!r} holds a character XML 1.0 does not allow")
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
