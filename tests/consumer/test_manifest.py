"""ITI-43 of a manifest from this process's repository: checked against the registry's hash and size."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from consumer.directory import UnknownEndpoint, resolve
from consumer.find import FindQuery, FoundManifest, find_manifests
from consumer.manifest import ManifestError, fetch_manifest
from consumer.models import Endpoint, EndpointKind
from tests.consumer.conftest import KOS_FORMAT, NIST_STUDY, Domain
from xds_core import audit
from xds_core.vocabulary import KOS_SOP_CLASS_UID


def found_one(domain: Domain, patient: str) -> FoundManifest:
    (found,) = find_manifests("", FindQuery(patient_id=patient, format_codes=(KOS_FORMAT,))).manifests
    return found


def in_process(domain: Domain):  # type: ignore[no-untyped-def]
    """This server's repository, the way xds_fetch reaches it when the registry is its own."""
    def resolve_repository(unique_id: str) -> str:
        return domain.repository_url if unique_id == domain.repository_id else resolve(
            EndpointKind.REPOSITORY, unique_id)
    return resolve_repository


def test_manifest_is_retrieved_checked_and_read(domain: Domain) -> None:
    patient = domain.patient()
    published = domain.publish(patient, study_uid=NIST_STUDY)
    found = found_one(domain, patient)
    with audit.capture() as events:
        retrieved = fetch_manifest(found, resolve_repository=in_process(domain))
    manifest = retrieved.manifest
    assert manifest.sop_class_uid == KOS_SOP_CLASS_UID and manifest.sop_instance_uid == published.unique_id
    assert [s.study_instance_uid for s in manifest.studies] == [NIST_STUDY]
    assert manifest.instance_count == 36  # the NIST IDS-DEPT002-a study
    assert found.hash == hashlib.sha1(published.content).hexdigest()
    iti43 = [e for e in events if e.transaction == audit.Transaction.ITI_43]
    assert any(o.object_id == published.unique_id for e in iti43 for o in e.objects)
    assert all(e.outcome == audit.EventOutcome.SUCCESS for e in iti43)


def test_hash_mismatch_is_refused(domain: Domain) -> None:
    patient = domain.patient()
    domain.publish(patient)
    found = found_one(domain, patient)
    wrong = dataclasses.replace(found, hash="0" * 40)  # a registry whose entry does not match the bytes
    with pytest.raises(ManifestError, match="SHA-1 .* is not the registry's hash 0{40}; refused"):
        fetch_manifest(wrong, resolve_repository=in_process(domain))


def test_size_mismatch_is_refused(domain: Domain) -> None:
    patient = domain.patient()
    domain.publish(patient)
    found = found_one(domain, patient)
    with pytest.raises(ManifestError, match="the registry says size 1; refused"):
        fetch_manifest(dataclasses.replace(found, size=1), resolve_repository=in_process(domain))


def test_unknown_document_is_an_error_naming_it(domain: Domain) -> None:
    patient = domain.patient()
    domain.publish(patient)
    found = dataclasses.replace(found_one(domain, patient), unique_id="1.2.3.999")
    with pytest.raises(ManifestError, match=r"document 1\.2\.3\.999 .*XDS"):
        fetch_manifest(found, resolve_repository=in_process(domain))


def test_unknown_repository_id_is_an_error_naming_it(domain: Domain) -> None:
    patient = domain.patient()
    domain.publish(patient)
    found = dataclasses.replace(found_one(domain, patient), repository_unique_id="1.3.6.1.4.1.99999.1")
    Endpoint.objects.create(kind=EndpointKind.IMAGING_SOURCE, unique_id="1.3.6.1.4.1.99999.1",
                            url="http://127.0.0.1:9/ids")  # same id, other kind: not a repository
    with pytest.raises(UnknownEndpoint, match=r"'1\.3\.6\.1\.4\.1\.99999\.1'") as caught:
        fetch_manifest(found, resolve_repository=in_process(domain))
    assert caught.value.kind == EndpointKind.REPOSITORY
    assert "Document Repository" in str(caught.value)
