"""Helpers to build ITI-42 submissions from the NIST samples in tests/fixtures/registry.

The fixtures are NIST toolkit testkit metadata (11990 single_doc, 11991 two_doc, 11992 rplc,
11993 apnd, 11994 xfrm, 11995 xfrm_rplc, 11999 empty folder, 12000 folder with doc, 12001
add_to_folder) converted once to ebRIM 3.0 (``lcm:SubmitObjectsRequest``) with the patient id
replaced by ``$patientid$``.  As the toolkit does, every uniqueId is replaced by a fresh OID per
use and ``$name$`` placeholders (``$rplc_doc_uuid$`` ...) are substituted.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from pathlib import Path
from xml.sax.saxutils import escape

from xds_core import ns
from xds_core.ebxml.parse import parse_submit_objects_request
from xds_core.metadata.objects import Submission
from xds_core.safe_xml import parse_xml, to_bytes
from xds_core.vocabulary import IdentificationScheme
from xds_registry.patient_identity_feed.patients import add_or_update_patient

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "registry"
AUTHORITY = "1.3.6.1.4.1.21367.2005.13.20.1000"
UNIQUE_ID_SCHEMES = {IdentificationScheme.DocumentEntry_uniqueId.value,
                     IdentificationScheme.SubmissionSet_uniqueId.value,
                     IdentificationScheme.Folder_uniqueId.value}
_counter = itertools.count(1)
_run = f"{int(time.time())}.{os.getpid()}"


def new_oid() -> str:
    return f"1.2.42.{_run}.{next(_counter)}"


def new_patient_id(authority: str = AUTHORITY) -> str:
    return f"P{uuid.uuid4().hex[:12]}^^^&{authority}&ISO"


def fed_patient(authority: str = AUTHORITY) -> str:
    """A fresh patient id, registered as if received by the identity feed."""
    pid = new_patient_id(authority)
    add_or_update_patient(pid)
    return pid


def submission_bytes(name: str, patient_id: str, *, keep_unique_ids: dict[str, str] | None = None,
                     **placeholders: str) -> tuple[bytes, dict[str, str]]:
    """The fixture ``name`` prepared for one submission: (SubmitObjectsRequest bytes, object id -> uniqueId).

    ``keep_unique_ids`` maps object id -> uniqueId to use instead of a fresh one.
    """
    text = (FIXTURES / name).read_text("utf-8")
    for key, value in {"patientid": patient_id, **placeholders}.items():
        text = text.replace(f"${key}$", escape(value, {'"': "&quot;"}))
    root = parse_xml(text.encode("utf-8"))
    uids: dict[str, str] = {}
    for ext in root.iter(ns.q(ns.RIM, "ExternalIdentifier")):
        if ext.get("identificationScheme") in UNIQUE_ID_SCHEMES:
            owner = ext.get("registryObject") or ext.getparent().get("id")
            value = (keep_unique_ids or {}).get(owner) or new_oid()
            ext.set("value", value)
            uids[owner] = value
    return to_bytes(root), uids


def load_submission(name: str, patient_id: str, *, keep_unique_ids: dict[str, str] | None = None,
                    **placeholders: str) -> tuple[Submission, dict[str, str]]:
    data, uids = submission_bytes(name, patient_id, keep_unique_ids=keep_unique_ids, **placeholders)
    return parse_submit_objects_request(parse_xml(data)), uids


#: CodeType name of each coded-attribute classification scheme (codes.xml).
_CODE_TYPES = {
    "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a": "classCode",
    "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983": "typeCode",
    "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d": "formatCode",
    "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1": "healthcareFacilityTypeCode",
    "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead": "practiceSettingCode",
    "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f": "confidentialityCode",
    "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4": "eventCodeList",
    "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500": "contentTypeCode",
    "urn:uuid:1ba97051-7806-41a8-a48b-8fce7af683c5": "folderCodeList",
}


def conform_codes(submission: Submission, domain) -> None:
    """Replace codes outside ``domain`` by the first code of its value set, as the NIST toolkit's
    code updater does before sending testkit metadata to a registry with its own codes.xml."""
    for obj in submission.all_objects():
        for c in obj.classifications:
            code_type = _CODE_TYPES.get(c.classification_scheme or "")
            if not code_type or not domain.constrains(code_type):
                continue
            scheme = c.slot_value("codingScheme") or ""
            if not domain.accepts_code(code_type, c.node_representation or "", scheme):
                entry = domain.value_sets[code_type][0]
                c.node_representation = entry.code
                c.set_slot("codingScheme", [entry.scheme])
    for de in submission.document_entries:
        if domain.constrains("mimeType") and not domain.accepts_code("mimeType", de.mime_type):
            de.mime_type = domain.value_sets["mimeType"][0].code
