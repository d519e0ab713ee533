"""The stored ebRIM fragment of a registry object (``xml`` column, models.py "Stored XML") and its edits.

A LeafClass answer is the concatenation of the fragments stored at registration, so every
registry-owned value the registry changes later is rewritten in the fragment, in the same
transaction as the column: the availabilityStatus of a deprecated DocumentEntry (ITI TF-3
4.2.2.2.3), a Folder's lastUpdateTime when a member is added (ITI TF-3 4.2.3.4.4), the patientId of
the objects of a merged-away patient (ITI-8 merge, ITI TF-2a 3.8.4.1.3).  The fragments are this
registry's own serialization, so the edits are textual; those applied by one bulk ``UPDATE`` are
SQL expressions over the ``xml`` column.
"""

from __future__ import annotations

import re

from django.db.models import F, Value
from django.db.models.functions import Replace

from xds_core.ebxml.serialize import registry_object_xml
from xds_core.metadata.objects import RegistryObject
from xds_core.xml_text import escape_attribute


def stored_fragment(obj: RegistryObject) -> str:
    """The fragment stored for ``obj`` at registration (same text as lxml's serialization, built directly)."""
    return registry_object_xml(obj)


def status_replaced_in_xml(old: str, new: str) -> Replace:
    """SQL expression: the stored fragment with availabilityStatus ``old`` changed to ``new``."""
    return Replace(F("xml"), Value(f'status="{old}"'), Value(f'status="{new}"'))


def patient_id_replaced_in_xml(old: str, new: str) -> Replace:
    """SQL expression: the stored fragment with the patientId ExternalIdentifier value ``old`` changed
    to ``new`` (the CX is attribute text there, so it is matched escaped exactly as it was written)."""
    old_xml, new_xml = escape_attribute(old), escape_attribute(new)
    return Replace(F("xml"), Value(f'value="{old_xml}"'), Value(f'value="{new_xml}"'))


_LUT_RE = r'(<(?:\w+:)?Slot\s+name="lastUpdateTime"[^>]*>\s*<(?:\w+:)?ValueList[^>]*>\s*<(?:\w+:)?Value>)[^<]*(<)'


def set_last_update_time_in_xml(xml: str, value: str) -> str:
    """Rewrite (or add) the lastUpdateTime slot of a stored Folder fragment."""
    new, n = re.subn(_LUT_RE, lambda mt: f"{mt.group(1)}{value}{mt.group(2)}", xml, count=1)
    if n:
        return new
    # No slot yet (cannot happen for folders stored by this registry): insert one as first child.
    match = re.match(r"^(<(\w+:)?RegistryPackage\b[^>]*?)(/?)>", xml)
    if not match:
        return xml
    prefix = match.group(2) or ""
    slot = (f'<{prefix}Slot name="lastUpdateTime"><{prefix}ValueList><{prefix}Value>{value}</{prefix}Value>'
            f"</{prefix}ValueList></{prefix}Slot>")
    if match.group(3):
        return f"{match.group(1)}>{slot}</{prefix}RegistryPackage>{xml[match.end():]}"
    return f"{match.group(1)}>{slot}{xml[match.end():]}"
