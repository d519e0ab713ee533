"""Affinity-domain configuration (codes.xml): loading, caching and its effect on ITI-42."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.xds_registry.registry_helpers import conform_codes, fed_patient, load_submission
from xds_core.affinity_domain import AffinityDomainConfigError, load_affinity_domain, parse_affinity_domain
from xds_core.errors import ErrorCode, XdsError
from xds_core.vocabulary import ClassificationScheme
from xds_registry import models as m
from xds_registry.register_document_set import register_document_set

SMALL = b"""<?xml version="1.0"?>
<Codes>
  <!-- a comment -->
  <CodeType name="classCode" classScheme="urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a">
    <Code code="REPORTS" display="Reports" codingScheme="1.3.6.1.4.1.19376.1.2.6.1"/>
  </CodeType>
  <CodeType name="folderCodeList" classScheme="urn:uuid:1ba97051-7806-41a8-a48b-8fce7af683c5"></CodeType>
  <CodeType name="mimeType"><Code code="text/plain" ext="txt"/></CodeType>
  <AssigningAuthority id="&amp;1.3.6.1.4.1.21367.2005.13.20.1000&amp;ISO"/>
</Codes>"""


@pytest.fixture(scope="module")
def connectathon(corpus_dir: Path):
    return load_affinity_domain(corpus_dir / "affinity-domain" / "codes.xml")


def test_not_configured_means_none():
    assert load_affinity_domain("") is None
    assert load_affinity_domain(None) is None


def test_class_schemes_and_deprecated_entries_are_kept_for_other_readers():
    domain = parse_affinity_domain(SMALL.replace(b'display="Reports"', b'display="Reports" deprecated="yes"'))
    assert domain.class_schemes == {"classCode": "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
                                    "folderCodeList": "urn:uuid:1ba97051-7806-41a8-a48b-8fce7af683c5"}
    (entry,) = domain.value_sets["classCode"]
    assert entry.deprecated and str(entry) == "REPORTS^^1.3.6.1.4.1.19376.1.2.6.1"
    assert domain.accepts_code("classCode", "REPORTS", "1.3.6.1.4.1.19376.1.2.6.1")  # deprecated still accepted


def test_connectathon_file_is_parsed(connectathon):
    assert connectathon.accepts_code("classCode", "REPORTS", "1.3.6.1.4.1.19376.1.2.6.1")
    assert not connectathon.accepts_code("classCode", "REPORTS", "9.9.9")
    assert connectathon.accepts_code("mimeType", "text/plain")
    assert "1.3.6.1.4.1.21367.2005.13.20.1000" in connectathon.assigning_authorities
    assert connectathon.constrains("folderCodeList")
    assert not connectathon.constrains("noSuchAttribute")


def test_file_is_cached_until_it_changes(tmp_path: Path):
    path = tmp_path / "codes.xml"
    path.write_bytes(SMALL)
    first = load_affinity_domain(path)
    assert load_affinity_domain(path) is first
    path.write_bytes(SMALL.replace(b"REPORTS", b"IMAGES"))
    os.utime(path, (1, 1))
    second = load_affinity_domain(path)
    assert second is not first and second.accepts_code("classCode", "IMAGES", "1.3.6.1.4.1.19376.1.2.6.1")


@pytest.mark.parametrize("data,message", [
    (b"<Codes><CodeType/></Codes>", "CodeType without a name"),
    (b"<Other/>", "root element must be <Codes>"),
    (b"<Codes>", "not well-formed"),
])
def test_malformed_files_are_reported(data: bytes, message: str):
    with pytest.raises(AffinityDomainConfigError, match=message):
        parse_affinity_domain(data)


def test_missing_file_is_reported(tmp_path: Path):
    with pytest.raises(AffinityDomainConfigError, match="XDS_AFFINITY_DOMAIN_CODES"):
        load_affinity_domain(tmp_path / "nope.xml")


@pytest.mark.django_db
def test_nist_sample_registers_under_the_connectathon_domain(connectathon):
    sub, _ = load_submission("single_doc.xml", fed_patient())
    conform_codes(sub, connectathon)
    result = register_document_set(sub, affinity_domain=connectathon)
    assert result.document_count == 1 and result.warnings == []
    stored = m.DocumentEntry.objects.get(entry_uuid=result.entry_uuids["Document01"])
    code, _, scheme = stored.class_code.partition("^^")
    assert connectathon.accepts_code("classCode", code, scheme)


def test_empty_code_type_leaves_the_attribute_unconstrained():
    domain = parse_affinity_domain(SMALL)
    assert not domain.constrains("folderCodeList")
    assert domain.accepts_code("folderCodeList", "anything", "1.2.3")
    assert domain.accepts_code("typeCode", "anything", "1.2.3")  # no CodeType at all
    assert not domain.accepts_code("classCode", "IMAGES", "1.3.6.1.4.1.19376.1.2.6.1")


@pytest.mark.django_db
def test_code_outside_the_value_set_is_a_metadata_error(connectathon):
    sub, _ = load_submission("single_doc.xml", fed_patient())
    code = sub.document_entries[0].classifications_of(ClassificationScheme.DocumentEntry_classCode)[0]
    conform_codes(sub, connectathon)
    code.node_representation = "NOT-A-CLASS"
    sub.document_entries[0].mime_type = "text/x-unknown"
    with pytest.raises(XdsError) as exc:
        register_document_set(sub, affinity_domain=connectathon)
    contexts = [(e.error_code, e.location, e.code_context) for e in exc.value.errors]
    assert any(c == ErrorCode.XDSRegistryMetadataError and loc == "Document01" and "NOT-A-CLASS" in ctx
               for c, loc, ctx in contexts)
    assert any("text/x-unknown" in ctx for _, _, ctx in contexts)


@pytest.mark.django_db
def test_same_code_is_accepted_without_configuration():
    sub, _ = load_submission("single_doc.xml", fed_patient())
    code = sub.document_entries[0].classifications_of(ClassificationScheme.DocumentEntry_classCode)[0]
    code.node_representation = "NOT-A-CLASS"
    result = register_document_set(sub, affinity_domain=None)
    stored = m.DocumentEntry.objects.get(entry_uuid=result.entry_uuids["Document01"])
    assert stored.class_code.startswith("NOT-A-CLASS^^")


@pytest.mark.django_db
def test_patient_of_another_assigning_authority_is_refused(connectathon):
    pid = fed_patient(authority="1.2.3.4.5")
    sub, _ = load_submission("single_doc.xml", pid)
    conform_codes(sub, connectathon)
    with pytest.raises(XdsError) as exc:
        register_document_set(sub, affinity_domain=connectathon)
    assert {e.error_code for e in exc.value.errors} == {ErrorCode.XDSUnknownPatientId}
