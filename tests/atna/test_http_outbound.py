"""Outbound HTTP presents this node's certificate (ITI-19): the repository's ITI-42 to a remote registry over
HTTPS, both real gunicorn processes with XDS_TLS on, each with its own node certificate and identity table.

The registry knows the repository only by its node certificate's fingerprint; its audit record of the ITI-42
names that identity, which it can only have learnt from the certificate the repository presented.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.atna.https_peers import Pki, audit_events, build_pki, identity_rows
from tests.xds_repository.conftest import Doc, provide_and_register_parts
from tests.xds_repository.servers import Server, start_server
from xds_core.ebxml.responses import parse_registry_response
from xds_core.soap.client import SoapClient
from xds_core.vocabulary import Action, ResponseStatus

REPOSITORY_ID = "1.3.6.1.4.1.21367.13.70.201"


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


@pytest.mark.slow
def test_the_repository_registers_over_https_with_its_node_certificate(tmp_path: Path,
                                                                       servers: list[Server]) -> None:
    (tmp_path / "pki").mkdir()
    domain: Pki = build_pki(tmp_path / "pki", nodes=("registry", "repository"), clients=("source",))
    patient = f"P{uuid.uuid4().hex[:10]}^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
    registry_audit = tmp_path / "registry-audit.jsonl"
    registry_rows = identity_rows({"repository-node": (domain.peer("repository").sha256, "source"),
                                   "source-a": (domain.peer("source").sha256, "source")})
    registry = start_server(
        tmp_path / "registry", session=domain.session("source"), audit_file=registry_audit,
        setup=registry_rows + "\nfrom xds_registry.patient_identity_feed.patients import add_or_update_patient"
                              f"\nadd_or_update_patient({patient!r})",
        **domain.node_settings("registry"))
    servers.append(registry)
    repository = start_server(
        tmp_path / "repository", session=domain.session("source"),
        setup=identity_rows({"source-a": (domain.peer("source").sha256, "source")}),
        XDS_REGISTRY_URL=registry.url + "/xds/registry", XDS_REPOSITORY_UNIQUE_ID=REPOSITORY_ID,
        **domain.node_settings("repository"))
    servers.append(repository)
    assert registry.url.startswith("https://") and repository.url.startswith("https://")

    body, parts, _ = provide_and_register_parts([Doc(content=b"over TLS " * 1000)], patient_id=patient)
    result = SoapClient(repository.url + "/xds/repository", session=domain.session("source"), timeout=60).call(
        Action.ProvideAndRegisterDocumentSet, body, parts=parts, mtom=True)
    assert result.fault is None, result.fault
    assert parse_registry_response(result.body) == (ResponseStatus.SUCCESS, [])

    deadline = time.monotonic() + 10
    while not (found := [e for e in audit_events(registry_audit) if e["transaction"] == "ITI-42"]):
        assert time.monotonic() < deadline, audit_events(registry_audit)
        time.sleep(0.1)
    requestor = next(p for p in found[0]["participants"] if p["is_requestor"])
    assert requestor["user_name"] == "repository-node"
    assert requestor["alternative_user_id"] == domain.peer("repository").subject

    # Plain HTTP to the registry's TLS port completes nothing.
    with pytest.raises(requests.ConnectionError):
        requests.get(registry.url.replace("https://", "http://") + "/xds/registry", timeout=10)
